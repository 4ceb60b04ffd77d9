"""Run from a checkout, the same as the installed `dwdet-convert-mmdet` (see dwdet/cli/convert_mmdet.py)."""
import sys

from dwdet.cli.convert_mmdet import main

if __name__ == "__main__":
    sys.exit(main())

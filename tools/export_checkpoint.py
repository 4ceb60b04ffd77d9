"""Run from a checkout, the same as the installed `dwdet-export` (see dwdet/cli/export.py for the options)."""
import sys

from dwdet.cli.export import main

if __name__ == "__main__":
    sys.exit(main())

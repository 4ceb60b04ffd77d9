"""Run from a checkout, the same as the installed `dwdet-infer` (see dwdet/cli/infer.py for the options)."""
import sys

from dwdet.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())

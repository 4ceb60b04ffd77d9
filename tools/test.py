"""Run from a checkout, the same as the installed `dwdet-test` (see dwdet/cli/test.py for the options)."""
import sys

from dwdet.cli.test import main

if __name__ == "__main__":
    sys.exit(main())

"""Run from a checkout, the same as the installed `dwdet-train` (see dwdet/cli/train.py for the options)."""
import sys

from dwdet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

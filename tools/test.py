"""Run from a checkout, the same as the installed `dwdet-test` (see dwdet/cli/test.py for the options)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

from dwdet.cli.test import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

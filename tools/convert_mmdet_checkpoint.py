"""Run from a checkout, the same as the installed `dwdet-convert-mmdet` (see dwdet/cli/convert_mmdet.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

from dwdet.cli.convert_mmdet import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

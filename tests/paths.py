"""The repository's root, for the tests that read its files or run its scripts, wherever they sit in tests/."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

"""What the commands share: config arguments, overrides and ``--print-config``."""
from __future__ import annotations

import argparse
import warnings

from dwdet.config import Config, format_config

__all__ = ["add_config_arguments", "add_override_arguments", "add_print_config", "config_overrides", "print_config"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``config``, ``--opts key=value ...`` overrides and ``--print-config``."""
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    add_override_arguments(parser)
    add_print_config(parser)


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """``--opts key=value ...``, and the deprecated positional spelling (:func:`config_overrides`
    joins them); parse with ``parse_intermixed_args``, so that options may follow the positional ones."""
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value",
                        help="config overrides, e.g. --opts train.lr=0.02 model.refine=True")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="deprecated: the same overrides without --opts")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides of the command line: those after ``--opts``, after the deprecated positional ones."""
    if args.overrides:
        warnings.warn(f"config overrides without --opts ({' '.join(args.overrides)}) are deprecated: write them "
                      f"after --opts, e.g. --opts {' '.join(args.overrides)}", FutureWarning, stacklevel=2)
    return list(args.overrides) + list(args.opts)


def add_print_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, bases and overrides) as JSON and exit")


def print_config(cfg: Config) -> int:
    print(format_config(cfg), flush=True)
    return 0

"""What the commands share: config arguments and ``--print-config``."""
from __future__ import annotations

import argparse

from dwdet.config import Config, format_config

__all__ = ["add_config_arguments", "add_print_config", "print_config"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``config``, ``key=value`` overrides (positional and after ``--opts``) and ``--print-config``."""
    parser.add_argument("config", help="config file (.py, or a run's config.json)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="config overrides, e.g. train.lr=0.02")
    parser.add_argument("--opts", nargs="+", default=[], metavar="key=value", help="more config overrides")
    add_print_config(parser)


def add_print_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, bases and overrides) as JSON and exit")


def print_config(cfg: Config) -> int:
    print(format_config(cfg), flush=True)
    return 0

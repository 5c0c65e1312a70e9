"""What several subcommands parse alike: the settings file and its default path."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_CONFIG = Path("config/config.yaml")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c/--config PATH``, the YAML settings (default ``config/config.yaml``)."""
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML settings")

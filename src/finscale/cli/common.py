"""Shared CLI helpers: study arguments, table printing, resolving shipped studies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from finscale.config import StudyConfig, load_study, resolve_study_path, shipped_studies  # noqa: F401

# Piped output (tests, logs, CI) gets a wide console so tables are not cut to 80 columns.
console = Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def add_study_args(parser: argparse.ArgumentParser) -> None:
    """STUDY positional (optional) and repeated ``--set section.key=value``."""
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY.toml",
                        help="study file, or the name of a shipped study (default, smoke, "
                             "phase6a); default: the bundled default study")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a study value, e.g. --set train.lr=1e-3")


def load_study_from_args(args: argparse.Namespace) -> StudyConfig:
    return load_study(resolve_study_path(args.study), args.overrides)


def print_table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    console.print(table)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)

"""Shared CLI helpers: study arguments, tables (or their JSON), resolving shipped studies."""

from __future__ import annotations

import argparse
import json
import math
import numbers
import re
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from finscale.config import StudyConfig, load_study, resolve_study_path, shipped_studies  # noqa: F401
from finscale.formatting import cell

# Piped output (tests, logs, CI) gets a wide console so tables are not cut to 80 columns.
# markup=False: text is printed as given ("[hpo 1/4]" is not rich markup).
console = Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)

STUDY_HELP = "study file, or the name of a shipped study (default, smoke, phase6a); default: default"
READ_STUDY_HELP = ("study file, shipped study name (default, smoke, ...) or a study's run directory "
                   "(runs/<study>); default: default")


def add_study_args(parser: argparse.ArgumentParser, *, deprecated_flag: bool = False,
                   reads_runs: bool = False) -> None:
    """STUDY positional (optional) and repeated ``--set KEY=VALUE``.

    ``deprecated_flag``: also accept the old ``--study STUDY`` (hidden from help; warns).
    """
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY",
                        help=READ_STUDY_HELP if reads_runs else STUDY_HELP)
    if deprecated_flag:
        parser.add_argument("--study", dest="study_flag", default=None, metavar="STUDY",
                            help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study value, e.g. --set train.lr=1e-3 (repeatable)")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the tables as one JSON object (machine-readable) instead")


def study_arg(args: argparse.Namespace) -> str | None:
    """The positional STUDY, or the deprecated ``--study`` flag (with a warning)."""
    flag = getattr(args, "study_flag", None)
    if flag is None:
        return args.study
    if args.study is not None and args.study != flag:
        raise ValueError(f"study given twice: {args.study!r} and --study {flag!r}; give it once, "
                         "as the positional STUDY")
    print("warning: --study is deprecated; give the study positionally (finscale doctor STUDY)",
          file=sys.stderr)
    return flag


def load_study_from_args(args: argparse.Namespace) -> StudyConfig:
    return load_study(resolve_study_path(study_arg(args)), args.overrides)


def open_study_from_args(args: argparse.Namespace) -> StudyConfig:
    """For commands that read a study's runs (status, report): STUDY may also be its run
    directory (runs/<study>); a study that never ran is a one-line error naming the path."""
    from finscale.config.studydir import open_study

    return open_study(study_arg(args), args.overrides)


def data_dir_arg(args: argparse.Namespace) -> str | None:
    """The global ``--data-dir`` (None when not given)."""
    return getattr(args, "data_dir", None)


# --------------------------------------------------------------------------- output

def print_table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    console.print(table)


def fmt(value: Any) -> str:
    """One cell: :func:`finscale.formatting.cell` (the report's rule too); dicts and lists
    as JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return cell(value)


def column_key(header: str) -> str:
    """A table header as a JSON key: "val log-loss" -> "val_log_loss"."""
    return re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as null, paths/dates as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else None
    if hasattr(value, "item") and callable(value.item):  # numpy bool_ and 0-d arrays
        return jsonable(value.item())
    return str(value)


class Output:
    """What a command shows: tables and lines for people, or with ``--json`` one JSON object
    ``{key: value, table_key: [{column_key: value, ...}, ...]}`` printed by :meth:`done`.

    Rows hold raw values (numbers, not formatted strings): the table formats them with
    :func:`fmt`, the JSON keeps them exact.
    """

    def __init__(self, as_json: bool = False):
        self.as_json = as_json
        self.doc: dict[str, Any] = {}

    def table(self, key: str, title: str | None, columns: list[str], rows: Iterable[Iterable[Any]],
              keys: list[str] | None = None) -> None:
        rows = [list(r) for r in rows]
        if self.as_json:
            names = keys or [column_key(c) for c in columns]
            self.doc[key] = [dict(zip(names, r)) for r in rows]
        else:
            print_table(title, columns, rows)

    def line(self, text: str, **values: Any) -> None:
        """A sentence for people; ``values`` are what it says, kept in the JSON."""
        self.doc.update(values)
        if not self.as_json:
            console.print(text)

    def value(self, **values: Any) -> None:
        self.doc.update(values)

    def done(self, code: int = 0) -> int:
        if self.as_json:
            print(json.dumps(jsonable(self.doc), indent=2))
        return code

"""The `finscale` command: argument parsing and printing only; the work lives in modules.

Each command group is a module in this package exposing ``register(subparsers)``; a
handler returns the process exit code. User mistakes (``ValueError`` and subclasses)
and environment failures (``OSError``: full disk, read-only or missing paths, each naming
its path) become ``error: <message>`` on stderr and exit code 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from finscale import __version__

# Command-group modules, in the order `finscale --help` lists them.
COMMAND_MODULES = (
    "run", "status", "config", "data", "features", "splits", "model", "train", "hpo",
    "evaluate", "report", "export", "monitor", "doctor",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that command: importing every command
    module pulls in torch, pandas and scikit-learn, seconds that a single command needn't pay."""
    parser = argparse.ArgumentParser(
        prog="finscale",
        description="Reproducible scaling-law studies of PatchTST on daily financial data. "
                    "A study is a TOML file; without one, the bundled default study is used.",
    )
    parser.add_argument("--version", action="version", version=f"finscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"finscale.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"finscale.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Top-level options are flags without values, so the first bare word is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError) as exc:  # user mistakes; disk full, permissions, missing files
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

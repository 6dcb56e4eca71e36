"""The `finscale` command: argument parsing and printing only; the work lives in modules.

Each command group is a module in this package exposing ``register(subparsers)``; a
handler returns the process exit code. User mistakes (``ValueError`` and subclasses)
and environment failures (``OSError``: full disk, read-only or missing paths, each naming
its path) become ``error: <message>`` on stderr and exit code 1; ``--debug`` shows the traceback.

Conventions (those of git and pip): the global options ``-v/--verbose``, ``--debug`` and
``--data-dir DIR`` are accepted before or after the (sub)command; a study is the
positional ``STUDY`` everywhere; ``--set KEY=VALUE`` always overrides a study value;
``--json`` prints what a table shows as JSON. ``finscale --help`` and ``--version`` import
no command module (so neither pandas nor torch): only the command that runs is imported.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from finscale.cli.commands import COMMANDS
from finscale.stopping import quiet_thread_failures

VALUE_OPTIONS = ("--data-dir",)   # global options that take a value (for finding the command)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose every (sub)command parser accepts the global options.

    Subcommand parsers are built with ``type(parent)``, so nested ones get them too; there
    the defaults are suppressed, so a flag given before the command is not reset after it.
    """

    def __init__(self, *args, top: bool = False, **kwargs):
        # No prefix matching: with global --debug/--data-dir on every parser, a command's own
        # short option such as `scaling fit --d COL` would otherwise be "ambiguous".
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        unset = None if top else argparse.SUPPRESS
        group = self.add_argument_group("global options (before or after the command)")
        group.add_argument("-v", "--verbose", action="store_true", default=False if top else unset,
                           help="show info logs")
        group.add_argument("--debug", action="store_true", default=False if top else unset,
                           help="show tracebacks and debug logs")
        group.add_argument("--data-dir", metavar="DIR", default=unset,
                           help="data directory (default: the study's data.data_dir, "
                                "$FINSCALE_DATA, or ./data)")


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked (importlib.metadata
    costs a tenth of a second that ``--help`` needn't pay)."""

    def __call__(self, parser, namespace, values, option_string=None):
        import finscale

        print(f"finscale {finscale.__version__}")  # stdout, as argparse's own version action
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command's full parser, or (``only``) with only that one's.

    Commands not built in full are listed by name and one-line help (``COMMANDS``): importing
    every command module pulls in torch, pandas and scikit-learn, seconds that ``--help``
    and a single command needn't pay.
    """
    parser = Parser(
        prog="finscale", top=True,
        description="Reproducible scaling-law studies of PatchTST on daily financial data. "
                    "A study is a TOML file or a shipped study's name; without one, the bundled "
                    "default study is used. Every command has its own --help.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if only is None or name != only:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(f"finscale.cli.{name}").register(sub)
    return parser


def find_command(argv: list[str]) -> str | None:
    """The first bare word of ``argv`` that is not the value of a global option."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so log lines go above a live progress bar
    (rich redirects stderr while one is shown) instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = find_command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)  # --help/--version exit here, before numpy or torch loads
    from finscale.repro import apply_thread_env

    apply_thread_env()  # before any command imports torch (OpenMP reads it at load)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if not args.debug:
        quiet_thread_failures()
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
    except BrokenPipeError:  # `finscale ... | head` stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

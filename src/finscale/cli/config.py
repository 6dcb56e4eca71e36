"""`finscale config show|keys`: the fully resolved study config and its hash; every key."""

from __future__ import annotations

import json

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, add_study_args, console, load_study_from_args
from finscale.config import StudyConfig, config_hash, config_to_dict, describe_fields


def register(sub) -> None:
    p = sub.add_parser("config", help=COMMANDS["config"],
                       description="Inspect study configuration (defaults < file < --set).")
    csub = p.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    show = csub.add_parser("show", help="print the resolved config as JSON with its sha256 hash",
                           description="Print the resolved config (defaults < file < --set) as "
                                       "JSON, then its sha256 hash; with --json one object "
                                       "{config, hash}.")
    add_study_args(show)
    show.add_argument("--hash-only", action="store_true", help="print only the config hash")
    add_json_arg(show)
    show.set_defaults(handler=_show)
    keys = csub.add_parser("keys", help="list every key with its type, default and meaning")
    add_json_arg(keys)
    keys.set_defaults(handler=_keys)


def _show(args) -> int:
    cfg = load_study_from_args(args)
    digest = config_hash(cfg)
    if args.json:
        out = Output(True)
        out.value(config=config_to_dict(cfg), hash=digest)
        return out.done()
    if args.hash_only:
        console.print(digest)
        return 0
    console.print(json.dumps(config_to_dict(cfg), indent=2, sort_keys=False))
    console.print(f"config hash: {digest}")
    return 0


def _keys(args) -> int:
    out = Output(args.json)
    out.table("keys", "study keys", ["key", "type", "default", "meaning"], describe_fields(StudyConfig))
    return out.done()

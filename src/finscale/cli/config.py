"""`finscale config show`: the fully resolved study config and its hash."""

from __future__ import annotations

import json

from finscale.cli.common import add_study_args, console, load_study_from_args, print_table
from finscale.config import StudyConfig, config_hash, config_to_dict, describe_fields


def register(sub) -> None:
    p = sub.add_parser("config", help="show the resolved study config",
                       description="Inspect study configuration (defaults < file < --set).")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the resolved config as JSON with its sha256 hash")
    add_study_args(show)
    show.add_argument("--hash-only", action="store_true", help="print only the config hash")
    show.set_defaults(handler=_show)
    keys = csub.add_parser("keys", help="list every key with its type, default and meaning")
    keys.set_defaults(handler=_keys)


def _show(args) -> int:
    cfg = load_study_from_args(args)
    digest = config_hash(cfg)
    if args.hash_only:
        console.print(digest)
        return 0
    console.print(json.dumps(config_to_dict(cfg), indent=2, sort_keys=False))
    console.print(f"config hash: {digest}")
    return 0


def _keys(args) -> int:
    rows = describe_fields(StudyConfig)
    print_table("study keys", ["key", "type", "default", "meaning"], rows)
    return 0

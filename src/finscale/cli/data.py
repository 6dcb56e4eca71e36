"""`finscale data fetch|verify|list`: the versioned raw data store."""

from __future__ import annotations

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, console, data_dir_arg
from finscale.config import DataConfig
from finscale.data import Manifest, fetch_dataset, resolve_data_dir, verify
from finscale.formatting import count


def register(sub) -> None:
    p = sub.add_parser("data", help=COMMANDS["data"],
                       description="Versioned OHLCV store under DATA_DIR (--data-dir, "
                                   "$FINSCALE_DATA, default ./data) with a sha256 manifest.")
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    fetch = dsub.add_parser("fetch", help="download/read, validate and store a dataset",
                            description="SOURCE is sample:sp500, sample:nasdaq (bundled, offline), "
                                        "yfinance:TICKER (live), file:PATH (CSV/Parquet with "
                                        "Date/Open/High/Low/Close/Volume columns) or "
                                        "'synthetic:null|planted?key=value&...' (a seeded market "
                                        "with a known answer; quote it in the shell).")
    fetch.add_argument("source", metavar="SOURCE",
                       help="sample:sp500, sample:nasdaq, yfinance:TICKER, file:PATH or synthetic:...")
    fetch.add_argument("--name", default="", metavar="NAME", help="dataset name (default: from the source)")
    fetch.add_argument("--adjusted", action="store_true",
                       help="file sources: scale Open/High/Low/Close by 'Adj Close'/Close")
    fetch.add_argument("--min-rows", type=int, default=DataConfig().min_rows, metavar="N",
                       help="fewer validated rows is an error (default: %(default)s, as data.min_rows)")
    fetch.add_argument("--start", default="", metavar="DATE", help="first date kept (as data.start)")
    fetch.add_argument("--end", default="", metavar="DATE",
                       help="last date kept (as data.end; a yfinance refetch asks for the same bars)")
    fetch.add_argument("--sha256", default="", metavar="HASH",
                       help="refuse data whose content hash differs (as data.sha256)")
    fetch.set_defaults(handler=_fetch)
    ver = dsub.add_parser("verify", help="re-hash every stored dataset; exit 1 if any changed")
    add_json_arg(ver)
    ver.set_defaults(handler=_verify)
    lst = dsub.add_parser("list", help="table of stored datasets")
    add_json_arg(lst)
    lst.set_defaults(handler=_list)


def _fetch(args) -> int:
    if args.min_rows < 1:  # as data.min_rows: at least one row
        raise ValueError(f"--min-rows {args.min_rows}: expected an integer >= 1")
    data_dir = resolve_data_dir(data_dir_arg(args))
    e = fetch_dataset(args.source, data_dir, name=args.name, adjusted=args.adjusted,
                      min_rows=args.min_rows, start=args.start, end=args.end, sha256=args.sha256)
    console.print(f"stored {data_dir / e['path']}: {count(e['rows'])} rows {e['first_date']}..{e['last_date']} "
                  f"from {e['source']}, sha256 {e['sha256'][:16]}")
    console.print(f"content sha256 {e['content_sha256']} (pin it: data.sha256 = \"{e['content_sha256']}\")")
    return 0


def _verify(args) -> int:
    data_dir = resolve_data_dir(data_dir_arg(args))
    out = Output(args.json)
    out.value(data_dir=str(data_dir))
    rows = verify(data_dir)
    if rows or args.json:
        out.table("datasets", f"verify {data_dir}", ["path", "status", "rows", "sha256"],
                  [[r["path"], r["status"], r["rows"], r["sha256"][:16]] for r in rows])
    else:
        out.line(f"no datasets in {data_dir}")
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        out.line(f"FAILED: {data_dir / r['path']} is {r['status']}")
    return out.done(1 if bad else 0)


def _list(args) -> int:
    data_dir = resolve_data_dir(data_dir_arg(args))
    latest = Manifest(data_dir).latest_by_path()
    out = Output(args.json)
    out.value(data_dir=str(data_dir))
    out.table("datasets", f"datasets in {data_dir}",
              ["path", "rows", "first", "last", "source", "created", "sha256"],
              [[e["path"], e["rows"], e["first_date"], e["last_date"], e.get("source", e.get("kind")),
                e["created_at"], e["sha256"] if args.json else e["sha256"][:12]]
               for e in latest.values()])
    return out.done()

"""`finscale predict`: score data with a finished run, from its directory alone."""

from __future__ import annotations

from pathlib import Path

from finscale.cli.commands import COMMANDS
from finscale.cli.common import console


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help=COMMANDS["predict"],
        description="Load RUN_DIR/ckpt/best.pt (weights, feature columns, normaliser statistics, "
                    "label rule) and score every window of SOURCE: features, normalisation and "
                    "windows are rebuilt from the checkpoint, not from a study file. Scoring the "
                    "run's own data over its test dates reproduces its stored test predictions "
                    "exactly. Data too short for the features' warm-up plus one window, or whose "
                    "columns differ from the checkpoint's, is refused.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained run directory (runs/<study>/final/<id>)")
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="sample:sp500, sample:nasdaq, file:PATH (CSV/Parquet), yfinance:TICKER or synthetic:...")
    p.add_argument("--out", default=None, metavar="FILE.parquet",
                   help="write the predictions (date, run_id, horizon, prob, label, end) here; default: print the last rows")
    p.add_argument("--asset", default=None, metavar="NAME",
                   help="for a run trained on a panel: which of its assets SOURCE holds (its "
                        "normaliser statistics); the error lists the run's assets")
    p.add_argument("--start", default=None, metavar="DATE", help="first window end date to score (ISO)")
    p.add_argument("--end", default=None, metavar="DATE", help="last window end date to score (ISO)")
    p.set_defaults(handler=_predict)


def _predict(args) -> int:
    from finscale.atomic import atomic_write_parquet
    from finscale.trained_run import load_run

    if args.out and not args.out.endswith(".parquet"):
        raise ValueError(f"--out {args.out}: expected a .parquet file name")
    run = load_run(args.run_dir)
    frame = run.predict_source(args.data, start=args.start, end=args.end, asset=args.asset)
    if args.out:
        atomic_write_parquet(frame, Path(args.out))
        console.print(f"{len(frame)} predictions written to {args.out}")
    else:
        console.print(frame.tail(10).to_string(index=False))
    return 0

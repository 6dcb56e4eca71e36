"""`finscale splits show`: window counts, dates and base rates per region, every horizon."""

from __future__ import annotations

import sys

import numpy as np

from finscale.cli.commands import COMMANDS
from finscale.cli.common import Output, add_json_arg, add_study_args, data_dir_arg, load_study_from_args
from finscale.formatting import count
from finscale.splits import Split, final_split, split_report, tuning_splits

SCHEMES = ("contiguous", "scattered", "walk_forward")


def register(sub) -> None:
    p = sub.add_parser("splits", help=COMMANDS["splits"],
                       description="Leak-free splits of the study's processed data: every window "
                                   "(context + label period) lies inside one region.")
    ssub = p.add_subparsers(dest="splits_command", metavar="COMMAND", required=True)
    show = ssub.add_parser("show", help="windows, first/last date and base rate per region",
                           description="For every horizon of the study: the contiguous final "
                                       "split (train/val/test) and the tuning splits (scattered, "
                                       "walk-forward folds; never the test period).")
    add_study_args(show)
    show.add_argument("--scheme", choices=(*SCHEMES, "all"), default="all",
                      help="which scheme to show (default: all)")
    add_json_arg(show)
    show.set_defaults(handler=_show)


def _load_frame(cfg, data_dir_flag):
    """The study's processed frame, fetching raw data / building features when missing."""
    from finscale.rundata import prepare

    if not isinstance(cfg.data.source, str):
        raise ValueError("data.source: `finscale splits show` shows one series; a panel's split "
                         "report is in every run's splits.json and the report")
    return prepare(cfg, data_dir_flag).frame


def _splits_for(scheme: str, dates, label_ok, cfg, horizon: int) -> list[Split]:
    from finscale.rundata import window_context

    L = window_context(cfg)  # the windows every design of the study shares
    if scheme == "contiguous":
        return [final_split(dates, label_ok, cfg.splits, L, horizon)]
    from finscale.features import set_lookback

    return tuning_splits(dates, label_ok, cfg.splits, L, horizon, scheme,
                         set_lookback(cfg.features.set))


def _show(args) -> int:
    from finscale.labels import make_labels

    cfg = load_study_from_args(args)
    frame = _load_frame(cfg, data_dir_arg(args))
    dates = frame["Date"].to_numpy()
    schemes = SCHEMES if args.scheme == "all" else (args.scheme,)
    rows, errors = [], []
    for horizon in cfg.target.horizons:
        labels = make_labels(frame, cfg.target, horizon)
        for scheme in schemes:
            try:
                splits = _splits_for(scheme, dates, np.isfinite(labels), cfg, horizon)
            except ValueError as exc:  # one failing scheme should not hide the others
                errors.append(f"h{horizon} {scheme}: {exc}")
                continue
            for split in splits:
                rows += [[horizon, r["split"], r["region"], r["windows"], r["first_date"],
                          r["last_date"], r["base_rate"]] for r in split_report(split, dates, labels)]
    from finscale.rundata import window_context

    out = Output(args.json)
    out.value(study=cfg.name, context_len=window_context(cfg), embargo_days=cfg.splits.embargo_days,
              rows=len(frame), first_date=str(dates[0])[:10], last_date=str(dates[-1])[:10])
    if rows or args.json:
        out.table("regions", f"splits of study {cfg.name!r} (context_len {window_context(cfg)}, "
                  f"embargo_days {cfg.splits.embargo_days}, {count(len(frame))} rows "
                  f"{str(dates[0])[:10]}..{str(dates[-1])[:10]})",
                  ["horizon", "split", "region", "windows", "first", "last", "base rate"], rows)
    out.value(errors=errors)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return out.done(1 if errors else 0)

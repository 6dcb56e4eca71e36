"""`finscale features build|list|describe`: processed datasets and the feature registry.

``--feature-set SET`` names the feature set (default: the study's ``features.set``);
``--set KEY=VALUE`` overrides a study value, as in every other command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from finscale.cli.commands import COMMANDS
from finscale.cli.common import (
    STUDY_HELP,
    Output,
    add_json_arg,
    data_dir_arg,
    print_table,
    resolve_study_path,
    shipped_studies,
)
from finscale.config import StudyConfig, load_study
from finscale.data import Manifest, dataset_entry, ensure_dataset, parse_source, resolve_data_dir
from finscale.features import (
    FEATURE_SETS,
    FEATURES,
    build_processed,
    feature_names,
    load_processed,
    processed_path,
    set_lookback,
)
from finscale.labels import make_labels


def register(subparsers) -> None:
    parser = subparsers.add_parser("features", help=COMMANDS["features"])
    sub = parser.add_subparsers(dest="features_command", metavar="COMMAND", required=True)

    build = sub.add_parser("build", help="compute a feature set and store DATA_DIR/processed/NAME.SET.parquet")
    _add_dataset_args(build)
    build.set_defaults(handler=cmd_build)

    lst = sub.add_parser("list", help="registered features and feature sets with their lookbacks")
    lst.add_argument("names", nargs="*", metavar="NAME", help="only these features or sets")
    add_json_arg(lst)
    lst.set_defaults(handler=cmd_list)

    describe = sub.add_parser("describe", help="rows, dates, per-feature stats and label base rates")
    _add_dataset_args(describe)
    add_json_arg(describe)
    describe.set_defaults(handler=cmd_describe)


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY",
                        help=STUDY_HELP + " (its data, features.set and target)")
    parser.add_argument("--data", metavar="NAME", help="dataset name (default: the study's)")
    parser.add_argument("--feature-set", metavar="SET", default=None,
                        help="feature set, e.g. a20 or a20_rel (default: the study's features.set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study value, e.g. --set target.price=close (repeatable)")


def _study_dataset(cfg: StudyConfig) -> str | None:
    """The study's own dataset name; None for a panel (its assets are named with --data)."""
    if cfg.data.name:
        return cfg.data.name
    source = cfg.data.source
    return parse_source(source).default_name if isinstance(source, str) else None


def _resolve(args: argparse.Namespace) -> tuple[StudyConfig, Path, str, str]:
    """(study, data_dir, dataset name, feature set) from the flags and the study."""
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item}: expected KEY=VALUE; the feature set is chosen with "
                             f"--feature-set {item}")
    if args.study is None and "default" not in shipped_studies():
        cfg = load_study(None, args.overrides)
    else:
        cfg = load_study(resolve_study_path(args.study), args.overrides)
    set_name = args.feature_set or cfg.features.set
    feature_names(set_name)  # unknown set -> error listing the available ones
    name = args.data or _study_dataset(cfg)
    if name is None:
        raise ValueError(f"data.source is a panel of {len(cfg.data.source)} assets: name one with "
                         f"--data NAME")
    return cfg, resolve_data_dir(data_dir_arg(args), cfg.data.data_dir), name, set_name


def cmd_build(args: argparse.Namespace) -> int:
    cfg, data_dir, name, set_name = _resolve(args)
    if name == _study_dataset(cfg) and dataset_entry(data_dir, name) is None:
        ensure_dataset(cfg.data, data_dir)  # the study's own source: fetch it first
    path, entry = build_processed(data_dir, name, set_name)
    print_table(f"built {path}", ["rows", "first_date", "last_date", "inputs", "warm-up dropped",
                                  "sha256"],
                [[entry["rows"], entry["first_date"], entry["last_date"], len(entry["features"]),
                  entry["warmup_rows_dropped"], entry["sha256"][:16]]])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in FEATURES and n not in FEATURE_SETS]
    if unknown:
        raise ValueError(f"unknown feature or set {unknown[0]!r} (sets: {', '.join(sorted(FEATURE_SETS))}; "
                         f"features: {', '.join(sorted(FEATURES))})")
    sets = [s for s in FEATURE_SETS if not args.names or s in args.names]
    wanted = {n for s in sets if s in args.names for n in FEATURE_SETS[s]} | set(args.names)
    features = [f for n, f in FEATURES.items() if not args.names or n in wanted]
    out = Output(args.json)
    if sets:
        out.table("sets", "feature sets", ["set", "inputs", "lookback", "bounded", "features"],
                  [[s, len(FEATURE_SETS[s]), set_lookback(s),
                    sum(FEATURES[n].bounded for n in FEATURE_SETS[s]), list(FEATURE_SETS[s]) if args.json
                    else ", ".join(FEATURE_SETS[s])] for s in sets])
    out.table("features", "features", ["feature", "lookback", "bounded", "volume", "sets", "definition"],
              [[f.name, f.lookback, f.bounded, f.uses_volume,
                [s for s in FEATURE_SETS if f.name in FEATURE_SETS[s]] if args.json
                else ", ".join(s for s in FEATURE_SETS if f.name in FEATURE_SETS[s]), f.doc]
               for f in features])
    return out.done()


def cmd_describe(args: argparse.Namespace) -> int:
    cfg, data_dir, name, set_name = _resolve(args)
    frame = load_processed(data_dir, name, set_name)
    entry = Manifest(data_dir).latest(processed_path(name, set_name)) or {}
    inputs = feature_names(set_name)
    dates = frame["Date"]
    out = Output(args.json)
    out.value(dataset=name, feature_set=set_name, path=str(data_dir / processed_path(name, set_name)))
    out.table("summary", f"{name}.{set_name}", ["rows", "first_date", "last_date", "inputs",
                                                "warm-up dropped", "input sha256"],
              [[len(frame), str(dates.iloc[0].date()), str(dates.iloc[-1].date()), len(inputs),
                entry.get("warmup_rows_dropped"),
                ", ".join(i["sha256"][:16] for i in entry.get("inputs", []))]])
    stats = []
    for col in inputs:
        v = frame[col].to_numpy(dtype=np.float64)
        f = FEATURES[col]
        stats.append([col, f.lookback, f.bounded, float(v.mean()), float(v.std()),
                      float(v.min()), float(v.max())])
    out.table("features", "features", ["feature", "lookback", "bounded", "mean", "std", "min", "max"], stats)
    t = cfg.target
    what = (f"threshold {t.threshold:g} on {t.price}" if t.kind == "threshold" else "direction")
    rows = []
    for h in t.horizons:
        y = make_labels(frame, t, h)
        known = ~np.isnan(y)
        rows.append([h, int(known.sum()), int(np.nansum(y)), float(np.nanmean(y)) if known.any() else None])
    out.table("labels", f"labels ({what})", ["horizon", "labelled rows", "positives", "base rate"], rows)
    out.line(f"file: {data_dir / processed_path(name, set_name)}", target=what)
    return out.done()

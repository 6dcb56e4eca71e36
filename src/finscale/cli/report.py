"""`finscale report`: build runs/<study>/report/ from the run directories (no training)."""

from __future__ import annotations

import pandas as pd

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, open_study_from_args, print_table
from finscale.report import build_report
from finscale.report.render import fmt_cell
from finscale.report.tables import RESULT_METRICS


def register(sub) -> None:
    p = sub.add_parser(
        "report", help=COMMANDS["report"],
        description="Read runs/<study>/ (final runs, eval.json, HPO outputs and the scaling "
                    "phase's scaling/*.json) and write runs/<study>/report/: report.md (findings "
                    "first), a self-contained report.html, figures/*.png, tables/*.csv, "
                    "results.parquet and predictions.parquet. Nothing is retrained or refitted: "
                    "run `finscale run STUDY --phase scaling` to (re)fit the scaling laws.")
    add_study_args(p, reads_runs=True)
    p.set_defaults(handler=_report)


def _with_ci(frame: pd.DataFrame, metric: str) -> list[str]:
    out = []
    for _, r in frame.iterrows():
        ci = "" if pd.isna(r[f"{metric}_lo"]) else f" [{fmt_cell(r[f'{metric}_lo'])}, {fmt_cell(r[f'{metric}_hi'])}]"
        out.append(fmt_cell(r[metric]) + ci)
    return out


def print_findings(folder) -> None:
    """The report's findings (its first section), one sentence per line."""
    import json

    path = folder / "findings.json"
    if path.exists():
        console.print("findings:", markup=False)
        for line in json.loads(path.read_text())["lines"]:
            console.print(f"  {line}", markup=False, highlight=False)


def print_results(folder) -> None:
    """The final results table (mean [CI over seeds]) and the scaling verdicts of a report."""
    results = folder / "tables" / "final_results.csv"
    if results.exists():
        res = pd.read_csv(results)
        cols = {m: _with_ci(res, m) for m in RESULT_METRICS}
        print_table("final results: mean [95% CI over seeds]",
                    ["horizon", "budget", "seeds", "params", *RESULT_METRICS],
                    [[r["horizon"], r["budget"], r["seeds"], fmt_cell(r["params_total"]),
                      *(cols[m][i] for m in RESULT_METRICS)] for i, (_, r) in enumerate(res.iterrows())])
    else:
        console.print("no evaluated final runs: run `finscale evaluate` first")
    scaling = folder / "tables" / "scaling.csv"
    if scaling.exists():
        console.print("scaling verdicts:")
        for _, r in pd.read_csv(scaling).iterrows():
            what = "" if pd.isna(r["quantity"]) else f"{r['quantity']} vs {r['axis']}: "
            console.print(f"  h{r['horizon']} {what}{r['text']}")


def _report(args) -> int:
    cfg = open_study_from_args(args)
    path = build_report(cfg)
    print_findings(path.parent)
    print_results(path.parent)
    console.print(f"report: {path.resolve()}")
    return 0

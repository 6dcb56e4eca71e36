"""`finscale report`: build runs/<study>/report/ from the run directories (no training)."""

from __future__ import annotations

import pandas as pd

from finscale.cli.commands import COMMANDS
from finscale.cli.common import add_study_args, console, open_study_from_args, print_table
from finscale.formatting import cell, count, interval, signed
from finscale.report import build_report
from finscale.report.render import with_ci
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


def print_findings(folder) -> None:
    """The report's answer and findings (its first screen and section), one sentence per line."""
    import json

    path = folder / "findings.json"
    if path.exists():
        doc = json.loads(path.read_text())
        console.print("findings:", markup=False)
        for line in doc["lines"]:
            console.print(f"  {line}", markup=False, highlight=False)
        if doc.get("answer"):
            console.print(doc["answer"], markup=False, highlight=False)


def _signed(v: float) -> str:
    """A difference in a table cell: the cell's digits with an explicit sign."""
    return signed(float(v), cell)


def print_versus_baseline(folder) -> None:
    """Budget x horizon: each size's mean test log-loss and its improvement over the strongest
    baseline (baseline - model, > 0 = PatchTST better) with the 95% interval over seeds and how
    many seeds' paired intervals exclude 0; the baseline's own log-loss in the last row."""
    tables = folder / "tables"
    if not (tables / "strongest_baseline.csv").exists() or not (tables / "final_results.csv").exists():
        return
    vs, res = pd.read_csv(tables / "strongest_baseline.csv"), pd.read_csv(tables / "final_results.csv")
    base = pd.read_csv(tables / "baselines.csv") if (tables / "baselines.csv").exists() else pd.DataFrame()
    horizons = sorted(vs["horizon"].unique())
    budgets = list(dict.fromkeys(res.sort_values("params_total")["budget"]))
    rows = []
    for budget in budgets:
        params = res.loc[res["budget"] == budget, "params_total"].median()
        row = [f"{budget} ({count(params)})" if pd.notna(params) else budget]
        for h in horizons:
            v = vs[(vs["budget"] == budget) & (vs["horizon"] == h)]
            m = res[(res["budget"] == budget) & (res["horizon"] == h)]
            if v.empty or m.empty:
                row.append("")
                continue
            v = v.iloc[0]
            ci = interval((v["improvement_lo"], v["improvement_hi"]), _signed, missing="")
            ci = f" {ci}" if ci else ""
            row.append(f"{cell(m['log_loss'].iloc[0])}\n{_signed(v['improvement'])}{ci}\n"
                       f"{int(v['seeds_better'])} better, {int(v['seeds_worse'])} worse of {int(v['seeds'])}")
        rows.append(row)
    last = ["strongest baseline"]
    for h in horizons:
        name = vs.loc[vs["horizon"] == h, "baseline"].iloc[0]
        loss = base.loc[(base["horizon"] == h) & (base["baseline"] == name), "log_loss"] if not base.empty else None
        last.append(f"{name}\n{cell(loss.iloc[0])}" if loss is not None and len(loss) else name)
    rows.append(last)
    print_table("test log-loss per budget x horizon, and the improvement over the strongest baseline "
                "(baseline - model, > 0 = PatchTST better; mean [95% CI over seeds]; seeds "
                "significantly better / worse by the Holm-corrected Diebold-Mariano test)", ["budget (params)", *(f"h={h}" for h in horizons)], rows)


def print_results(folder) -> None:
    """The final results table (mean [CI over seeds]) and the scaling verdicts of a report."""
    results = folder / "tables" / "final_results.csv"
    if results.exists():
        res = pd.read_csv(results)
        cols = {m: list(with_ci(res, m)) for m in RESULT_METRICS}
        print_table("final results: mean [95% CI over seeds]",
                    ["horizon", "budget", "seeds", "params", *RESULT_METRICS],
                    [[r["horizon"], r["budget"], r["seeds"], cell(r["params_total"]),
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
    print_versus_baseline(path.parent)
    print_results(path.parent)
    console.print(f"report: {path.resolve()}")
    return 0

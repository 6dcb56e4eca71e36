"""Load a finished study's results and plot them: a notebook-style walk-through.

Run it as a script (``python examples/results.py runs/smoke --out scaling.png``) or cell by
cell (``# %%`` markers: VS Code, Jupyter via jupytext, Spyder). It needs only a study that
``finscale run`` has finished, e.g. ``finscale run smoke --set run.threads=1``.
"""

# %% Which study: its run directory (or a shipped study's name, or a study file)
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; drop this line in a notebook
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import finscale  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("study", nargs="?", default="runs/smoke", help="run directory, study name or file")
parser.add_argument("--out", default="results.png", help="where to write the figure")
args = parser.parse_args()

# %% One row per final run: identity, measured parameters, test metrics with 95% intervals
table = finscale.results(args.study)
done = table[table["state"] == "done"].dropna(subset=["log_loss"])
print(done[["run_id", "horizon", "params_total", "log_loss", "log_loss_lo", "log_loss_hi", "auc"]]
      .to_string(index=False))

# %% Mean over seeds per size and horizon
cells = (done.groupby(["horizon", "budget"], as_index=False)
         .agg(params=("params_total", "median"), log_loss=("log_loss", "mean"), seeds=("seed", "nunique"))
         .sort_values(["horizon", "params"]))
print(cells.to_string(index=False))

# %% The report's tables are CSVs next to it: each size's improvement over the strongest
# baseline (baseline - model test log-loss, > 0 = PatchTST better; mean [95% CI over seeds])
report_dir = Path(done["path"].iloc[0]).parents[1] / "report"
vs_csv = report_dir / "tables" / "strongest_baseline.csv"
versus = pd.read_csv(vs_csv) if vs_csv.exists() else pd.DataFrame()
if not versus.empty:
    print(versus[["horizon", "budget", "baseline", "improvement", "improvement_lo", "improvement_hi"]]
          .to_string(index=False))

# %% Plot: test log-loss vs measured parameters (one point per seed, its interval), per horizon
horizons = sorted(done["horizon"].unique())
fig, axes = plt.subplots(1, len(horizons), figsize=(4.5 * len(horizons), 3.6), squeeze=False)
for ax, h in zip(axes[0], horizons):
    runs = done[done["horizon"] == h]
    ax.errorbar(runs["params_total"], runs["log_loss"],
                yerr=[runs["log_loss"] - runs["log_loss_lo"], runs["log_loss_hi"] - runs["log_loss"]],
                fmt="o", ms=4, alpha=0.7, label="runs (95% interval)")
    mean = cells[cells["horizon"] == h]
    ax.plot(mean["params"], mean["log_loss"], "k-", lw=1, label="mean over seeds")
    base = versus[versus["horizon"] == h] if not versus.empty else versus
    ax.set_title(f"h={h}" + (f" (strongest baseline: {base['baseline'].iloc[0]})" if len(base) else ""))
    ax.set(xscale="log", xlabel="measured parameters", ylabel="test log-loss")
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(args.out, dpi=100)
print(f"figure: {args.out}")

"""finscale: do neural scaling laws hold for PatchTST on financial time series?

The Python API (keyword-only options; ``import finscale`` stays light, the work is imported
when a function is called)::

    import finscale

    cfg = finscale.load_study("smoke", overrides=["seeds=[0]"])
    finscale.run_study(cfg)                       # data -> ... -> scaling -> report, resumably
    table = finscale.results(cfg)                 # one row per final run, test metrics
    run = finscale.load_run(table.path.iloc[0])   # model, config, metrics, predictions
    run.predict(ohlcv_frame)                      # scores new daily bars from the checkpoint
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from pathlib import Path

    import pandas as pd

    from finscale.config import StudyConfig
    from finscale.runner.study import StudySummary
    from finscale.trained_run import Run

__all__ = ["__version__", "load_study", "run_study", "results", "load_run"]


def __getattr__(name: str):
    # Looked up on first use: importlib.metadata costs a tenth of a second that `finscale
    # --help` need not pay (the package import stays free of torch, pandas and metadata).
    if name == "__version__":
        from finscale.version import __version__

        return __version__
    raise AttributeError(f"module 'finscale' has no attribute {name!r}")


def load_study(path_or_name: str | Path | None = None, *, overrides: list[str] | tuple[str, ...] = (),
               ) -> StudyConfig:
    """The study config of a TOML file, or of a shipped study by name (``default``, ``smoke``,
    ``phase6a``; ``default`` when omitted), with ``section.key=value`` overrides applied (as
    ``--set`` on the command line). Raises ``ValueError`` naming a bad key or value."""
    from finscale.config import load_study as _load
    from finscale.config import resolve_study_path

    return _load(resolve_study_path(path_or_name), list(overrides))


def run_study(cfg: StudyConfig, *, phases: tuple[str, ...] | None = None, budgets: tuple[str, ...] = (),
              horizons: tuple[int, ...] = (), data_dir: str | None = None, monitor: bool = True,
              ) -> StudySummary:
    """Run the study's phases (default: all, in order) like ``finscale run``: finished work is
    skipped and interrupted runs resume. ``budgets``/``horizons`` narrow the cells (as
    ``--only``). Returns the summary (runs done, skipped, failed; the report path)."""
    from finscale.runner import PHASES
    from finscale.runner.study import RunOptions
    from finscale.runner.study import run_study as _run

    return _run(cfg, RunOptions(phases=tuple(phases or PHASES), budgets=tuple(budgets),
                                horizons=tuple(horizons), data_dir=data_dir, monitor=monitor))


def results(study: StudyConfig | str | Path | list | tuple) -> pd.DataFrame:
    """One row per final run of the study's current config found on disk, smallest model
    first within each horizon: identity (run_id, budget, horizon, seed, replicate, path),
    state, measured parameters, validation log-loss and, once evaluated, the test metrics with
    their CIs (``<metric>_lo``/``_hi``). ``study``: a config, a study's run directory
    (``runs/<study>``), a study file or a shipped study's name; a list of them puts the
    studies side by side (one frame, a first column ``study`` naming each run's study
    directory). A study that has not run there raises ``ValueError`` naming the missing
    directory."""
    from finscale.config.studydir import open_study
    from finscale.study_runs import results_table

    if isinstance(study, (list, tuple)):
        import pandas as pd

        cfgs = [open_study(s) for s in study]
        frames = [results_table(c).assign(study=str(c.study_dir)) for c in cfgs]
        out = pd.concat(frames, ignore_index=True)
        return out[["study", *[c for c in out.columns if c != "study"]]]
    return results_table(open_study(study))


def load_run(run_dir: str | Path, *, device: str = "cpu") -> Run:
    """A finished run from its directory alone: ``.model`` (best weights), ``.config``,
    ``.metrics`` (per epoch), ``.predictions`` (test, once evaluated) and ``.predict(frame)``,
    which rebuilds features, normalisation and windows from the checkpoint."""
    from finscale.trained_run import load_run as _load

    return _load(run_dir, device=device)

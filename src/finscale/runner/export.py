"""Script export: one self-contained Python script per final run, for a paper's appendix.

Each script embeds the fully resolved study config and the run's chosen hyperparameters as
data and calls :func:`reproduce`; scripts differ only in that data (the logic lives here).
``run_all.sh`` runs them in order; because runs are idempotent, rerunning it resumes where
it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import stat
from datetime import UTC, datetime
from pathlib import Path

from finscale.config import StudyConfig, config_to_dict, replace_section, study_from_dict
from finscale.files import atomic_write_bytes
from finscale.hpo.results import cell_params
from finscale.runner.study import RunOptions
from finscale.selection import Cell, variant_cells
from finscale.spec import make_spec
from finscale.version import __version__

log = logging.getLogger(__name__)

# Nothing from the study is formatted into code: the header is fixed text, and the study and
# run travel as one JSON document inside a Python string literal made by repr() (a real
# serializer: any text, quotes and newlines included, stays data).
TEMPLATE = '''#!/usr/bin/env python3
"""Reproduce one final run of a finscale study (the run and study are in DATA below).

Exported by finscale {version} on {date}. Needs only finscale installed
(pip install finscale=={version}). Usage: python THIS_SCRIPT [--output-dir DIR] [--data-dir DIR]
[--no-monitor]. Rerunning resumes an interrupted run and skips a finished one.
"""

import json
import sys

DATA = json.loads({data_literal})
STUDY, RUN = DATA["study"], DATA["run"]

if __name__ == "__main__":
    from finscale.runner.export import reproduce

    result = reproduce(STUDY, RUN, sys.argv[1:])
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\\n")
    sys.exit(0 if result["status"] == "done" else 3)
'''


def render_script(study: dict, run: dict, *, date: str) -> str:
    """The script text: fixed code plus ``study``/``run`` as a JSON string literal."""
    payload = json.dumps({"study": study, "run": run}, indent=1, sort_keys=True)
    return TEMPLATE.format(version=__version__, date=date, data_literal=repr(payload))


def _write_script(path: Path, text: str) -> None:
    atomic_write_bytes(text.encode(), path)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def export_scripts(cfg: StudyConfig, out_dir: Path, opts: RunOptions | None = None) -> list[Path]:
    """Write one script per final run (axis variant x cell x seed) and ``run_all.sh``; returns
    the scripts. Replicate seed sets beyond the first are not exported (``finscale run --replicates``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).date().isoformat()
    scripts = []
    opts = opts or RunOptions()
    for var, var_cells in variant_cells(cfg, opts.selection()):
        scripts += _variant_scripts(var, var_cells, out_dir, date)
    lines = ["#!/usr/bin/env bash",
             "# Every final run of the study, in order. Rerun to resume where it stopped.",
             'set -euo pipefail', 'cd "$(dirname "$0")"']
    lines += [f'python3 {shlex.quote(p.name)} "$@"' for p in scripts]
    _write_script(out_dir / "run_all.sh", "\n".join(lines) + "\n")
    return scripts


def _variant_scripts(cfg: StudyConfig, var_cells: list[Cell], out_dir: Path, date: str) -> list[Path]:
    """The scripts of one axis variant's cells (the variant's resolved study is embedded)."""
    study, scripts = config_to_dict(cfg), []
    for budget, h in ((c.budget, c.horizon) for c in var_cells):
        params, source = cell_params(cfg, budget, h)
        for seed in cfg.seeds:
            spec = make_spec(cfg, budget, h, seed, params)
            run = {"budget": budget, "horizon": h, "seed": seed, "params": params,
                   "params_source": source, "run_id": spec.run_id, "config_hash": spec.digest}
            path = out_dir / f"{spec.run_id}.py"
            _write_script(path, render_script(study, run, date=date))
            scripts.append(path)
    return scripts


def _parse_args(argv: list[str]) -> dict:
    import argparse

    p = argparse.ArgumentParser(description="Reproduce one exported finscale run.")
    p.add_argument("--output-dir", default=None, help="where runs/<study>/ goes (default: as exported)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-monitor", action="store_true")
    return vars(p.parse_args(argv))


def reproduce(study: dict, run: dict, argv: list[str]) -> dict:
    """Train (or resume) and evaluate the embedded run.

    Returns ``{"status": "done", "run_id", "test": metrics}``, or ``{"status": <stop state>,
    "reason"}`` when a stop request checkpointed it (rerunning the script resumes)."""
    from finscale.control import StopRequest, resume_command
    from finscale.prepare import prepare
    from finscale.runner.evaluation import evaluate_final_run
    from finscale.runner.study import StudyStopped, StudySummary, run_final_phase

    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = study_from_dict(study, "embedded STUDY")
    if args["output_dir"]:
        cfg = replace_section(cfg, output_dir=args["output_dir"])
    spec = make_spec(cfg, run["budget"], run["horizon"], run["seed"], run["params"])
    if spec.digest != run["config_hash"]:
        raise ValueError(f"this finscale version resolves the run to {spec.run_id}, the script "
                         f"was exported as {run['run_id']}: install finscale as named in the header")
    prep = prepare(cfg, args["data_dir"])
    opts = RunOptions(monitor=not args["no_monitor"])
    one_seed = replace_section(cfg, seeds=(run["seed"],), replicates=1)  # this run only
    summary = StudySummary()
    with StopRequest(cfg.study_dir / "STOP") as stop:
        try:
            run_final_phase(one_seed, prep, opts, stop, summary, units=[(one_seed, spec)])
        except StudyStopped as exc:
            return {"status": exc.status, "run_id": spec.run_id,
                    "reason": f"{exc}; resume with: "
                              f"{resume_command(cfg.study_dir / 'STOP', 'this script')}"}
    doc = evaluate_final_run(one_seed, prep, spec)
    return {"status": "done", "run_id": spec.run_id, "test": doc["test"]["metrics"]}

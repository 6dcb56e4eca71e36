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

from finscale.atomic import atomic_write_bytes
from finscale.config import StudyConfig, config_to_dict, replace_section, study_from_dict
from finscale.hpo.results import cell_params
from finscale.rundir import Busy
from finscale.runner.study import RunOptions
from finscale.runspec import make_spec
from finscale.selection import Cell, variant_cells
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
    from finscale.runner.export import main

    sys.exit(main(STUDY, RUN, sys.argv[1:]))
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


def main(study: dict, run: dict, argv: list[str]) -> int:
    """An exported script's entry point: the result as JSON on stdout; exit 0 (done),
    3 (stopped, resumable) or 1 (failed, or an error printed as one ``error:`` line)."""
    import sys

    try:
        result = reproduce(study, run, argv)
    except (ValueError, OSError, Busy) as exc:  # a user's or the environment's fault: no traceback
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return {"done": 0, "failed": 1}.get(result["status"], 3)


def reproduce(study: dict, run: dict, argv: list[str]) -> dict:
    """Train (or resume) and evaluate the embedded run, exactly as ``finscale run`` did.

    The run is built from the embedded study and parameters only (never from files of the
    output directory such as ``best_params.json``), so a script run in an empty directory
    trains the same run id and writes the same eval.json; ``run.threads`` is honoured like a
    serial ``finscale run``. Returns ``{"status": "done", "run_id", "test": metrics}``,
    ``{"status": "failed", "reason"}``, or ``{"status": <stop state>, "reason"}`` when a stop
    request checkpointed it (rerunning the script resumes)."""
    from finscale.evaluate.phase import evaluate_final_run
    from finscale.rundata import prepare
    from finscale.rundir import RunDir, UnitLock
    from finscale.runner.final import execute_final
    from finscale.runspec import final_dir
    from finscale.stopping import StopRequest, resume_command
    from finscale.train import Controls, RunInterrupted, TrainingFailed

    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = study_from_dict(study, "embedded STUDY")
    if args["output_dir"]:
        cfg = replace_section(cfg, output_dir=args["output_dir"])
    spec = make_spec(cfg, run["budget"], run["horizon"], run["seed"], run["params"])
    if spec.digest != run["config_hash"]:
        raise ValueError(f"this finscale version resolves the run to {spec.run_id}, the script "
                         f"was exported as {run['run_id']}: install finscale as named in the header")
    if cfg.run.threads:  # as a serial `finscale run` does: CPU floats depend on the thread count
        import torch

        torch.set_num_threads(cfg.run.threads)
    prep = prepare(cfg, args["data_dir"])
    with StopRequest(cfg.study_dir / "STOP") as stop, UnitLock(final_dir(cfg, spec)).acquire():
        try:
            execute_final(cfg, prep, spec, controls=Controls(should_stop=stop.reason))
        except RunInterrupted as exc:
            return {"status": exc.status, "run_id": spec.run_id,
                    "reason": f"{exc}; resume with: "
                              f"{resume_command(cfg.study_dir / 'STOP', 'this script')}"}
        except TrainingFailed as exc:
            return {"status": "failed", "run_id": spec.run_id, "reason": str(exc),
                    "status_file": str(RunDir(final_dir(cfg, spec)).file("status.json"))}
        doc = evaluate_final_run(cfg, prep, spec)
    return {"status": "done", "run_id": spec.run_id, "test": doc["test"]["metrics"]}

"""Final runs: train one (budget, horizon, seed) on the contiguous split into its run dir.

Consumes: the study, its prepared data and a :class:`RunSpec`. Produces the run directory
of DESIGN §3 (config.json, env.json with data hashes, splits.json, status.json,
metrics.jsonl, ckpt/). Idempotent: a finished run is skipped, an interrupted one resumes.
"""

from __future__ import annotations

import logging

from finscale.config import StudyConfig
from finscale.model import select_device
from finscale.repro import seed_everything
from finscale.rundata import PreparedData, final_data, prepared_for
from finscale.rundir import RunDir
from finscale.runspec import RunSpec, design_cfg, final_dir, start_run_dir
from finscale.train import Controls, Trainer, read_final

log = logging.getLogger(__name__)


def execute_final(cfg: StudyConfig, prep: PreparedData, spec: RunSpec, *,
                  controls: Controls | None = None, callbacks=()) -> tuple[dict, bool]:
    """Train (or resume, or skip) one final run; returns (final metrics, was_already_done)."""
    run = RunDir(final_dir(cfg, spec))
    if run.state == "done" and (final := read_final(run)) is not None:
        return final, True
    cfg = design_cfg(cfg, spec.params)  # the run's own design (inputs, normalisation, context)
    prep = prepared_for(prep, cfg)
    data, _test = final_data(prep, cfg, spec.horizon)
    start_run_dir(run, spec, prep, data.split_report)
    seed_everything(spec.seed)
    trainer = Trainer(run, model_args=spec.model_args, cfg=spec.train, data=data, seed=spec.seed,
                      config_hash=spec.digest, device=select_device(cfg.model.device),
                      callbacks=callbacks, controls=controls,
                      checkpointing=cfg.model.activation_checkpointing, compile=cfg.model.compile,
                      precision=spec.precision)
    return trainer.fit(), False


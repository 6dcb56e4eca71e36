"""A final run's model as an MLflow pyfunc that wraps :meth:`finscale.trained_run.Run.predict`.

Consumes: a finished final run directory (``ckpt/best.pt`` with its serving recipe, config.json)
and the MLflow child run that :func:`finscale.tracking.track_final_run` made for it.
Produces: an MLflow model named ``pyfunc`` logged to that run, whose artifacts are the run
directory's serving files; ``mlflow.pyfunc.load_model(uri).predict(bars)`` returns exactly
what ``finscale.load_run(run_dir).predict(bars)`` does (date, run_id, horizon, prob, label, end).
Guarantees: logged once per checkpoint (its sha256 in the run's ``finscale.pyfunc`` tag, the
model's URI in ``finscale.pyfunc_uri``);
never raises (a failure is a WARNING: tracking may never stop a study); off with
``tracking.pyfunc = false``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from finscale import tracking
from finscale.config import StudyConfig

log = logging.getLogger(__name__)

SERVING_FILES = ("config.json", "env.json", "metrics.jsonl", "ckpt/best.pt")
PYFUNC_TAG = "finscale.pyfunc"


def _python_model():
    """The PythonModel, made here so importing finscale never imports mlflow."""
    import mlflow.pyfunc

    class FinscaleRun(mlflow.pyfunc.PythonModel):
        """Scores daily OHLCV bars with a finscale final run (see ``Run.predict``)."""

        def load_context(self, context):
            from finscale.trained_run import load_run

            self.run = load_run(context.artifacts["run_dir"])

        def predict(self, context, model_input, params=None):
            return self.run.predict(model_input, **(params or {}))

    return FinscaleRun()


def log_pyfunc(cfg: StudyConfig, run_dir: Path, child_run_id: str | None) -> str | None:
    """Log ``run_dir``'s model as a pyfunc on MLflow run ``child_run_id``; its model URI, or
    None (tracking off, no checkpoint, already logged, or an MLflow error, logged as a warning)."""
    best = Path(run_dir) / "ckpt" / "best.pt"
    if child_run_id is None or not cfg.tracking.pyfunc or not best.is_file():
        return None
    # Broad except, as in finscale.tracking: no tracking failure may fail a study.
    try:
        return _log(cfg, Path(run_dir), child_run_id, tracking._sha(best))
    except Exception as exc:
        log.warning("MLflow: logging %s as a pyfunc model failed (%s: %s); the run is unaffected",
                    run_dir, type(exc).__name__, tracking._first_line(exc))
        return None


def _log(cfg: StudyConfig, run_dir: Path, run_id: str, digest: str) -> str | None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from finscale.version import __version__

    uri = tracking.tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    if client.get_run(run_id).data.tags.get(PYFUNC_TAG) == digest:
        return None
    with tempfile.TemporaryDirectory(prefix="finscale-pyfunc-") as tmp:
        served = Path(tmp) / run_dir.name  # the run's name is its id: Run.predict reports it
        for name in SERVING_FILES:
            if (run_dir / name).is_file():
                (served / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / name, served / name)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="pyfunc", python_model=_python_model(),
                                           artifacts={"run_dir": str(served)},
                                           pip_requirements=[f"finscale=={__version__}"])
    client.set_tag(run_id, PYFUNC_TAG + "_uri", info.model_uri)  # load_model(this).predict(bars)
    client.set_tag(run_id, PYFUNC_TAG, digest)
    return info.model_uri

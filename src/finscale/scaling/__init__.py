"""Scaling laws: the stage that fits L(N) (and L(C)) with uncertainty and writes the results.

``laws``: the statistics (power-law fit, bootstrap, constant-model comparison, verdicts;
numpy/scipy only). ``power``: the design's minimum detectable slope, by simulation.
``wording``: verdict sentences with equivalence bounds and power. ``fit``: per-horizon fits
from a study's evaluated runs. ``store``: the stage's outputs, ``runs/<study>/scaling/h<h>.json``, which the report reads (it never fits).
"""

from finscale.scaling.fit import AXES, AxisFit, FitCache, HorizonScaling, fit_study, scaling_table
from finscale.scaling.laws import (
    ALPHA_MAX,
    FALLING,
    FALLS_EXTRAPOLATES,
    FALLS_IN_RANGE,
    FLAT,
    RISES,
    VERDICTS,
    auc_to_error,
    bootstrap_fit,
    compare_to_constant,
    decide_verdict,
    fit_power_law,
    predict_power_law,
    prediction_band,
    resample_replicates,
    resample_seeds,
)
from finscale.scaling.power import Design, design_power, measure_design
from finscale.scaling.stability import STABLE_SHARE, stability_frame, stability_row
from finscale.scaling.store import (
    read_axes,
    read_scaling,
    read_study_stability,
    result_path,
    run_scaling,
    scaling_dir,
    stability_path,
)
from finscale.scaling.wording import equivalence_bounds, fit_detail, scaling_verdict

__all__ = ["ALPHA_MAX", "AXES", "AxisFit", "Design", "design_power", "equivalence_bounds", "fit_detail",
           "measure_design", "FALLING", "FALLS_EXTRAPOLATES", "FALLS_IN_RANGE", "FLAT",
           "FitCache", "HorizonScaling", "RISES", "decide_verdict",
           "VERDICTS", "auc_to_error", "bootstrap_fit", "compare_to_constant", "fit_power_law",
           "fit_study", "predict_power_law", "read_axes", "prediction_band", "read_scaling", "resample_replicates",
           "resample_seeds", "read_study_stability", "result_path", "STABLE_SHARE", "stability_frame",
           "stability_path", "stability_row", "run_scaling", "scaling_dir", "scaling_table",
           "scaling_verdict"]

"""Window baselines (evaluate.window_baselines): each is the right model on a market planted for it.

Each planted market is a matrix of the stationary set's 25 inputs (real column names, i.i.d.
noise) whose label depends on exactly the structure one baseline models: a lagged input
(window_logistic), an input's recent trend (dlinear), the recent volatility (volatility) or
the 20-day return (momentum). The planted baseline must beat day-t logistic regression (which
cannot see that structure) and come close to the known optimum; every choice is made on
validation.
"""

import numpy as np
import pytest

from finscale.evaluate import fit_window_baselines
from finscale.evaluate.window_baselines import momentum_features, volatility_features
from finscale.features import input_columns
from finscale.metrics import per_sample_log_loss

COLUMNS = input_columns("a20_rel")
T, CONTEXT = 6000, 32


def _market(signal_fn, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(T, len(COLUMNS)))
    raw[:, COLUMNS.index("ret_close")] *= 0.01
    signal = np.zeros(T)
    signal[CONTEXT:] = signal_fn(raw, rng)[CONTEXT:]
    prob = 1 / (1 + np.exp(-(signal - 1.0)))
    y = (rng.random(T) < prob).astype(np.float64)
    ends = np.arange(CONTEXT, T)
    split = {"train": ends[:4000], "val": ends[4000:5000], "test": ends[5000:]}
    standardised = (raw - raw[split["train"]].mean(0)) / raw[split["train"]].std(0)
    return raw, standardised, y, split, prob


def _day_t_logistic(values, y, split):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000).fit(values[split["train"]], y[split["train"]])
    return model.predict_proba(values[split["test"]])[:, 1]


def _loss(y, p):
    return float(np.mean(per_sample_log_loss(y, p)))


def _lagged(raw, rng):
    return 1.5 * np.roll(raw[:, 6], 4)          # input 6, four days ago


def _trend(raw, rng):
    x = raw[:, 7]
    return 4.0 * np.convolve(x, np.ones(10) / 10)[:len(x)]  # the 10-day mean of input 7


def _volatility(raw, rng):
    # volatility regimes: returns' scale switches every 50 days; the label follows the scale
    regime = np.repeat(rng.choice([0.5, 2.0], size=T // 50 + 1), 50)[:T]
    raw[:, COLUMNS.index("ret_close")] *= regime
    return 2.0 * np.log(regime)


def _momentum(raw, rng):
    r = raw[:, COLUMNS.index("ret_close")]
    return 25.0 * np.convolve(r, np.ones(20))[:len(r)]  # the 20-day return


@pytest.mark.parametrize("name, planted", [("window_logistic", _lagged), ("dlinear", _trend),
                                           ("volatility", _volatility), ("momentum", _momentum)])
def test_each_window_baseline_finds_the_structure_planted_for_it(name, planted):
    raw, values, y, split, prob = _market(planted)
    out = fit_window_baselines(values, raw, COLUMNS, y, split, CONTEXT, seed=0)
    yt = y[split["test"]]
    mine, day_t = _loss(yt, out[name]["test"]), _loss(yt, _day_t_logistic(values, y, split))
    optimum = _loss(yt, prob[split["test"]])
    assert mine < day_t - 0.01, f"{name}: {mine:.4f} vs day-t logistic {day_t:.4f}"
    assert mine < optimum + 0.03, f"{name}: {mine:.4f} vs optimum {optimum:.4f}"
    assert set(out[name]["chosen"]) == {"k", "C"}


def test_choices_are_made_on_validation_and_windows_stay_inside_the_context():
    """k is chosen by validation log-loss (a lag-4 signal needs k >= 5), never beyond the context;
    test labels do not enter: shuffling them leaves every probability unchanged."""
    raw, values, y, split, _ = _market(_lagged)
    out = fit_window_baselines(values, raw, COLUMNS, y, split, CONTEXT, seed=0)
    assert out["window_logistic"]["chosen"]["k"] >= 5
    y2 = y.copy()
    y2[split["test"]] = np.random.default_rng(1).permutation(y2[split["test"]])
    again = fit_window_baselines(values, raw, COLUMNS, y2, split, CONTEXT, seed=0)
    for name in out:
        np.testing.assert_array_equal(out[name]["test"], again[name]["test"])
    short = fit_window_baselines(values, raw, COLUMNS, y, split, 4, seed=0)
    assert short["window_logistic"]["chosen"]["k"] <= 4


def test_window_features_are_causal():
    """Changing rows after t leaves the features of the window ending at t unchanged."""
    raw, *_ = _market(_lagged)
    ends = np.array([100, 200])
    later = raw.copy()
    later[201:] += 5.0
    later[101:200] += 5.0
    for fn in (volatility_features, momentum_features):
        a, b = fn(raw, COLUMNS, ends[:1], CONTEXT), fn(later, COLUMNS, ends[:1], CONTEXT)
        np.testing.assert_array_equal(a, b)


def test_a_missing_input_is_a_clear_error():
    raw, values, y, split, _ = _market(_lagged)
    keep = [i for i, c in enumerate(COLUMNS) if c != "atr_rel"]
    with pytest.raises(ValueError, match="atr_rel"):
        fit_window_baselines(values[:, keep], raw[:, keep], [COLUMNS[i] for i in keep], y, split,
                             CONTEXT, seed=0)

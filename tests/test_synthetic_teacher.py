"""The capacity-limited calibration market ``synthetic:teacher`` (data.teacher): its
parameters, its planted power-law spectrum, its known optimum and what the manifest records."""

import numpy as np
import pytest

from finscale.data import DataError, fetch_dataset, parse_source
from finscale.data.synthetic import MAX_LAGS, generate, lag_windows, parse_synthetic
from finscale.data.synthetic_truth import optimal_probabilities, summarize
from finscale.data.teacher import TeacherNetwork


def market(target: str):
    return generate(parse_synthetic(target))


def test_canonical_string_names_every_teacher_parameter():
    spec = parse_source("synthetic:teacher?alpha=0.5&seed=3")
    assert str(spec) == ("synthetic:teacher?seed=3&days=5000&start=2000-01-03&vol=constant"
                         "&strength=3.0&width=256&alpha=0.5&lags=8&linear=0.3")
    assert parse_source("synthetic:teacher?seed=3&alpha=.50").default_name == spec.default_name


@pytest.mark.parametrize("target, message", [
    ("teacher?width=0", r"parameter width='0': expected an integer in \[1, 1024\]"),
    ("teacher?alpha=-1", r"parameter alpha='-1': expected a number in \[0.0, 4.0\]"),
    ("teacher?alpha=inf", r"parameter alpha='inf'"),
    ("teacher?complexity=8", r"unknown parameter 'complexity' for synthetic:teacher"),
    ("teacher?lags=65", r"parameter lags='65'"),
])
def test_bad_teacher_parameters_name_the_parameter(target, message):
    with pytest.raises(DataError, match=message):
        parse_source(f"synthetic:{target}")


def test_the_spectrum_is_the_planted_power_law_and_the_drift_has_unit_variance():
    net = TeacherNetwork.draw(np.random.default_rng(0), lags=4, width=128, alpha=1.0)
    assert np.abs(net.amplitudes) == pytest.approx(np.arange(1, 129) ** -1.0)
    spectrum = np.asarray(net.spectrum)
    assert spectrum.sum() == pytest.approx(1.0) and (spectrum > 0).all()
    # shares follow k^-2alpha up to each ridge function's own variance: the tail beyond K
    # components shrinks like K^(1-2alpha) (here 1/K), the capacity a student must buy
    assert net.share_beyond(4) > 2 * net.share_beyond(16) > 4 * net.share_beyond(64)
    x = np.random.default_rng(1).standard_normal((20_000, 4))
    g = net(x)
    assert g.mean() == pytest.approx(0.0, abs=0.03) and g.std() == pytest.approx(1.0, abs=0.03)
    # linear=0: nothing of the drift is linear in the inputs
    coef = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), g, rcond=None)[0]
    assert np.abs(coef[:4]).max() < 0.03


def test_a_flatter_spectrum_leaves_more_beyond_a_small_student():
    steep = TeacherNetwork.draw(np.random.default_rng(0), lags=4, width=96, alpha=1.5)
    flat = TeacherNetwork.draw(np.random.default_rng(0), lags=4, width=96, alpha=0.5)
    assert flat.share_beyond(8) > 0.4 > 0.05 > steep.share_beyond(8)


def test_the_drift_is_the_teacher_of_past_gaps_and_strength_zero_is_the_null():
    m = market("teacher?seed=5&days=300&strength=1.5&width=16&lags=6")
    x = lag_windows(m.gap, 6)[MAX_LAGS:]
    assert m.mu[MAX_LAGS:] == pytest.approx(1.5 * m.sigma[MAX_LAGS:] * m.network(x))
    null = market("teacher?seed=5&days=300&strength=0&width=16&lags=6")
    assert null.network is None and not null.mu.any()


def test_a_stronger_teacher_has_a_lower_optimum_and_the_manifest_records_it(tmp_path):
    losses = []
    for strength in (0.5, 2.0):
        m = market(f"teacher?seed=2&days=400&strength={strength}&width=16&alpha=0.75&lags=4")
        p = optimal_probabilities(m, kind="direction", threshold=0.0, price="close", horizon=1)
        losses.append(summarize(p)["optimal_logloss"])
    assert losses[1] < losses[0] < np.log(2) - 0.01
    entry = fetch_dataset("synthetic:teacher?seed=2&days=400&strength=2.0&width=16&alpha=0.75&lags=4",
                          tmp_path / "data")
    syn = entry["synthetic"]
    assert syn["variant"] == "teacher" and syn["params"]["alpha"] == 0.75 and syn["params"]["width"] == 16
    net = market(entry["source"].removeprefix("synthetic:")).network
    assert syn["spectrum"] == pytest.approx(list(net.spectrum)) and len(syn["spectrum"]) == 16
    direction = next(t for t in syn["truth"] if t["kind"] == "direction")
    assert direction["optimal_logloss"] == pytest.approx(losses[1])

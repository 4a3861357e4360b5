"""gendm.bench.stats against rliable (the reference implementation of Agarwal et al., 2021)."""

import numpy as np
import pytest

from gendm.bench import stats

rly = pytest.importorskip("rliable.library")
metrics = pytest.importorskip("rliable.metrics")

SHAPES = [(5, 3), (10, 1), (3, 7), (1, 4)]
PAIRS = [
    (stats.iqm, metrics.aggregate_iqm),
    (stats.mean, metrics.aggregate_mean),
    (stats.median, metrics.aggregate_median),
    (stats.optimality_gap, metrics.aggregate_optimality_gap),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_point_estimates_equal_rliable(shape):
    x = np.random.default_rng(1).normal(0.5, 0.4, size=shape)
    for ours, theirs in PAIRS:
        assert ours(x) == pytest.approx(theirs(x), abs=1e-12), ours.__name__
    y = np.random.default_rng(2).normal(0.5, 0.4, size=(4, shape[1]))
    assert stats.probability_of_improvement(x, y) == pytest.approx(
        metrics.probability_of_improvement(x, y), abs=1e-12
    )


def test_iqm_hand_computed():
    assert stats.iqm(np.arange(8.0).reshape(8, 1)) == pytest.approx(np.mean([2, 3, 4, 5]))


def test_bootstrap_cis_agree_with_rliable_within_monte_carlo_error():
    x = np.random.default_rng(3).uniform(size=(5, 3))
    ours = stats.aggregate_intervals({"a": x}, reps=50_000, seed=0)["a"]
    np.random.seed(0)
    for name, theirs in zip(stats.METRIC_NAMES, (p[1] for p in PAIRS)):
        points, cis = rly.get_interval_estimates({"a": x}, lambda s, f=theirs: np.array([f(s)]), reps=5_000)
        point, lo, hi = ours[name]
        assert point == pytest.approx(points["a"][0], abs=1e-12)
        # 5k-replicate percentiles of O(1) scores move by ~0.005; 0.03 is a wide Monte-Carlo margin.
        assert lo == pytest.approx(cis["a"][0, 0], abs=0.03) and hi == pytest.approx(
            cis["a"][1, 0], abs=0.03
        ), name


def test_probability_of_improvement_ci_agrees_with_rliable():
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.6, 0.3, size=(5, 3)), rng.normal(0.4, 0.3, size=(5, 3))
    point, lo, hi = stats.probability_of_improvement_ci(x, y, reps=20_000, seed=0)
    np.random.seed(0)
    pe, cis = rly.get_interval_estimates(
        {"xy": (x, y)}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps=1_000
    )
    assert point == pytest.approx(pe["xy"][0], abs=1e-12)
    assert lo == pytest.approx(cis["xy"][0, 0], abs=0.06) and hi == pytest.approx(cis["xy"][1, 0], abs=0.06)


def test_performance_profiles_agree_with_rliable():
    x = np.random.default_rng(5).uniform(size=(5, 4))
    taus = np.linspace(0, 1, 11)
    ours = stats.performance_profile({"a": x}, taus, reps=2_000, seed=0)["a"]
    np.random.seed(0)
    profiles, cis = rly.create_performance_profile({"a": x}, taus, reps=2_000)
    np.testing.assert_allclose(ours[0], profiles["a"], atol=1e-12)
    np.testing.assert_allclose(ours[1], cis["a"][0], atol=0.08)
    np.testing.assert_allclose(ours[2], cis["a"][1], atol=0.08)


def test_ragged_scores_use_every_run():
    tasks = [np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.5, 0.7])]
    assert stats.mean(tasks) == pytest.approx((np.mean(tasks[0]) + np.mean(tasks[1])) / 2)
    assert stats.iqm(tasks) == pytest.approx(metrics.aggregate_iqm(np.concatenate(tasks)[:, None]))


@pytest.mark.parametrize(
    "bad, match",
    [(np.array([[1.0, np.nan]]), "NaN"), (np.zeros((0, 2)), "empty"), (np.zeros((2, 2, 2)), "shape")],
)
def test_bad_scores_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        stats.stratified_bootstrap_ci(bad, stats.iqm, reps=100)


def test_single_run_gives_a_degenerate_interval():
    point, lo, hi = stats.stratified_bootstrap_ci(np.array([[0.4, 0.6]]), stats.iqm, reps=1000)
    assert lo == hi == point == pytest.approx(0.5)

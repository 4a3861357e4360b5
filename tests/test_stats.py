"""gendm.bench.stats against rliable 1.2.0 (Agarwal et al., 2021) and hand-computed cases."""

import functools

import numpy as np
import pytest

from gendm.bench import stats

# pyproject pins pandas<3 in the dev extra: rliable needs arch<8, which fails to import under pandas 3.
rly = pytest.importorskip("rliable.library")
rmetrics = pytest.importorskip("rliable.metrics")

SHAPES = [(5, 3), (10, 1), (3, 7), (1, 4), (4, 2)]
PAIRS = [
    (stats.iqm, rmetrics.aggregate_iqm),
    (stats.mean, rmetrics.aggregate_mean),
    (stats.median, rmetrics.aggregate_median),
    (stats.optimality_gap, rmetrics.aggregate_optimality_gap),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_point_estimates_match_rliable(shape):
    rng = np.random.default_rng(sum(shape))
    for scores in (
        rng.normal(size=shape),
        rng.uniform(0, 1.5, size=shape),
        rng.integers(0, 3, size=shape) * 1.0,
    ):
        for ours, theirs in PAIRS:
            assert abs(ours(scores) - float(theirs(scores))) < 1e-12, ours.__name__
        assert (
            abs(stats.optimality_gap(scores, gamma=0.5) - rmetrics.aggregate_optimality_gap(scores, 0.5))
            < 1e-12
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_probability_of_improvement_point_matches_rliable(shape):
    rng = np.random.default_rng(7 + sum(shape))
    x = rng.normal(size=shape)
    for y in (
        rng.normal(size=(6, shape[1])),
        x.copy(),
        np.round(rng.normal(size=(3, shape[1]))),
        np.round(x),
    ):
        assert abs(stats.probability_of_improvement(x, y) - rmetrics.probability_of_improvement(x, y)) < 1e-12


def test_hand_computed_cases():
    scores = np.arange(8.0).reshape(4, 2)
    assert stats.iqm(scores) == np.mean([2, 3, 4, 5])
    assert stats.mean(np.array([[0.0, 2.0], [2.0, 4.0]])) == 2.0
    assert stats.median(np.array([[0.0, 10.0, 4.0]])) == 4.0
    assert stats.optimality_gap(np.array([[0.5, 2.0]])) == 0.25
    # One task: x beats y in 3 of 4 pairs, one tie counts 1/2.
    assert stats.probability_of_improvement(np.array([[2.0], [1.0]]), np.array([[1.0], [0.0]])) == 3.5 / 4
    assert stats.normalise(np.array([5.0, 15.0]), 5.0, 15.0).tolist() == [0.0, 1.0]


def test_aggregates_accept_a_replicate_axis():
    batch = np.random.default_rng(0).normal(size=(6, 5, 3))
    for ours, _ in PAIRS:
        assert np.allclose(ours(batch), [ours(b) for b in batch], rtol=0, atol=1e-12)


# Monte-Carlo error of a bootstrap percentile is about sqrt(q(1-q)/R)/f(x_q) ~= 2.7 sigma_boot/sqrt(R)
# for q = 2.5%. With R = 50k (ours) and 10k (rliable) the difference has SE ~= 0.03 sigma_boot, and
# sigma_boot < 0.12 for these uniform(0, 1) scores, so 0.02 is more than 5 standard errors.
@pytest.mark.parametrize("metric", stats.METRIC_NAMES)
def test_bootstrap_ci_matches_rliable(metric):
    scores = np.random.default_rng(11).uniform(size=(5, 3))
    ours = stats.aggregate_intervals({"a": scores}, reps=50_000, seed=1)["a"][metric]
    func = dict(zip(stats.METRIC_NAMES, (p[1] for p in PAIRS)))[metric]
    np.random.seed(1)  # rliable's StratifiedBootstrap draws from numpy's global generator
    points, cis = rly.get_interval_estimates({"a": scores}, lambda s: np.array([func(s)]), reps=10_000)
    assert abs(ours[0] - points["a"][0]) < 1e-12
    assert abs(ours[1] - cis["a"][0, 0]) < 0.02
    assert abs(ours[2] - cis["a"][1, 0]) < 0.02
    assert stats.stratified_bootstrap_ci(scores, stats._METRICS[metric], reps=50_000, seed=1) == ours


def test_single_task_ci_matches_rliable():
    scores = np.random.default_rng(12).uniform(size=(10, 1))
    ours = stats.stratified_bootstrap_ci(scores, stats.iqm, reps=50_000, seed=2)
    np.random.seed(2)
    _, cis = rly.get_interval_estimates(
        {"a": scores}, lambda s: np.array([rmetrics.aggregate_iqm(s)]), reps=10_000
    )
    assert abs(ours[1] - cis["a"][0, 0]) < 0.02 and abs(ours[2] - cis["a"][1, 0]) < 0.02


# P(X > Y) resamples take values on a lattice of step 1/(2 n_x n_y tasks) (= 1/240 here); with 2k rliable
# replicates the percentile SE is ~0.06 sigma_boot ~= 0.006, so 0.03 allows several SEs plus lattice steps.
def test_probability_of_improvement_ci_matches_rliable():
    rng = np.random.default_rng(13)
    x, y = rng.uniform(size=(5, 3)), rng.uniform(size=(8, 3)) + 0.1
    ours = stats.probability_of_improvement_ci(x, y, reps=50_000, seed=3)
    np.random.seed(3)
    points, cis = rly.get_interval_estimates({"a": [x, y]}, rmetrics.probability_of_improvement, reps=2_000)
    assert abs(ours[0] - points["a"]) < 1e-12
    assert abs(ours[1] - cis["a"][0]) < 0.03 and abs(ours[2] - cis["a"][1]) < 0.03


# Profiles take values k/N (N = runs * tasks = 30); bootstrap percentiles of such a lattice variable
# jump between neighbouring lattice points, so CIs may differ by a step or two; points are exact.
def test_performance_profile_matches_rliable():
    scores = np.random.default_rng(14).uniform(size=(10, 3))
    taus = np.linspace(0.0, 1.0, 11)
    ours = stats.performance_profile({"a": scores}, taus, reps=20_000, seed=4)["a"]
    np.random.seed(4)
    profiles, cis = rly.create_performance_profile({"a": scores}, taus, reps=2_000)
    assert np.abs(ours[0] - profiles["a"]).max() < 1e-12
    assert np.abs(ours[1] - cis["a"][0]).max() <= 2 / 30 + 1e-9
    assert np.abs(ours[2] - cis["a"][1]).max() <= 2 / 30 + 1e-9
    # strict '>': a score equal to tau does not count
    ties = stats.performance_profile({"a": np.array([[0.5, 1.0]])}, [0.5], reps=10)["a"][0]
    assert ties.tolist() == [0.5]


def test_ragged_scores():
    rng = np.random.default_rng(15)
    full = rng.normal(size=(4, 3))
    as_list = [full[:, j] for j in range(3)]
    for ours, _ in PAIRS:
        assert abs(ours(as_list) - ours(full)) < 1e-12
    assert stats.stratified_bootstrap_ci(as_list, reps=2_000) == stats.stratified_bootstrap_ci(
        full, reps=2_000
    )
    ragged = [np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([10.0]), np.array([0.0, 1.0])]
    assert stats.mean(ragged) == pytest.approx((3.0 + 10.0 + 0.5) / 3)
    assert stats.iqm(ragged) == pytest.approx(np.mean([1.0, 2.0, 3.0, 4.0]))  # sorted 0,1,1,2,3,4,5,10
    assert stats.optimality_gap(ragged) == pytest.approx(1 - np.mean([1, 1, 1, 1, 1, 1, 0, 1]))
    point, lo, hi = stats.per_task_iqm_ci(ragged, reps=2_000)
    assert point.tolist() == pytest.approx([3.0, 10.0, 0.5])
    assert lo[1] == hi[1] == 10.0  # a single run: no uncertainty from resampling
    for iv in stats.aggregate_intervals({"m": ragged}, reps=2_000)["m"].values():
        assert iv[1] <= iv[0] <= iv[2]
    assert 0.0 <= stats.probability_of_improvement_ci(ragged, full[:2], reps=2_000)[0] <= 1.0


def test_single_run_gives_degenerate_intervals():
    scores = np.array([[0.3, 0.9]])
    for iv in stats.aggregate_intervals({"m": scores}, reps=2_000)["m"].values():
        assert iv[0] == iv[1] == iv[2]


def test_chunking_does_not_change_results(monkeypatch):
    scores = np.random.default_rng(16).normal(size=(5, 3))
    expected = stats.stratified_bootstrap_ci(scores, stats.median, reps=3_000, seed=9)
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 7)
    assert stats.stratified_bootstrap_ci(scores, stats.median, reps=3_000, seed=9) == expected


def test_custom_and_partial_aggregates():
    scores = np.random.default_rng(17).uniform(size=(5, 2))
    gap = stats.stratified_bootstrap_ci(
        scores, functools.partial(stats.optimality_gap, gamma=0.5), reps=2_000
    )
    assert gap[0] == pytest.approx(stats.optimality_gap(scores, gamma=0.5))
    custom = stats.stratified_bootstrap_ci(scores, lambda x: x.max(axis=(1, 2)), reps=2_000)
    assert custom[0] == scores.max() and custom[2] == scores.max()
    with pytest.raises(ValueError, match="equal run counts"):
        stats.stratified_bootstrap_ci([np.ones(2), np.ones(3)], lambda x: x.max(axis=(1, 2)), reps=10)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        stats.iqm(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="Inf"):
        stats.stratified_bootstrap_ci(np.array([[1.0, np.inf]]), reps=10)
    with pytest.raises(ValueError, match="NaN"):
        stats.aggregate_intervals({"m": [np.array([np.nan])]}, reps=10)
    with pytest.raises(ValueError, match=r"2-D array.*shape \(5,\)"):
        stats.mean(np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        stats.median(np.ones((0, 3)))
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="reps"):
        stats.stratified_bootstrap_ci(np.ones((3, 2)), reps=0)
    with pytest.raises(ValueError, match="equal"):
        stats.normalise(1.0, 2.0, 2.0)


# Cases from the first committed version of this file, kept alongside the ones above.
def test_ragged_scores_use_every_run():
    tasks = [np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.5, 0.7])]
    assert stats.mean(tasks) == pytest.approx((np.mean(tasks[0]) + np.mean(tasks[1])) / 2)
    assert stats.iqm(tasks) == pytest.approx(rmetrics.aggregate_iqm(np.concatenate(tasks)[:, None]))


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


# rliable's aggregates map one (runs, tasks) matrix to a scalar; np.mean is one. Its CI must be the one
# of stats.mean (the same resamples: equal run counts make the two means equal up to rounding) and agree
# with rliable's within the Monte-Carlo tolerance of test_bootstrap_ci_matches_rliable.
def test_rliable_form_aggregates_are_accepted():
    scores = np.random.default_rng(11).uniform(size=(5, 3))
    ours = stats.stratified_bootstrap_ci(scores, np.mean, reps=50_000, seed=1)
    assert ours == pytest.approx(stats.stratified_bootstrap_ci(scores, stats.mean, reps=50_000, seed=1))
    np.random.seed(1)
    points, cis = rly.get_interval_estimates({"a": scores}, np.mean, reps=10_000)
    assert abs(ours[0] - points["a"]) < 1e-12
    assert abs(ours[1] - cis["a"][0, 0]) < 0.02 and abs(ours[2] - cis["a"][1, 0]) < 0.02
    # a one-element array, as in rliable's own examples (lambda s: np.array([metric(s)])), works too
    wrapped = stats.stratified_bootstrap_ci(scores, lambda s: np.array([np.median(s)]), reps=2_000, seed=4)
    assert wrapped == stats.stratified_bootstrap_ci(scores, np.median, reps=2_000, seed=4)
    assert wrapped[0] == np.median(scores)


def test_custom_aggregates_of_neither_form_are_refused_with_the_contract():
    scores = np.random.default_rng(18).uniform(size=(5, 3))
    with pytest.raises(ValueError, match=r"\(reps, runs, tasks\) array to \(reps,\).*shape \(9, 3\)"):
        stats.stratified_bootstrap_ci(scores, lambda x: x.mean(axis=-2), reps=10)  # per-task means
    with pytest.raises(ValueError, match=r"\(runs, tasks\) score matrix to a scalar.*ZeroDivisionError"):
        stats.stratified_bootstrap_ci(scores, lambda x: 1 / 0, reps=10)

"""Reliable statistics for RL benchmarks, after Agarwal et al. (2021).

Implements the aggregate metrics, stratified-bootstrap confidence intervals, probability of improvement
and performance profiles of R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021, with the exact
definitions of its reference library ``rliable`` 1.2.0, but vectorised over bootstrap replicates.

Scores are ``np.ndarray`` matrices of shape ``(num_runs, num_tasks)``. When tasks have different numbers
of runs, pass a ``list`` of per-task 1-D arrays instead ("ragged" scores; a list is always read as
one array per task). Then every task is resampled from its own runs, per-task means use each task's own
runs and the pooled metrics (IQM, optimality gap, profiles) weight every run equally; no run is dropped.
With equal run counts both forms give identical results. Internally ragged scores are padded with NaN,
which the kernels ignore; NaN or Inf in user input is rejected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gendm.core.errors import ConfigError

Scores = np.ndarray | Sequence[np.ndarray]
Interval = tuple[float, float, float]
METRIC_NAMES = ("IQM", "Mean", "Median", "Optimality Gap")

# Elements per resampled array in one chunk of replicates: 2e6 float64 = 16 MB, and the kernels hold a
# handful of such arrays at once, which keeps peak memory well below 200 MB.
_CHUNK_ELEMS = 2_000_000


@dataclass(frozen=True)
class _Padded:
    values: np.ndarray  # (max_runs, num_tasks); NaN below each task's own run count
    counts: np.ndarray  # (num_tasks,) runs per task

    @property
    def ragged(self) -> bool:
        return bool((self.counts != self.values.shape[0]).any())


# ----------------------------------------------------------------------------------------- validation
def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        n_nan = int(np.isnan(arr).sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ConfigError(
            f"{name} contains {n_nan} NaN and {int(bad.sum()) - n_nan} Inf value(s) (shape {arr.shape}, "
            f"first at index {first}); scores must be finite: fix or remove the runs that produced them."
        )


def _padded(scores: Scores, name: str = "scores") -> _Padded:
    """Validates a score matrix or a list of per-task run arrays and returns it NaN-padded."""
    if not isinstance(scores, list | tuple):
        arr = np.asarray(scores, dtype=float)
        if arr.ndim != 2:
            raise ConfigError(
                f"{name} must be a 2-D array of shape (num_runs, num_tasks), got ndim={arr.ndim} with shape "
                f"{arr.shape}; for a single task use scores[:, None], for unequal run counts pass a list "
                "of per-task 1-D arrays."
            )
        if arr.size == 0:
            raise ConfigError(f"{name} is empty (shape {arr.shape}); it needs at least one run and one task.")
        _check_finite(arr, name)
        return _Padded(arr, np.full(arr.shape[1], arr.shape[0]))
    if len(scores) == 0:
        raise ConfigError(f"{name} is an empty list; pass one 1-D array of run scores per task.")
    columns = [np.asarray(c, dtype=float) for c in scores]
    for j, col in enumerate(columns):
        if col.ndim != 1 or col.size == 0:
            raise ConfigError(
                f"{name}[{j}] must be a non-empty 1-D array of the runs of task {j}, got shape {col.shape}."
            )
        _check_finite(col, f"{name}[{j}]")
    counts = np.array([c.size for c in columns])
    values = np.full((int(counts.max()), len(columns)), np.nan)
    for j, col in enumerate(columns):
        values[: col.size, j] = col
    return _Padded(values, counts)


def _batch(scores: Scores | np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Returns (x of shape (reps, runs, tasks), run counts, whether the input had a replicate axis)."""
    if isinstance(scores, np.ndarray) and scores.ndim == 3:
        if scores.size == 0:
            raise ConfigError(f"scores is empty (shape {scores.shape}).")
        x = scores.astype(float, copy=False)
        _check_finite(x, "scores")
        return x, np.full(x.shape[2], x.shape[1]), True
    p = _padded(scores)
    return p.values[None], p.counts, False


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ConfigError(f"reps must be a positive integer, got {reps!r}.")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}; e.g. 0.95 for 95% intervals.")


# ------------------------------------------------------------------------------------------- kernels
# Kernels take x of shape (reps, runs, tasks), NaN-padded when tasks have fewer runs than `runs`, and
# the per-task run counts; they return one value (or one vector) per replicate.
def _full(x: np.ndarray, counts: np.ndarray) -> bool:
    return bool((counts == x.shape[1]).all())


def _task_means(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) if _full(x, counts) else np.nansum(x, axis=1) / counts


def _k_iqm(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # Same arithmetic as scipy.stats.trim_mean(axis=None); NaN padding sorts after every valid entry,
    # so the kept order statistics are valid entries only.
    flat = x.reshape(x.shape[0], -1)
    nobs = int(counts.sum())
    low = int(0.25 * nobs)
    high = nobs - low
    part = np.partition(flat, (low, high - 1), axis=-1)
    return part[:, low:high].mean(axis=-1)


def _k_mean(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return _task_means(x, counts).mean(axis=-1)


def _k_median(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.median(_task_means(x, counts), axis=-1)


def _k_optimality_gap(x: np.ndarray, counts: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    clipped = np.minimum(x, gamma)
    if _full(x, counts):
        return gamma - clipped.mean(axis=(1, 2))
    return gamma - np.nansum(clipped, axis=(1, 2)) / counts.sum()


def _k_task_iqm(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """IQM over runs of every task separately: (reps, runs, tasks) -> (reps, tasks)."""
    srt = np.sort(x, axis=1)  # NaN padding sorts last
    low = (0.25 * counts).astype(int)
    high = counts - low
    rows = np.arange(x.shape[1])[:, None]
    keep = (rows >= low) & (rows < high)
    return np.where(keep, srt, 0.0).sum(axis=1) / (high - low)


def _k_profile(x: np.ndarray, counts: np.ndarray, taus: np.ndarray) -> np.ndarray:
    # NaN > tau is False, so padding never counts as a run above tau.
    above = (x[..., None] > taus).sum(axis=(1, 2))
    return above / counts.sum()


def _k_poi(x: np.ndarray, cx: np.ndarray, y: np.ndarray, cy: np.ndarray) -> np.ndarray:
    # Mann-Whitney U counting (ties count 1/2) divided by n_x * n_y, per task, then averaged over tasks.
    xs, ys = x[:, :, None, :], y[:, None, :, :]
    wins = (xs > ys).sum(axis=(1, 2)) + 0.5 * (xs == ys).sum(axis=(1, 2))
    return (wins / (cx * cy)).mean(axis=-1)


# ------------------------------------------------------------------------------------------ aggregates
def iqm(scores: Scores) -> float | np.ndarray:
    """Interquartile mean over all runs and tasks: 25% trimmed mean (Agarwal et al., 2021).

    Accepts a (runs, tasks) matrix, a list of per-task arrays, or a (reps, runs, tasks) batch, for which
    it returns one value per replicate.
    """
    x, counts, batched = _batch(scores)
    out = _k_iqm(x, counts)
    return out if batched else float(out[0])


def mean(scores: Scores) -> float | np.ndarray:
    """Mean over tasks of the per-task mean scores (Agarwal et al., 2021)."""
    x, counts, batched = _batch(scores)
    out = _k_mean(x, counts)
    return out if batched else float(out[0])


def median(scores: Scores) -> float | np.ndarray:
    """Median over tasks of the per-task mean scores (Agarwal et al., 2021)."""
    x, counts, batched = _batch(scores)
    out = _k_median(x, counts)
    return out if batched else float(out[0])


def optimality_gap(scores: Scores, gamma: float = 1.0) -> float | np.ndarray:
    """``gamma`` minus the mean over all runs and tasks of ``min(score, gamma)`` (Agarwal et al., 2021)."""
    x, counts, batched = _batch(scores)
    out = _k_optimality_gap(x, counts, gamma)
    return out if batched else float(out[0])


_KERNELS: dict[Callable, Callable] = {
    iqm: _k_iqm,
    mean: _k_mean,
    median: _k_median,
    optimality_gap: _k_optimality_gap,
}
_METRICS: dict[str, Callable] = dict(zip(METRIC_NAMES, (iqm, mean, median, optimality_gap)))


def _kernel_for(aggregate: Callable, padded: _Padded) -> Callable:
    if aggregate in _KERNELS:
        return _KERNELS[aggregate]
    if isinstance(aggregate, functools.partial) and aggregate.func in _KERNELS and not aggregate.args:
        return functools.partial(_KERNELS[aggregate.func], **aggregate.keywords)
    if padded.ragged:
        raise ConfigError(
            "custom aggregates need equal run counts per task (got runs per task "
            f"{padded.counts.tolist()}); use iqm/mean/median/optimality_gap or pass a full matrix."
        )
    return _custom_kernel(aggregate, padded.values)


def _custom_kernel(aggregate: Callable, values: np.ndarray) -> Callable:
    """A kernel for a user's aggregate in either form, told apart by what it returns.

    Batched: ``(reps, runs, tasks) -> (reps,)``. rliable's form: ``(runs, tasks) -> scalar`` (as
    ``rliable.library.get_interval_estimates`` calls it, e.g. ``np.mean``), applied to each replicate.
    The probe batch has more replicates than runs or tasks, so only a function that keeps the replicate
    axis can return one value per replicate.
    """
    name = getattr(aggregate, "__name__", repr(aggregate))
    k = sum(values.shape) + 1
    probe = np.repeat(values[None], k, axis=0)  # copies: the user's function may work in place
    try:
        batched = np.shape(aggregate(probe))
    except Exception as e:  # a function written for one (runs, tasks) matrix may refuse a 3-D array
        batched = f"an error ({type(e).__name__}: {e})"
    if batched == (k,):
        return lambda x, counts: _checked(aggregate(x), x.shape[0], name)
    try:
        single = np.shape(aggregate(values.copy()))
    except Exception as e:
        single = f"an error ({type(e).__name__}: {e})"
    if single in ((), (1,)):
        return lambda x, counts: np.array([np.asarray(aggregate(m), dtype=float).item() for m in x])
    shape = values.shape
    raise ConfigError(
        f"the custom aggregate {name} must map a (reps, runs, tasks) array to (reps,) values, one per "
        "bootstrap replicate, or a (runs, tasks) score matrix to a scalar (rliable's form, e.g. np.mean); "
        f"on a {(k, *shape)} array it gave {_said(batched)}, on the {shape} matrix {_said(single)}."
    )


def _said(result: tuple | str) -> str:
    return result if isinstance(result, str) else f"shape {result}"


def _checked(out: np.ndarray, reps: int, name: str) -> np.ndarray:
    out = np.asarray(out, dtype=float)
    if out.shape != (reps,):
        raise ConfigError(
            f"the custom aggregate {name} must map a (reps, runs, tasks) array to (reps,) values; "
            f"for {reps} replicates it returned shape {out.shape}."
        )
    return out


# ------------------------------------------------------------------------------------------- bootstrap
def _resample(p: _Padded, rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` stratified resamples: within every task, draw that task's runs with replacement."""
    runs, tasks = p.values.shape
    idx = rng.integers(0, p.counts, size=(size, runs, tasks))
    out = p.values[idx, np.arange(tasks)]
    if p.ragged:
        out[:, np.arange(runs)[:, None] >= p.counts] = np.nan
    return out


def _chunks(reps: int, elems_per_rep: int) -> list[int]:
    chunk = max(1, _CHUNK_ELEMS // max(1, elems_per_rep))
    return [min(chunk, reps - start) for start in range(0, reps, chunk)]


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    # Percentile method with numpy's default linear interpolation, as arch's conf_int used by rliable.
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(values, [alpha, 100.0 - alpha], axis=0)
    return lo, hi


def _scalar(v: np.ndarray) -> float | np.ndarray:
    return float(v) if np.ndim(v) == 0 else v


def _bootstrap(
    p: _Padded, kernels: Sequence[Callable], reps: int, confidence: float, seed: int, extra_elems: int = 1
) -> list[tuple]:
    """Point estimate and percentile CI of every kernel, all computed on the same resamples."""
    _check_bootstrap_args(reps, confidence)
    rng = np.random.default_rng(seed)
    points = [k(p.values[None], p.counts)[0] for k in kernels]
    parts: list[list[np.ndarray]] = [[] for _ in kernels]
    for size in _chunks(reps, p.values.size * extra_elems):
        x = _resample(p, rng, size)
        for part, kernel in zip(parts, kernels):
            part.append(kernel(x, p.counts))
    out = []
    for point, part in zip(points, parts):
        lo, hi = _percentiles(np.concatenate(part), confidence)
        out.append((_scalar(point), _scalar(lo), _scalar(hi)))
    return out


def stratified_bootstrap_ci(
    scores: Scores,
    aggregate: Callable = iqm,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Point estimate and percentile stratified-bootstrap CI of ``aggregate`` (Agarwal et al., 2021).

    Every replicate resamples runs with replacement independently within each task, as rliable's
    ``StratifiedBootstrap``. ``aggregate`` is one of :func:`iqm`, :func:`mean`, :func:`median`,
    :func:`optimality_gap` (or a ``functools.partial`` of it), or any function mapping a
    (reps, runs, tasks) array to one value per replicate, or, as rliable's aggregates, a (runs, tasks)
    matrix to a scalar (``np.mean``; applied to each replicate, so slower). Returns ``(point, lo, hi)``.
    """
    p = _padded(scores)
    return _bootstrap(p, [_kernel_for(aggregate, p)], reps, confidence, seed)[0]


def per_task_iqm_ci(
    scores: Scores, reps: int = 50_000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs of each task with stratified-bootstrap CIs: arrays ``(point, lo, hi)`` of length tasks.

    With a single run on a task its interval degenerates to ``lo == hi == point``.
    """
    p = _padded(scores)
    point, lo, hi = _bootstrap(p, [_k_task_iqm], reps, confidence, seed)[0]
    return np.atleast_1d(point), np.atleast_1d(lo), np.atleast_1d(hi)


def aggregate_intervals(
    score_dict: Mapping[str, Scores], reps: int = 50_000, seed: int = 0, confidence: float = 0.95
) -> dict[str, dict[str, Interval]]:
    """IQM, Mean, Median and Optimality Gap with stratified-bootstrap CIs for every method.

    Equivalent to rliable's ``get_interval_estimates`` with the four aggregates of Agarwal et al. (2021).
    Every method uses the same ``seed``, so its intervals do not depend on the other methods in the dict.
    """
    out: dict[str, dict[str, Interval]] = {}
    for method, scores in score_dict.items():
        p = _padded(scores, name=f"scores of {method!r}")
        kernels = [_KERNELS[_METRICS[name]] for name in METRIC_NAMES]
        out[method] = dict(zip(METRIC_NAMES, _bootstrap(p, kernels, reps, confidence, seed)))
    return out


# ------------------------------------------------------------------------------ probability of improvement
def _poi_inputs(x: Scores, y: Scores) -> tuple[_Padded, _Padded]:
    px, py = _padded(x, "x"), _padded(y, "y")
    if px.counts.size != py.counts.size:
        raise ConfigError(
            f"x and y must cover the same tasks in the same order: x has {px.counts.size} task(s) "
            f"(shape {px.values.shape}), y has {py.counts.size} (shape {py.values.shape})."
        )
    return px, py


def probability_of_improvement(x: Scores, y: Scores) -> float:
    """Average over tasks of P(X > Y), ties counting 1/2 (Mann-Whitney U / n_x n_y); Agarwal et al. 2021."""
    px, py = _poi_inputs(x, y)
    return float(_k_poi(px.values[None], px.counts, py.values[None], py.counts)[0])


def probability_of_improvement_ci(
    x: Scores, y: Scores, reps: int = 50_000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Probability of improvement of X over Y with a percentile CI.

    X and Y are resampled independently, each stratified over tasks, like rliable's
    ``StratifiedIndependentBootstrap`` (Agarwal et al., 2021). Returns ``(point, lo, hi)``.
    """
    _check_bootstrap_args(reps, confidence)
    px, py = _poi_inputs(x, y)
    rng = np.random.default_rng(seed)
    point = probability_of_improvement(x, y)
    elems = px.values.shape[0] * py.values.shape[0] * px.counts.size
    parts = []
    for size in _chunks(reps, elems):
        xs, ys = _resample(px, rng, size), _resample(py, rng, size)
        parts.append(_k_poi(xs, px.counts, ys, py.counts))
    lo, hi = _percentiles(np.concatenate(parts), confidence)
    return point, float(lo), float(hi)


# ---------------------------------------------------------------------------------- performance profiles
def performance_profile(
    score_dict: Mapping[str, Scores],
    taus: np.ndarray | Sequence[float],
    reps: int = 2_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score distributions: fraction of all runs with score strictly above each tau, with stratified CIs.

    Matches rliable's ``create_performance_profile(use_score_distribution=True)`` (Agarwal et al., 2021).
    Returns ``{method: (profile, lo, hi)}``, each an array of length ``len(taus)``.
    """
    taus_arr = np.asarray(taus, dtype=float)
    if taus_arr.ndim != 1 or taus_arr.size == 0:
        raise ConfigError(f"taus must be a non-empty 1-D array of thresholds, got shape {taus_arr.shape}.")
    _check_finite(taus_arr, "taus")
    kernel = functools.partial(_k_profile, taus=taus_arr)
    out = {}
    for method, scores in score_dict.items():
        p = _padded(scores, name=f"scores of {method!r}")
        point, lo, hi = _bootstrap(p, [kernel], reps, confidence, seed, extra_elems=taus_arr.size)[0]
        out[method] = (point, lo, hi)
    return out


# ----------------------------------------------------------------------------------------- normalisation
def normalise(returns: float | np.ndarray, random_ref: float, expert_ref: float) -> float | np.ndarray:
    """(returns - random) / (expert - random): 0 is the random policy, 1 the expert reference."""
    if not (np.isfinite(random_ref) and np.isfinite(expert_ref)):
        raise ConfigError(f"references must be finite, got random={random_ref!r}, expert={expert_ref!r}.")
    if expert_ref == random_ref:
        raise ConfigError(
            f"expert and random references are equal ({expert_ref!r}), so scores cannot be normalised; "
            "check the reference returns for this task."
        )
    out = (np.asarray(returns, dtype=float) - random_ref) / (expert_ref - random_ref)
    return float(out) if out.ndim == 0 else out

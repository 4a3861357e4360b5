"""Benchmark plots in the style of rliable (Agarwal et al., 2021), saved as PNG files.

Figures are built with the object-oriented API on an explicit Agg canvas, never through pyplot, so no
global figure state exists to leak between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gendm.bench.stats import METRIC_NAMES, per_task_iqm_ci

DPI = 110
Interval = tuple[float, float, float]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``fig`` as a PNG; ``metadata`` goes into its text chunks (e.g. ``Description``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata=metadata)
    fig.clear()
    return path


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    """One stable colour per method, in the given order."""
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _no_data(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def plot_learning_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
    reps: int = 2_000,
    seed: int = 0,
    xlabel: str = "environment steps",
) -> Path:
    """IQM over seeds of each method's returns at every step, with a 95% bootstrap CI band.

    ``curves[method] = (steps, returns)`` with ``returns`` of shape ``(num_seeds, len(steps))``.
    """
    fig = _figure(6.4, 4.0)
    if not curves:
        _no_data(fig, "no learning curves")
        return _save(fig, path)
    ax = fig.add_subplot()
    colors = method_colors(list(curves))
    for method, (steps, returns) in curves.items():
        steps_arr, ret = np.asarray(steps, dtype=float), np.asarray(returns, dtype=float)
        if ret.ndim != 2 or ret.shape[1] != steps_arr.size:
            raise ValueError(
                f"returns of {method!r} must have shape (num_seeds, len(steps)) = (*, {steps_arr.size}), "
                f"got {ret.shape}."
            )
        point, lo, hi = per_task_iqm_ci(ret, reps=reps, seed=seed)
        marker = "o" if steps_arr.size == 1 else None
        ax.plot(steps_arr, point, color=colors[method], marker=marker, label=f"{method} (n={ret.shape[0]})")
        ax.fill_between(steps_arr, lo, hi, color=colors[method], alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("evaluation return (IQM over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    axes = f"x: {ax.get_xlabel()}; y: {ax.get_ylabel()}"  # the drawn labels, readable from the file
    return _save(fig, path, {"Title": title, "Description": axes})


def _interval_rows(ax, rows: Sequence[tuple[str, Interval]], colors: Sequence) -> None:
    for i, ((_, (point, lo, hi)), color) in enumerate(zip(rows, colors)):
        ax.barh(i, hi - lo, left=lo, height=0.6, color=color, alpha=0.7)
        ax.vlines(point, i - 0.32, i + 0.32, color="black", linewidth=1.5)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.grid(axis="x", alpha=0.3)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def plot_aggregate_intervals(
    intervals: Mapping[str, Mapping[str, Interval]],
    path: str | Path,
    metrics: Sequence[str] = METRIC_NAMES,
) -> Path:
    """rliable-style interval plot: one panel per metric, one row per method (bar = CI, tick = point)."""
    methods = list(intervals)
    fig = _figure(3.0 * len(metrics), 0.45 * max(len(methods), 1) + 1.3)
    if not methods:
        _no_data(fig, "no aggregates")
        return _save(fig, path)
    colors = method_colors(methods)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        rows = [(m, intervals[m][metric]) for m in methods]
        _interval_rows(ax, rows, [colors[m] for m in methods])
        ax.set_title(metric)
    axes[0].invert_yaxis()  # first method on top
    fig.supxlabel("normalised score")
    return _save(fig, path)


def plot_probability_of_improvement(pairs: Mapping[tuple[str, str], Interval], path: str | Path) -> Path:
    """Horizontal CIs of P(X > Y) on [0, 1] with a dashed line at 0.5 (no difference)."""
    fig = _figure(6.0, 0.4 * max(len(pairs), 1) + 1.2)
    if not pairs:
        _no_data(fig, "no comparable pairs of methods")
        return _save(fig, path)
    ax = fig.add_subplot()
    rows = [(f"P({x} > {y})", interval) for (x, y), interval in pairs.items()]
    _interval_rows(ax, rows, ["tab:blue"] * len(rows))
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0.0, 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("probability of improvement")
    return _save(fig, path)


def plot_performance_profiles(
    profiles: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    taus: np.ndarray | Sequence[float],
    path: str | Path,
) -> Path:
    """Score distributions: fraction of runs with normalised score > tau, with CI bands."""
    fig = _figure(6.4, 4.0)
    if not profiles:
        _no_data(fig, "no performance profiles")
        return _save(fig, path)
    ax = fig.add_subplot()
    colors = method_colors(list(profiles))
    taus_arr = np.asarray(taus, dtype=float)
    for method, (profile, lo, hi) in profiles.items():
        ax.plot(taus_arr, profile, color=colors[method], label=method)
        ax.fill_between(taus_arr, lo, hi, color=colors[method], alpha=0.2, linewidth=0)
    ax.set_xlabel(r"normalised score $\tau$")
    ax.set_ylabel(r"fraction of runs with score $> \tau$")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)

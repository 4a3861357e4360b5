"""Run records prepared for the sections: scored and failed runs, grouping, normalisation, curves
aligned over seeds, budgets."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from gendm.bench import stats
from gendm.bench.report.document import fmt
from gendm.bench.store import RunRecord


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "task"


def split_runs(runs: list[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """Scorable runs, and the others with the reason they are not scored."""
    done, failed = [], []
    for run in runs:
        if run.status != "done":
            failed.append((run, run.error or f"status {run.status!r}"))
        elif run.final_return is None or not math.isfinite(run.final_return):
            failed.append((run, run.error or f"status 'done' but final return is {run.final_return!r}"))
        else:
            done.append(run)
    seen: dict[tuple, RunRecord] = {}
    for run in done:
        key = (run.method, run.task, run.seed)
        if key in seen:
            raise ValueError(
                f"two completed runs for method={run.method!r}, task={run.task!r}, seed={run.seed}; "
                "pass one record per (method, task, seed), e.g. the latest attempt."
            )
        seen[key] = run
    return done, failed


def group_runs(runs: list[RunRecord]) -> dict[str, dict[str, list[RunRecord]]]:
    """{method: {task: runs sorted by seed}}, methods and tasks sorted."""
    grouped: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.method][run.task].append(run)
    return {
        m: {t: sorted(grouped[m][t], key=lambda r: r.seed) for t in sorted(grouped[m])}
        for m in sorted(grouped)
    }


def normalisation(
    runs: list[RunRecord], references: dict[str, tuple[float, float] | None]
) -> tuple[dict[str, dict], list[str]]:
    finals: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        finals[run.task].append(float(run.final_return))
    norm, notes = {}, []
    for task in sorted(finals):
        ref = references.get(task)
        if ref is not None:
            random_ref, expert_ref = (float(v) for v in ref)
            stats.normalise(0.0, random_ref, expert_ref)  # validates the pair
            norm[task] = {"random": random_ref, "expert": expert_ref, "source": "reference"}
            continue
        lo, hi = min(finals[task]), max(finals[task])
        if hi == lo:
            notes.append(f"`{task}`: all final returns equal {fmt(lo)}; normalised as return - {fmt(lo)}.")
            hi = lo + 1.0
        norm[task] = {"random": lo, "expert": hi, "source": "observed"}
    return norm, notes


def normalised(value: float | np.ndarray, entry: dict) -> float | np.ndarray:
    return stats.normalise(value, entry["random"], entry["expert"])


def score_matrix(per_task: list[list[float]]) -> np.ndarray | list[np.ndarray]:
    """A (runs, tasks) matrix when counts are equal, else a list of per-task arrays (nothing dropped)."""
    if len({len(v) for v in per_task}) == 1:
        return np.array(per_task, dtype=float).T
    return [np.asarray(v, dtype=float) for v in per_task]


def clean_curve(run: RunRecord) -> list[tuple[float, float]]:
    pts = [(float(s), float(r)) for s, r in run.curve if math.isfinite(r)]
    return sorted(dict(pts).items())


def aligned_curves(runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(steps, returns (seeds, steps), note) on the eval steps common to all runs, else interpolated."""
    curves = [c for c in (clean_curve(r) for r in runs) if c]
    if not curves:
        return None
    common = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
    start, end = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    if len(common) < 2 and end > start:
        steps = np.linspace(start, end, 50)
        rets = [np.interp(steps, [s for s, _ in c], [r for _, r in c]) for c in curves]
        return steps, np.array(rets), "seeds evaluated at different steps: curves linearly interpolated"
    if not common:
        return None
    note = None
    if any(len(c) != len(common) for c in curves) or len(curves) < len(runs):
        note = "only evaluation steps shared by all seeds are plotted"
    return np.array(common), np.array([[dict(c)[s] for s in common] for c in curves]), note


def budget_value(run: RunRecord, budget: int) -> tuple[float | None, str | None]:
    curve = clean_curve(run)
    if not curve or curve[-1][0] < budget:
        return None, "curve does not reach the budget"
    before = [r for s, r in curve if s <= budget]
    if not before:
        return None, "no evaluation at or before the budget"
    return before[-1], None


def default_budgets(runs: list[RunRecord]) -> list[int]:
    step_sets = [{s for s, _ in clean_curve(r)} for r in runs]
    step_sets = [s for s in step_sets if s]
    if not step_sets:
        return []
    common = sorted(set.intersection(*step_sets))
    if len(common) <= 4:
        return [int(s) for s in common]
    idx = np.unique(np.round(np.linspace(0, len(common) - 1, 4)).astype(int))
    return [int(common[i]) for i in idx]


def interval_dict(interval: tuple) -> dict[str, float]:
    return {"point": float(interval[0]), "lo": float(interval[1]), "hi": float(interval[2])}


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0

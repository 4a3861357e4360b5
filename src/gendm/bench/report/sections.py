"""The report's sections, in order: learning curves, last-checkpoint scores, aggregates,
probability of improvement, performance profiles, sample efficiency, compute, failed runs, warnings.
Each adds its blocks to the document and its numbers to the summary."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gendm.bench import stats
from gendm.bench.report.document import Document, fmt, fmt_ci, one_line
from gendm.bench.report.runs import (
    aligned_curves,
    budget_value,
    default_budgets,
    interval_dict,
    mean_std,
    normalised,
    score_matrix,
    slug,
)
from gendm.bench.store import RunRecord

OBSERVED_NOTE = "observed min-max, not a reference"
# What a curve's steps count, by the runs' ``step_unit`` (summary.json): axis label, budget column.
STEP_LABELS = {
    "env_steps": ("environment steps", "Env-step budget"),
    "grad_steps": ("gradient steps", "Gradient-step budget"),
    "iterations": ("fine-tuning iterations", "Iteration budget"),
}


def step_label(units: set[str], mixed: str = "steps") -> str:
    """The x-axis label of curves counted in ``units``; several units (runs that disagree) are listed
    after ``mixed``."""
    labels = [STEP_LABELS.get(u, (u.replace("_", " "),))[0] for u in sorted(units)]
    return labels[0] if len(labels) == 1 else f"{mixed} (" + " / ".join(labels) + ")"


@dataclass
class Context:
    """What every section reads (grouped runs, normalisation, the plots directory, bootstrap settings)
    and writes to (the document and the summary)."""

    grouped: dict[str, dict[str, list[RunRecord]]]
    norm: dict[str, dict]
    plots: Path
    reps: int
    seed: int
    doc: Document
    summary: dict

    @property
    def methods(self) -> list[str]:
        return list(self.grouped)

    @property
    def tasks(self) -> list[str]:
        return sorted({t for per_task in self.grouped.values() for t in per_task})

    def norm_scores(self, method: str) -> np.ndarray | list[np.ndarray]:
        per_task = self.grouped[method]
        return score_matrix(
            [[normalised(r.final_return, self.norm[t]) for r in runs] for t, runs in per_task.items()]
        )


def section_curves(ctx: Context, plot_curves) -> None:
    ctx.doc.heading(2, "Learning curves")
    ctx.doc.para(
        "IQM over seeds of the mean evaluation return at each evaluation step, with 95% bootstrap "
        "confidence bands (raw returns)."
    )
    used: set[str] = set()
    for task in ctx.tasks:
        curves, missing, notes = {}, [], []
        for method in ctx.methods:
            aligned = aligned_curves(ctx.grouped[method].get(task, []))
            if aligned is not None:
                curves[method] = aligned[:2]
                if aligned[2]:
                    notes.append(f"{method}: {aligned[2]}.")
            elif task in ctx.grouped[method]:
                missing.append(method)
        name = slug(task)
        while name in used:
            name += "_"
        used.add(name)
        runs = [r for method in ctx.methods for r in ctx.grouped[method].get(task, [])]
        units = {r.step_unit for r in runs}
        xlabel = step_label(units)
        if len(units) > 1:
            notes.append(
                f"Runs count their steps in different units ({xlabel}): the curves do not share an axis."
            )
        if runs and all(len(r.curve) == 1 and r.curve[0][0] == 0 for r in runs):
            notes.append("Evaluation only (frozen models, e.g. prompting agents): one point at step 0.")
        path = plot_curves(
            curves, ctx.plots / f"curves_{name}.png", title=task, reps=min(ctx.reps, 2000), xlabel=xlabel
        )
        ctx.summary["curves"][task] = {
            "step_unit": sorted(units) if len(units) > 1 else next(iter(units)),
            "x_label": xlabel,
            "plot": path.relative_to(ctx.plots.parent).as_posix(),
        }
        ctx.doc.heading(3, task)
        ctx.doc.image(path, f"learning curves on {task} against {xlabel}")
        if missing:
            notes.append(f"No usable learning curve for: {', '.join(missing)}.")
        ctx.doc.bullets(notes)


def section_scores(ctx: Context) -> None:
    doc, scores = ctx.doc, ctx.summary["scores"]
    doc.heading(2, "Last-checkpoint scores (raw returns)")
    doc.para(f"IQM over seeds [95% stratified-bootstrap CI] of the final return, {ctx.reps:,} replicates.")
    for method, per_task in ctx.grouped.items():
        finals = [[r.final_return for r in runs] for runs in per_task.values()]
        point, lo, hi = stats.per_task_iqm_ci(score_matrix(finals), reps=ctx.reps, seed=ctx.seed)
        scores[method] = {
            task: {
                "final_returns": [float(v) for v in vals],
                "iqm": float(point[j]),
                "ci": [float(lo[j]), float(hi[j])],
                "seeds": [int(r.seed) for r in runs],
            }
            for j, ((task, runs), vals) in enumerate(zip(per_task.items(), finals))
        }
    rows = []
    for task in ctx.tasks:
        row = [task]
        for method in ctx.methods:
            s = scores[method].get(task)
            row.append("—" if s is None else fmt_ci(s["iqm"], *s["ci"], n=len(s["final_returns"])))
        rows.append(row)
    doc.table(["Task", *ctx.methods], rows)
    details = [
        [
            r.method,
            r.task,
            str(r.seed),
            fmt(r.final_return, 6),
            str(r.env_steps),
            str(r.grad_steps),
            fmt(r.wall_s, 4),
        ]
        for per_task in ctx.grouped.values()
        for runs in per_task.values()
        for r in runs
    ]
    doc.table(
        ["Method", "Task", "Seed", "Final return", "Env steps", "Grad steps", "Wall-clock s"],
        details,
        details="Per-seed final returns",
    )


def section_aggregate(ctx: Context, norm_notes: list[str], plot_intervals) -> None:
    doc = ctx.doc
    doc.heading(2, "Aggregate performance (normalised scores)")
    doc.para("Normalised score = (return - random) / (expert - random), per task:")
    doc.table(
        ["Task", "Random", "Expert", "Source"],
        [
            [
                t,
                fmt(e["random"], 6),
                fmt(e["expert"], 6),
                "reference" if e["source"] == "reference" else OBSERVED_NOTE,
            ]
            for t, e in ctx.norm.items()
        ],
    )
    observed = [t for t, e in ctx.norm.items() if e["source"] == "observed"]
    if observed:
        doc.para(
            f"No reference returns for {', '.join(f'`{t}`' for t in observed)}: these tasks are normalised "
            f"by the minimum and maximum final return observed over all runs of the task ({OBSERVED_NOTE}), "
            "so their normalised scores only compare the methods of this report with each other."
        )
    doc.bullets(norm_notes)
    intervals = stats.aggregate_intervals(
        {m: ctx.norm_scores(m) for m in ctx.methods}, reps=ctx.reps, seed=ctx.seed
    )
    rows = []
    for method in ctx.methods:
        per_task = ctx.grouped[method]
        ctx.summary["aggregate"][method] = {
            "tasks": list(per_task),
            **{name: interval_dict(iv) for name, iv in intervals[method].items()},
        }
        counts = {t: len(runs) for t, runs in per_task.items()}
        n = next(iter(counts.values())) if len(set(counts.values())) == 1 else None
        runs_cell = str(n) if n is not None else ", ".join(f"{t}: {c}" for t, c in counts.items())
        rows.append(
            [method, ", ".join(per_task), runs_cell]
            + [fmt_ci(*iv, n=1 if n == 1 else None, norm=True) for iv in intervals[method].values()]
        )
    doc.table(["Method", "Tasks covered", "Runs per task", *stats.METRIC_NAMES], rows)
    task_sets = {tuple(ctx.grouped[m]) for m in ctx.methods}
    if len(task_sets) > 1:
        doc.para(
            "Methods were evaluated on different task sets; each aggregate covers only the tasks listed for "
            "its method, so aggregates of methods with different task sets are not directly comparable."
        )
    if any(len({len(r) for r in ctx.grouped[m].values()}) > 1 for m in ctx.methods):
        doc.para(
            "Some tasks have more runs than others. All runs are used: the bootstrap resamples each task "
            "from its own runs, IQM and optimality gap pool all runs, mean and median use per-task means."
        )
    doc.para("Optimality gap: 1 - mean of min(score, 1); lower is better.")
    doc.image(plot_intervals(intervals, ctx.plots / "aggregate_intervals.png"), "aggregate intervals")


def section_poi(ctx: Context, plot_poi) -> None:
    doc = ctx.doc
    doc.heading(2, "Probability of improvement")
    doc.para(
        "P(X > Y): probability that a run of X on a task scores higher than a run of Y on the same task "
        "(ties count 1/2), averaged over tasks, with 95% CIs from independent stratified resampling of both."
    )
    pairs, skipped = {}, []
    for x, y in itertools.permutations(ctx.methods, 2):
        if list(ctx.grouped[x]) != list(ctx.grouped[y]):
            skipped.append(f"{x} vs {y}")
            continue
        iv = stats.probability_of_improvement_ci(
            ctx.norm_scores(x), ctx.norm_scores(y), reps=ctx.reps, seed=ctx.seed
        )
        pairs[(x, y)] = iv
        ctx.summary["probability_of_improvement"].append({"x": x, "y": y, **interval_dict(iv)})
    if pairs:
        doc.table(
            ["X", "Y", "P(X > Y) [95% CI]"],
            [[x, y, fmt_ci(*iv, norm=True)] for (x, y), iv in pairs.items()],
        )
        doc.image(plot_poi(pairs, ctx.plots / "probability_of_improvement.png"), "probability of improvement")
    elif len(ctx.methods) < 2:
        doc.para("Needs at least two methods.")
    if skipped:
        doc.para(f"Skipped (methods do not share all tasks): {'; '.join(skipped)}.")


def section_profiles(ctx: Context, plot_profiles) -> None:
    doc = ctx.doc
    doc.heading(2, "Performance profiles")
    score_dict = {m: ctx.norm_scores(m) for m in ctx.methods}
    values = np.concatenate(
        [np.ravel(s) if isinstance(s, np.ndarray) else np.concatenate(s) for s in score_dict.values()]
    )
    taus = np.linspace(min(0.0, float(values.min())), max(1.0, float(values.max())), 101)
    profiles = stats.performance_profile(score_dict, taus, reps=ctx.reps, seed=ctx.seed)
    doc.para(
        "Fraction of all runs (over tasks) whose normalised final score exceeds τ, with 95% stratified-"
        f"bootstrap bands; τ spans [{taus[0]:.3f}, {taus[-1]:.3f}]."
    )
    doc.image(plot_profiles(profiles, taus, ctx.plots / "performance_profiles.png"), "performance profiles")


def section_sample_efficiency(ctx: Context, budgets: list[int] | None) -> None:
    doc = ctx.doc
    doc.heading(2, "Sample efficiency")
    all_runs = [r for per_task in ctx.grouped.values() for runs in per_task.values() for r in runs]
    if budgets is None:
        budgets = default_budgets(all_runs)
        origin = "evaluation steps common to all runs"
    else:
        origin = "requested budgets"
    if not budgets:
        doc.para("No evaluation step is common to all runs; pass explicit budgets to get this table.")
        return
    units = {r.step_unit for r in all_runs}
    counted = step_label(units, mixed="each run's own steps")
    header = STEP_LABELS.get(next(iter(units)), ("", "Step budget"))[1] if len(units) == 1 else "Step budget"
    doc.para(
        f"Normalised IQM [95% CI] of the evaluation return at the last evaluation at or before the budget, "
        f"counted in {counted} ({origin}). n = runs included."
    )
    rows, notes = [], []
    for budget in budgets:
        entry: dict[str, dict] = {}
        row = [f"{budget:,}"]
        for method in ctx.methods:
            per_task, excluded, tasks_missing = [], defaultdict(int), []
            for task, runs in ctx.grouped[method].items():
                vals = []
                for run in runs:
                    value, reason = budget_value(run, budget)
                    if reason:
                        excluded[reason] += 1
                    else:
                        vals.append(normalised(value, ctx.norm[task]))
                if vals:
                    per_task.append(vals)
                else:
                    tasks_missing.append(task)
            n = sum(len(v) for v in per_task)
            if n:
                iv = stats.stratified_bootstrap_ci(
                    score_matrix(per_task), stats.iqm, reps=ctx.reps, seed=ctx.seed
                )
                entry[method] = {**interval_dict(iv), "n": n}
                row.append(fmt_ci(*iv, n=n, norm=True))
            else:
                entry[method] = {"point": None, "lo": None, "hi": None, "n": 0}
                row.append("— (n=0)")
            for reason, count in excluded.items():
                notes.append(f"budget {budget:,}, {method}: {count} run(s) excluded ({reason}).")
            if tasks_missing and n:
                notes.append(f"budget {budget:,}, {method}: no run left on {', '.join(tasks_missing)}.")
        ctx.summary["sample_efficiency"][str(budget)] = entry
        rows.append(row)
    doc.table([header, *ctx.methods], rows)
    doc.bullets(notes)


def section_compute(ctx: Context) -> None:
    doc = ctx.doc
    doc.heading(2, "Compute")
    doc.para(
        "Per completed run: mean ± sample std over seeds; peak RSS is the maximum over seeds. Steps per "
        "second divide by training time (evaluation and checkpoints excluded) when recorded, else by "
        "wall-clock. Precision is what each run's update precision resolved to on the run's device "
        "(`auto`: bf16 only where the device computes it natively)."
    )
    rows = []
    for method, per_task in ctx.grouped.items():
        ctx.summary["compute"][method] = {}
        for task, runs in per_task.items():
            seconds = [r.train_s or r.wall_s for r in runs]
            env_rate = [r.env_steps / s if s > 0 else math.nan for r, s in zip(runs, seconds)]
            grad_rate = [r.grad_steps / s if s > 0 else math.nan for r, s in zip(runs, seconds)]
            walls = [float(r.wall_s) for r in runs]
            rss = [float(r.peak_rss_mb) for r in runs if r.peak_rss_mb is not None]
            peak = max(rss) if rss else None
            precision = ", ".join(sorted({r.precision for r in runs if r.precision})) or "n/a"
            ctx.summary["compute"][method][task] = {
                "precision": precision,
                "env_steps_per_s": mean_std(env_rate)[0],
                "grad_steps_per_s": mean_std(grad_rate)[0],
                "wall_s": mean_std(walls)[0],
                "peak_rss_mb": peak,
            }
            rows.append(
                [
                    method,
                    task,
                    str(len(runs)),
                    precision,
                    fmt_mean_std(env_rate),
                    fmt_mean_std(grad_rate),
                    fmt_mean_std(walls),
                    fmt(peak, 4),
                ]
            )
    doc.table(
        ["Method", "Task", "Runs", "Precision", "Env steps/s", "Grad steps/s", "Wall-clock s", "Peak RSS MB"],
        rows,
    )


def section_failed(doc: Document, failed: list[tuple[RunRecord, str]]) -> None:
    doc.heading(2, "Failed runs")
    if not failed:
        doc.para("None.")
        return
    failed = sorted(failed, key=lambda f: (f[0].method, f[0].task, f[0].seed))
    doc.table(
        ["Method", "Task", "Seed", "Status", "Error"],
        [[r.method, r.task, str(r.seed), r.status, one_line(reason)] for r, reason in failed],
    )


def section_warnings(doc: Document, done: list[RunRecord]) -> None:
    """Completed runs that met faults they survived (e.g. a language-model server that was down)."""
    noted = sorted((r for r in done if r.error), key=lambda r: (r.method, r.task, r.seed))
    if noted:
        doc.heading(2, "Warnings")
        doc.para("These runs finished and are scored, but reported problems along the way.")
        doc.table(
            ["Method", "Task", "Seed", "Warning"],
            [[r.method, r.task, str(r.seed), one_line(r.error)] for r in noted],
        )


def fmt_mean_std(values: list[float]) -> str:
    m, s = mean_std(values)
    return fmt(m) if len(values) == 1 else f"{fmt(m)} ± {fmt(s)}"

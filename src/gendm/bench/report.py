"""Benchmark reports from run records: Markdown, one self-contained HTML file, PNG plots and summary.json.

Statistics follow Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the Statistical
Precipice": scores are last-checkpoint returns, aggregated with the IQM and stratified-bootstrap CIs.
Tasks with unequal numbers of runs are kept whole: the statistics take per-task run lists (see
:mod:`gendm.bench.stats`), so no run is dropped to equalise counts.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gendm.bench import stats
from gendm.core.atomic import atomic_write_text

LAST_CHECKPOINT_SENTENCE = (
    "Scores are the mean evaluation return of the **last** checkpoint of each run, never the best."
)
OBSERVED_NOTE = "observed min-max, not a reference"


@dataclass
class RunRecord:
    """Outcome of one (method, task, seed) run; ``curve`` holds (env_steps, mean eval return) in order."""

    method: str
    task: str
    seed: int
    status: str
    final_return: float | None
    env_steps: int
    grad_steps: int
    wall_s: float
    peak_rss_mb: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    train_s: float | None = None
    """Training time without evaluation and checkpoints; throughput uses it when known."""
    precision: str | None = None
    """The update precision the run resolved to (``auto`` -> fp32 or bf16 for its device)."""


# ------------------------------------------------------------------------------------------- formatting
def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _fmt_ci(point: float | None, lo: float | None, hi: float | None, n: int | None = None, norm=False) -> str:
    f = (lambda v: "n/a" if v is None else f"{v:.3f}") if norm else _fmt
    if n == 1:
        return f"{f(point)} (n=1: no CI)"
    text = f"{f(point)} [{f(lo)}, {f(hi)}]"
    return text if n is None else f"{text} (n={n})"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "…" + text[-limit:]


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# ----------------------------------------------------------------------------- document (md + html)
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:0.6em 0}
code{background:#f3f3f3;padding:0 3px} .note{color:#555}
"""


@dataclass
class _Doc:
    """Tiny block list rendered both as Markdown and as self-contained HTML."""

    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]], details: str | None = None) -> None:
        self.blocks.append(("table", header, rows, details))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self, base: Path) -> str:
        out: list[str] = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                _, header, rows, details = block
                cell = lambda s: _one_line(s, 10_000).replace("|", "\\|")  # noqa: E731
                lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
                table = "\n".join(lines)
                if details:
                    table = f"<details><summary>{details}</summary>\n\n{table}\n\n</details>"
                out.append(table)
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1].relative_to(base).as_posix()})")
        return "\n\n".join(out) + "\n"

    @staticmethod
    def _inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{self._inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                out.append(f"<p>{self._inline(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{self._inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                _, header, rows, details = block
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(_one_line(c, 10_000))}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                if details:
                    table = f"<details><summary>{html.escape(details)}</summary>{table}</details>"
                out.append(table)
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                out.append(f'<img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">')
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- data prep
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "task"


def _split_runs(runs: list[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
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


def _group(runs: list[RunRecord]) -> dict[str, dict[str, list[RunRecord]]]:
    """{method: {task: runs sorted by seed}}, methods and tasks sorted."""
    grouped: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.method][run.task].append(run)
    return {
        m: {t: sorted(grouped[m][t], key=lambda r: r.seed) for t in sorted(grouped[m])}
        for m in sorted(grouped)
    }


def _normalisation(
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
            notes.append(f"`{task}`: all final returns equal {_fmt(lo)}; normalised as return - {_fmt(lo)}.")
            hi = lo + 1.0
        norm[task] = {"random": lo, "expert": hi, "source": "observed"}
    return norm, notes


def _norm(value: float | np.ndarray, entry: dict) -> float | np.ndarray:
    return stats.normalise(value, entry["random"], entry["expert"])


def _scores(per_task: list[list[float]]) -> np.ndarray | list[np.ndarray]:
    """A (runs, tasks) matrix when counts are equal, else a list of per-task arrays (nothing dropped)."""
    if len({len(v) for v in per_task}) == 1:
        return np.array(per_task, dtype=float).T
    return [np.asarray(v, dtype=float) for v in per_task]


def _clean_curve(run: RunRecord) -> list[tuple[float, float]]:
    pts = [(float(s), float(r)) for s, r in run.curve if math.isfinite(r)]
    return sorted(dict(pts).items())


def _aligned_curves(runs: list[RunRecord]) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(steps, returns (seeds, steps), note) on the eval steps common to all runs, else interpolated."""
    curves = [c for c in (_clean_curve(r) for r in runs) if c]
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


def _budget_value(run: RunRecord, budget: int) -> tuple[float | None, str | None]:
    curve = _clean_curve(run)
    if not curve or curve[-1][0] < budget:
        return None, "curve does not reach the budget"
    before = [r for s, r in curve if s <= budget]
    if not before:
        return None, "no evaluation at or before the budget"
    return before[-1], None


def _default_budgets(runs: list[RunRecord]) -> list[int]:
    step_sets = [{s for s, _ in _clean_curve(r)} for r in runs]
    step_sets = [s for s in step_sets if s]
    if not step_sets:
        return []
    common = sorted(set.intersection(*step_sets))
    if len(common) <= 4:
        return [int(s) for s in common]
    idx = np.unique(np.round(np.linspace(0, len(common) - 1, 4)).astype(int))
    return [int(common[i]) for i in idx]


def _interval_dict(interval: tuple) -> dict[str, float]:
    return {"point": float(interval[0]), "lo": float(interval[1]), "hi": float(interval[2])}


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _fmt_mean_std(values: list[float]) -> str:
    m, s = _mean_std(values)
    return _fmt(m) if len(values) == 1 else f"{_fmt(m)} ± {_fmt(s)}"


# ----------------------------------------------------------------------------------------- sections
@dataclass
class _Ctx:
    grouped: dict[str, dict[str, list[RunRecord]]]
    norm: dict[str, dict]
    plots: Path
    reps: int
    seed: int
    doc: _Doc
    summary: dict

    @property
    def methods(self) -> list[str]:
        return list(self.grouped)

    @property
    def tasks(self) -> list[str]:
        return sorted({t for per_task in self.grouped.values() for t in per_task})

    def norm_scores(self, method: str) -> np.ndarray | list[np.ndarray]:
        per_task = self.grouped[method]
        return _scores([[_norm(r.final_return, self.norm[t]) for r in runs] for t, runs in per_task.items()])


def _section_curves(ctx: _Ctx, plot_curves) -> None:
    ctx.doc.heading(2, "Learning curves")
    ctx.doc.para(
        "IQM over seeds of the mean evaluation return at each evaluation step, with 95% bootstrap "
        "confidence bands (raw returns)."
    )
    used: set[str] = set()
    for task in ctx.tasks:
        curves, missing, notes = {}, [], []
        for method in ctx.methods:
            aligned = _aligned_curves(ctx.grouped[method].get(task, []))
            if aligned is not None:
                curves[method] = aligned[:2]
                if aligned[2]:
                    notes.append(f"{method}: {aligned[2]}.")
            elif task in ctx.grouped[method]:
                missing.append(method)
        name = _slug(task)
        while name in used:
            name += "_"
        used.add(name)
        runs = [r for method in ctx.methods for r in ctx.grouped[method].get(task, [])]
        offline = bool(runs) and all(r.env_steps == 0 for r in runs)  # a dataset task: x is grad steps
        xlabel = "gradient steps (offline)" if offline else "environment steps"
        if task.startswith("text:"):  # LOOP's curves are keyed by iterations (gendm.train.language)
            xlabel = "fine-tuning iterations"
        elif runs and all(len(r.curve) == 1 and r.curve[0][0] == 0 for r in runs):
            xlabel = "environment steps"
            notes.append("Evaluation only (frozen models, e.g. prompting agents): one point at step 0.")
        path = plot_curves(
            curves, ctx.plots / f"curves_{name}.png", title=task, reps=min(ctx.reps, 2000), xlabel=xlabel
        )
        ctx.doc.heading(3, task)
        ctx.doc.image(path, f"learning curves on {task}")
        if missing:
            notes.append(f"No usable learning curve for: {', '.join(missing)}.")
        ctx.doc.bullets(notes)


def _section_scores(ctx: _Ctx) -> None:
    doc, scores = ctx.doc, ctx.summary["scores"]
    doc.heading(2, "Last-checkpoint scores (raw returns)")
    doc.para(f"IQM over seeds [95% stratified-bootstrap CI] of the final return, {ctx.reps:,} replicates.")
    for method, per_task in ctx.grouped.items():
        finals = [[r.final_return for r in runs] for runs in per_task.values()]
        point, lo, hi = stats.per_task_iqm_ci(_scores(finals), reps=ctx.reps, seed=ctx.seed)
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
            row.append("—" if s is None else _fmt_ci(s["iqm"], *s["ci"], n=len(s["final_returns"])))
        rows.append(row)
    doc.table(["Task", *ctx.methods], rows)
    details = [
        [
            r.method,
            r.task,
            str(r.seed),
            _fmt(r.final_return, 6),
            str(r.env_steps),
            str(r.grad_steps),
            _fmt(r.wall_s, 4),
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


def _section_aggregate(ctx: _Ctx, norm_notes: list[str], plot_intervals) -> None:
    doc = ctx.doc
    doc.heading(2, "Aggregate performance (normalised scores)")
    doc.para("Normalised score = (return - random) / (expert - random), per task:")
    doc.table(
        ["Task", "Random", "Expert", "Source"],
        [
            [
                t,
                _fmt(e["random"], 6),
                _fmt(e["expert"], 6),
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
            **{name: _interval_dict(iv) for name, iv in intervals[method].items()},
        }
        counts = {t: len(runs) for t, runs in per_task.items()}
        n = next(iter(counts.values())) if len(set(counts.values())) == 1 else None
        runs_cell = str(n) if n is not None else ", ".join(f"{t}: {c}" for t, c in counts.items())
        rows.append(
            [method, ", ".join(per_task), runs_cell]
            + [_fmt_ci(*iv, n=1 if n == 1 else None, norm=True) for iv in intervals[method].values()]
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


def _section_poi(ctx: _Ctx, plot_poi) -> None:
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
        ctx.summary["probability_of_improvement"].append({"x": x, "y": y, **_interval_dict(iv)})
    if pairs:
        doc.table(
            ["X", "Y", "P(X > Y) [95% CI]"],
            [[x, y, _fmt_ci(*iv, norm=True)] for (x, y), iv in pairs.items()],
        )
        doc.image(plot_poi(pairs, ctx.plots / "probability_of_improvement.png"), "probability of improvement")
    elif len(ctx.methods) < 2:
        doc.para("Needs at least two methods.")
    if skipped:
        doc.para(f"Skipped (methods do not share all tasks): {'; '.join(skipped)}.")


def _section_profiles(ctx: _Ctx, plot_profiles) -> None:
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


def _section_sample_efficiency(ctx: _Ctx, budgets: list[int] | None) -> None:
    doc = ctx.doc
    doc.heading(2, "Sample efficiency")
    all_runs = [r for per_task in ctx.grouped.values() for runs in per_task.values() for r in runs]
    if budgets is None:
        budgets = _default_budgets(all_runs)
        origin = "evaluation steps common to all runs"
    else:
        origin = "requested budgets"
    if not budgets:
        doc.para("No evaluation step is common to all runs; pass explicit budgets to get this table.")
        return
    doc.para(
        f"Normalised IQM [95% CI] of the evaluation return at the last evaluation with env steps <= budget "
        f"(gradient steps on dataset tasks; {origin}). n = runs included."
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
                    value, reason = _budget_value(run, budget)
                    if reason:
                        excluded[reason] += 1
                    else:
                        vals.append(_norm(value, ctx.norm[task]))
                if vals:
                    per_task.append(vals)
                else:
                    tasks_missing.append(task)
            n = sum(len(v) for v in per_task)
            if n:
                iv = stats.stratified_bootstrap_ci(_scores(per_task), stats.iqm, reps=ctx.reps, seed=ctx.seed)
                entry[method] = {**_interval_dict(iv), "n": n}
                row.append(_fmt_ci(*iv, n=n, norm=True))
            else:
                entry[method] = {"point": None, "lo": None, "hi": None, "n": 0}
                row.append("— (n=0)")
            for reason, count in excluded.items():
                notes.append(f"budget {budget:,}, {method}: {count} run(s) excluded ({reason}).")
            if tasks_missing and n:
                notes.append(f"budget {budget:,}, {method}: no run left on {', '.join(tasks_missing)}.")
        ctx.summary["sample_efficiency"][str(budget)] = entry
        rows.append(row)
    doc.table(["Env-step budget", *ctx.methods], rows)
    doc.bullets(notes)


def _section_compute(ctx: _Ctx) -> None:
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
                "env_steps_per_s": _mean_std(env_rate)[0],
                "grad_steps_per_s": _mean_std(grad_rate)[0],
                "wall_s": _mean_std(walls)[0],
                "peak_rss_mb": peak,
            }
            rows.append(
                [
                    method,
                    task,
                    str(len(runs)),
                    precision,
                    _fmt_mean_std(env_rate),
                    _fmt_mean_std(grad_rate),
                    _fmt_mean_std(walls),
                    _fmt(peak, 4),
                ]
            )
    doc.table(
        ["Method", "Task", "Runs", "Precision", "Env steps/s", "Grad steps/s", "Wall-clock s", "Peak RSS MB"],
        rows,
    )


def _section_failed(doc: _Doc, failed: list[tuple[RunRecord, str]]) -> None:
    doc.heading(2, "Failed runs")
    if not failed:
        doc.para("None.")
        return
    failed = sorted(failed, key=lambda f: (f[0].method, f[0].task, f[0].seed))
    doc.table(
        ["Method", "Task", "Seed", "Status", "Error"],
        [[r.method, r.task, str(r.seed), r.status, _one_line(reason)] for r, reason in failed],
    )


def _section_warnings(doc: _Doc, done: list[RunRecord]) -> None:
    """Completed runs that met faults they survived (e.g. a language-model server that was down)."""
    noted = sorted((r for r in done if r.error), key=lambda r: (r.method, r.task, r.seed))
    if noted:
        doc.heading(2, "Warnings")
        doc.para("These runs finished and are scored, but reported problems along the way.")
        doc.table(
            ["Method", "Task", "Seed", "Warning"],
            [[r.method, r.task, str(r.seed), _one_line(r.error)] for r in noted],
        )


# -------------------------------------------------------------------------------------------- entry
def build_report(
    runs: list[RunRecord],
    references: dict[str, tuple[float, float] | None],
    out_dir: Path,
    title: str,
    budgets: list[int] | None = None,
    reps: int = 50_000,
    seed: int = 0,
) -> dict:
    """Writes report.md, report.html (self-contained), plots/*.png and summary.json; returns the summary."""
    from gendm.bench import plots  # matplotlib only when a report is actually built

    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    done, failed = _split_runs(runs)
    grouped = _group(done)
    norm, norm_notes = _normalisation(done, references)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    summary: dict[str, Any] = {
        "title": title,
        "created": created,
        "runs": {"done": len(done), "failed": len(failed)},
        "scores": {},
        "aggregate": {},
        "probability_of_improvement": [],
        "sample_efficiency": {},
        "compute": {},
        "normalisation": norm,
    }
    doc = _Doc()
    doc.heading(1, title)
    doc.para(
        f"Created {created}. Runs: {len(runs)} in total, {len(done)} done, {len(failed)} failed or unscored."
    )
    doc.para(LAST_CHECKPOINT_SENTENCE)
    doc.para(
        f"Aggregation: interquartile mean (IQM) with 95% stratified-bootstrap confidence intervals "
        f"(percentile method, {reps:,} replicates, seed {seed}), following Agarwal et al. (2021), "
        '"Deep Reinforcement Learning at the Edge of the Statistical Precipice".'
    )
    ctx = _Ctx(grouped, norm, plots_dir, reps, seed, doc, summary)
    if grouped:
        _section_curves(ctx, plots.plot_learning_curves)
        _section_scores(ctx)
        _section_aggregate(ctx, norm_notes, plots.plot_aggregate_intervals)
        _section_poi(ctx, plots.plot_probability_of_improvement)
        _section_profiles(ctx, plots.plot_performance_profiles)
        _section_sample_efficiency(ctx, budgets)
        _section_compute(ctx)
    else:
        doc.para("No completed runs: nothing to score.")
    _section_failed(doc, failed)
    _section_warnings(doc, done)

    summary = _jsonable(summary)
    atomic_write_text(out_dir / "report.md", doc.markdown(out_dir))
    atomic_write_text(out_dir / "report.html", doc.html(title))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary_table(summary: dict) -> str:
    """Compact terminal table: method, tasks, normalised IQM [CI], and the final-return IQM per task."""
    tasks = sorted({t for per_task in summary.get("scores", {}).values() for t in per_task})
    header = ["Method", "Tasks", "IQM (normalised) [95% CI]", *tasks]
    rows = []
    for method, per_task in summary.get("scores", {}).items():
        agg = summary.get("aggregate", {}).get(method, {})
        iqm_entry = agg.get("IQM")
        n_runs = {len(s["final_returns"]) for s in per_task.values()}
        n1 = n_runs == {1}
        cell = (
            "n/a"
            if not iqm_entry
            else _fmt_ci(iqm_entry["point"], iqm_entry["lo"], iqm_entry["hi"], n=1 if n1 else None, norm=True)
        )
        row = [method, str(len(agg.get("tasks", per_task))), cell]
        for task in tasks:
            s = per_task.get(task)
            row.append("—" if s is None else f"{_fmt(s['iqm'])} (n={len(s['final_returns'])})")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])

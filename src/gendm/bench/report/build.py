"""Building a report: from run records (``build_report``) or from a benchmark directory's store
(``write_report``), and the terminal summary table.

Statistics follow Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the Statistical
Precipice": scores are last-checkpoint returns, aggregated with the IQM and stratified-bootstrap CIs.
Tasks with unequal numbers of runs are kept whole: the statistics take per-task run lists (see
:mod:`gendm.bench.stats`), so no run is dropped to equalise counts.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gendm.bench.report.document import Document, fmt, fmt_ci
from gendm.bench.report.runs import group_runs, normalisation, split_runs
from gendm.bench.report.sections import (
    Context,
    section_aggregate,
    section_compute,
    section_curves,
    section_failed,
    section_poi,
    section_profiles,
    section_sample_efficiency,
    section_scores,
    section_warnings,
)
from gendm.bench.spec import no_runs_reason
from gendm.bench.store import RESULTS_DB, RunRecord, Store
from gendm.core.atomic import atomic_write_text
from gendm.core.errors import ConfigError, GendmError
from gendm.envs.references import reference

LAST_CHECKPOINT_SENTENCE = (
    "Scores are the mean evaluation return of the **last** checkpoint of each run, never the best."
)


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
    done, failed = split_runs(runs)
    grouped = group_runs(done)
    norm, norm_notes = normalisation(done, references)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    summary: dict[str, Any] = {
        "title": title,
        "created": created,
        "runs": {"done": len(done), "failed": len(failed)},
        "scores": {},
        "aggregate": {},
        "curves": {},
        "probability_of_improvement": [],
        "sample_efficiency": {},
        "compute": {},
        "normalisation": norm,
    }
    doc = Document()
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
    ctx = Context(grouped, norm, plots_dir, reps, seed, doc, summary)
    if grouped:
        section_curves(ctx, plots.plot_learning_curves)
        section_scores(ctx)
        section_aggregate(ctx, norm_notes, plots.plot_aggregate_intervals)
        section_poi(ctx, plots.plot_probability_of_improvement)
        section_profiles(ctx, plots.plot_performance_profiles)
        section_sample_efficiency(ctx, budgets)
        section_compute(ctx)
    else:
        doc.para("No completed runs: nothing to score.")
    section_failed(doc, failed)
    section_warnings(doc, done)

    summary = jsonable(summary)
    atomic_write_text(out_dir / "report.md", doc.markdown(out_dir))
    atomic_write_text(out_dir / "report.html", doc.html(title))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


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
            else fmt_ci(iqm_entry["point"], iqm_entry["lo"], iqm_entry["hi"], n=1 if n1 else None, norm=True)
        )
        row = [method, str(len(agg.get("tasks", per_task))), cell]
        for task in tasks:
            s = per_task.get(task)
            row.append("—" if s is None else f"{fmt(s['iqm'])} (n={len(s['final_returns'])})")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def task_reference(task: str) -> tuple[float, float] | None:
    """(random, expert) returns for normalising a task's scores: the suite references of an env id;
    for a dataset task, the dataset's ref_min_score / ref_max_score (else its env's references); a
    text task's score is a success rate and stays as it is (0 never right, 1 always)."""
    if task.startswith("text:"):
        return 0.0, 1.0
    ref = reference(task)
    if ref is not None:
        return ref.random_return, ref.expert_return
    from gendm.data.minari_io import read_metadata
    from gendm.train.offline import metadata_reference

    try:
        meta = read_metadata(task)
    except GendmError:
        return None  # an env outside the suites: the report normalises by observed min-max
    found = metadata_reference(meta)
    return (found["random"], found["expert"]) if found else None


def write_report(out_dir: str | Path, reps: int = 50_000) -> dict[str, Any]:
    """(Re)build the reports of ``out_dir`` from its store; return the summary dict."""
    out_dir = Path(out_dir)
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigError(
            f"reps (--reps) must be a positive number of bootstrap replicates, got {reps!r}; the default "
            "is 50000 (use fewer, e.g. 2000, for a quick look)."
        )
    if not (out_dir / RESULTS_DB).is_file():
        raise GendmError(f"{out_dir} has no {RESULTS_DB}: run `gendm bench SPEC --out {out_dir}` first.")
    meta = _read_spec_json(out_dir)
    if meta.get("run_ids") == []:
        raise GendmError(
            f"The spec of {out_dir} ({meta.get('source') or meta.get('name')}) "
            + no_runs_reason(meta.get("skipped") or [])
        )
    store = Store(out_dir / RESULTS_DB)
    try:
        records = store.records(meta.get("run_ids"))
    finally:
        store.close()
    if not records:
        raise GendmError(f"{out_dir} has no finished runs to report yet.")
    references = {task: task_reference(task) for task in {r.task for r in records}}
    summary = build_report(
        records,
        references,
        out_dir,
        title=f"gendm bench: {meta.get('name', out_dir.name)}",
        budgets=meta.get("budgets"),
        reps=reps,
    )
    if meta.get("skipped"):
        summary["skipped"] = meta["skipped"]
    return summary


def _read_spec_json(out_dir: Path) -> dict[str, Any]:
    """The ``spec.json`` that `gendm bench` writes (which runs belong to the spec); {} if absent."""
    path = out_dir / "spec.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GendmError(
            f"{path} is not valid JSON ({e}): rerun `gendm bench SPEC --out {out_dir}`, which rewrites it "
            "(finished runs are kept)."
        ) from None
    if not isinstance(meta, dict):
        raise GendmError(f"{path} is no spec record: rerun `gendm bench SPEC --out {out_dir}` to rewrite it.")
    return meta

"""Reports from a benchmark directory: ``results.sqlite`` + ``spec.json`` -> report.md/html, summary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gendm.bench.report import build_report
from gendm.bench.runner import RESULTS_DB
from gendm.bench.spec import no_runs_reason
from gendm.bench.store import Store
from gendm.core.errors import ConfigError, GendmError
from gendm.envs.references import reference


def task_reference(task: str) -> tuple[float, float] | None:
    """(random, expert) returns for normalising a task's scores: the suite references of an env id;
    for a dataset task, the dataset's ref_min_score / ref_max_score (else its env's references); a
    text task's score is a success rate and stays as it is (0 never right, 1 always)."""
    if task.startswith("text:"):
        return 0.0, 1.0
    ref = reference(task)
    if ref is not None:
        return ref.random_return, ref.expert_return
    from gendm.data.dataset import read_metadata
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

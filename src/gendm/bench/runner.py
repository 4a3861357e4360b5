"""Run a benchmark spec: expand it into runs, skip those already done, execute the rest on a local
process pool or a Ray cluster, record each result in SQLite as it arrives, and build the report.

Resumability: a run is recorded as done in one transaction the moment it finishes; a rerun skips
done runs, adopts runs whose worker finished but whose driver died before recording them, and redoes
failed or interrupted runs, which resume from their last checkpoint. Local workers are started with
PR_SET_PDEATHSIG, so killing the driver (even with SIGKILL) takes its workers with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gendm.bench.report import write_report
from gendm.bench.spec import BenchSpec, RunSpec, no_runs_reason
from gendm.bench.store import RESULTS_DB, Store
from gendm.core.atomic import atomic_write_json, atomic_write_text
from gendm.core.errors import ConfigError, SpecError


def run_dir_of(out_dir: Path, run: RunSpec) -> Path:
    return out_dir / "runs" / f"{run.method}__{run.task.replace('/', '_')}__seed{run.seed}__{run.run_id}"


def run_bench(
    spec: BenchSpec,
    out_dir: str | Path,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    threads_per_worker: int | None = None,
    progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Execute every run of ``spec`` not yet done; return the report summary (or the store counts)."""
    out_dir = Path(out_dir)
    if not spec.runs:
        raise SpecError(f"Spec {spec.source or spec.name} {no_runs_reason(spec.skipped)}")
    for flag, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}; leave it unset for the default.")
    workers = workers or os.cpu_count() or 1
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    store = Store(out_dir / RESULTS_DB)
    store.add_runs(spec.runs)
    atomic_write_text(
        out_dir / "spec.json",
        json.dumps(
            {
                "name": spec.name,
                "source": spec.source,
                "seeds": spec.seeds,
                "budgets": spec.budgets,
                "skipped": spec.skipped,
                "run_ids": [r.run_id for r in spec.runs],
            },
            indent=2,
        ),
    )
    todo = [
        r for r in spec.runs if store.status(r.run_id) != "done" and not _adopt_finished(store, out_dir, r)
    ]
    bar = tqdm(
        total=len(spec.runs),
        initial=len(spec.runs) - len(todo),
        unit="run",
        disable=not progress,
        desc=f"bench {spec.name}",
        dynamic_ncols=True,
    )

    def on_result(run: RunSpec, summary: dict[str, Any]) -> None:
        if summary.get("status") == "ok":
            store.mark_done(run.run_id, summary)
            atomic_write_json(run_dir_of(out_dir, run) / "summary.json", summary)
            ret = summary["final_return"]
            msg = f"done   {run.method:>10} {run.task:<24} seed {run.seed}: final return {ret:.1f}"
            msg += "".join(f"\n       warning: {w}" for w in summary.get("warnings") or [])
        else:
            store.mark_failed(run.run_id, summary.get("error") or "unknown error")
            msg = f"FAILED {run.method:>10} {run.task:<24} seed {run.seed}: {summary.get('error')}"
        bar.update(1)
        bar.write(msg)

    try:
        if todo:
            execute = _run_local if backend == "local" else _run_ray if backend == "ray" else None
            if execute is None:
                raise ConfigError(f"Unknown backend {backend!r}; use 'local' or 'ray'.")
            execute(todo, out_dir, workers, threads, store, on_result, address)
    finally:
        bar.close()
    result: dict[str, Any] = {"counts": store.counts()}
    if report:
        result = write_report(out_dir)
    store.close()
    return result


def _adopt_finished(store: Store, out_dir: Path, run: RunSpec) -> bool:
    """A worker finished but its driver died before recording it: record it now instead of rerunning."""
    path = run_dir_of(out_dir, run) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    done_steps = summary.get(summary.get("step_unit", "env_steps"), 0)  # grad_steps for offline runs
    if summary.get("status") != "ok" or done_steps < run.steps:
        return False
    store.mark_done(run.run_id, summary)
    return True


# ------------------------------------------------------------------------------------- local pool
def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_local(
    todo: list[RunSpec],
    out_dir: Path,
    workers: int,
    threads: int,
    store: Store,
    on_result: Callable[[RunSpec, dict], None],
    address: str | None,
) -> None:
    pending = list(todo)
    active: dict[subprocess.Popen, tuple[RunSpec, Path, Any]] = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        while pending or active:
            while pending and len(active) < workers:
                run = pending.pop(0)
                run_dir = run_dir_of(out_dir, run)
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "run.json", run.to_json())
                (run_dir / "summary.json").unlink(missing_ok=True)
                log = open(run_dir / "worker.log", "ab")  # noqa: SIM115 (closed when the worker ends)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gendm.bench.worker", str(run_dir), str(threads)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=_die_with_parent,
                )
                store.mark_running(run.run_id, f"pid {proc.pid}")
                active[proc] = (run, run_dir, log)
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                run, run_dir, log = active.pop(proc)
                log.close()
                on_result(run, _worker_summary(proc.returncode, run_dir))
    except BaseException:
        for proc, (run, _, log) in active.items():
            proc.kill()
            proc.wait()
            log.close()
            store.mark_failed(run.run_id, "interrupted: the bench driver stopped; rerun to resume")
        raise


def _worker_summary(returncode: int, run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = {}
    if returncode == 0 and summary.get("status") == "ok":
        return summary
    if summary.get("error"):
        return {"status": "failed", "error": summary["error"]}
    reason = (
        f"worker killed by signal {-returncode}"
        if returncode < 0
        else f"worker exited with status {returncode}"
    )
    tail = (
        (run_dir / "worker.log").read_text(errors="replace")[-1500:].strip()
        if (run_dir / "worker.log").exists()
        else ""
    )
    return {"status": "failed", "error": f"{reason}; log tail: {tail[-600:]}" if tail else reason}


# ------------------------------------------------------------------------------------------ Ray
def _run_ray(
    todo: list[RunSpec],
    out_dir: Path,
    workers: int,
    threads: int,
    store: Store,
    on_result: Callable[[RunSpec, dict], None],
    address: str | None,
) -> None:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("The Ray backend needs the 'ray' extra: pip install 'gendm[ray]'.") from e
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)

    @ray.remote(num_cpus=1, max_retries=0)
    def remote_run(spec_json: str, run_dir: str, threads: int) -> dict[str, Any]:
        import torch

        from gendm.bench.worker import execute

        torch.set_num_threads(threads)
        return execute(RunSpec.from_json(spec_json), Path(run_dir), threads)

    try:
        futures = {}
        for run in todo:
            run_dir = run_dir_of(out_dir, run).resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
            store.mark_running(run.run_id, "ray")
            futures[remote_run.remote(run.to_json(), str(run_dir), threads)] = run
        while futures:
            done, _ = ray.wait(list(futures), num_returns=1)
            run = futures.pop(done[0])
            try:
                summary = ray.get(done[0])
            except Exception as e:  # a dead worker or a lost node
                summary = {"status": "failed", "error": f"ray task failed: {type(e).__name__}: {e}"}
            on_result(run, summary)
    except BaseException:
        for run in futures.values():
            store.mark_failed(run.run_id, "interrupted: the bench driver stopped; rerun to resume")
        raise
    finally:
        if started_here:
            ray.shutdown()

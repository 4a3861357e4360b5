"""Side-by-side runs for the library comparisons (``vs_sb3.py``, ``offline_suite.py``).

Pairing. A *unit* is gendm's run of one seed and its peer's run of the same seed (or, for methods
without a peer, two unrelated runs sharing the machine). For each round r = 1..R and each unit, both
runs start **together**, each in its own process pinned (``os.sched_setaffinity``) to its own core,
with one thread (``OMP/MKL/OPENBLAS_NUM_THREADS=1``; for JAX ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``, ``JAX_PLATFORMS=cpu``). The first run of a unit (gendm's side) gets
the first core in odd rounds and the second core in even rounds. Both runs of a unit thus see the same
host load, and a drift of the host over the day shows up as a spread between rounds, not as a ratio.

Resume. Each run's record (its result plus ``unit``, ``key``, ``round``, ``seed``, ``lib``, ``core``,
``attempt``, start and end times) is appended to a JSONL log as soon as it finishes. A unit counts as
done when all its runs of one attempt are recorded with status ok; rerunning the same command skips
done units and reruns the others whole (a unit interrupted after one run finished is rerun with both,
so the pair stays concurrent). The latest complete attempt of each unit is the one summarised.

Rates. Each run reports ``learn_rate``: its learning-phase rate in ``rate_unit``, measured by the run
itself; the ratio of a pair is gendm's ``learn_rate`` over the peer's. ``vs_sb3.py`` (SAC): gradient
updates per second from the end of the ``learning_starts`` random warm-up to the end of training,
evaluation excluded (gendm: timed around its trainer's first update and loop end, minus the loop's
evaluation time; SB3 and SBX: a callback marks ``num_timesteps == learning_starts`` and the end of
``learn()``); PPO: env steps per second of the whole training. ``offline_suite.py``: gradient steps
per second of training (``grad_steps / train_s``: setup, evaluation and checkpoints excluded). Where
runs record their first update's time, the summary adds ``ratio_after_first_update``: the same ratios
from the rates after each run's first update, which for SBX holds its JIT compile (seconds, a large
share of a short run).

Summary (``summarize``), per comparison group: every pair's ratio, per round the median over the
round's pairs, overall the median of the round medians with their range (min-max over rounds); per
library the learning-phase rate (median, min, max over runs) and the final return (last evaluation)
as IQM with a 95% stratified-bootstrap CI over seeds (``gendm.bench.stats``), each seed's return
first averaged over the rounds (the rounds repeat a seed; they are not extra seeds).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gendm.core.errors import GendmError

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Run:
    """One process of a unit. Its result is the JSON of ``result_file`` if set, else of the last line of
    its stdout; ``parse`` maps that to the record's fields (``final_return``, ``learn_rate``, ...)."""

    lib: str
    cmd: list[str]
    key: str = ""
    """What this run is within the benchmark besides lib, seed and round (e.g. algo and dataset)."""
    result_file: Path | None = None
    workdir: Path | None = None
    """Removed before every attempt (the run creates it), so an attempt never resumes an older one."""
    parse: Callable[[dict], dict] = dict
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Unit:
    """Runs started together (one or two). With ``group`` set, ``runs[0]`` is gendm's side and
    ``runs[1]`` the peer, and the pair's speed ratio is summarised under ``group``."""

    key: str
    seed: int
    runs: list[Run]
    group: str | None = None


class PairingError(GendmError):
    """Bad pairing input (cores, units), with what to do."""


# ------------------------------------------------------------------------------------------ the log
def read_log(path: Path) -> list[dict]:
    """Records of a JSONL log; a torn last line (the process was killed while writing) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def complete(records: Iterable[dict]) -> dict[tuple[str, int, int], list[dict]]:
    """(unit, round, seed) -> the records of its latest attempt whose runs all finished ok."""
    attempts: dict[tuple[str, int, int, str], list[dict]] = {}
    for r in records:
        attempts.setdefault((r["unit"], r["round"], r["seed"], r["attempt"]), []).append(r)
    out: dict[tuple[str, int, int], list[dict]] = {}
    for (unit, rnd, seed, _), rs in attempts.items():  # dicts keep insertion order: later attempts win
        if len(rs) == rs[0]["unit_size"] and all(r["status"] == "ok" for r in rs):
            out[(unit, rnd, seed)] = sorted(rs, key=lambda r: r["position"])
    return out


# ------------------------------------------------------------------------------------------ running
def default_cores() -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise PairingError(
            f"pairing needs two cores to run each pair side by side, but this process may use only "
            f"{cores}. Run on a machine (or cgroup) with at least 2 cores, or pass --cores A,B."
        )
    return cores[:2]


_LIBC: Any = None


def _pin(core: int) -> None:
    """In the child before exec: run on ``core`` only and be killed when the driver dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``; libc is loaded in the parent, so the child only calls it)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)
    os.sched_setaffinity(0, {core})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _result(run: Run, out_path: Path) -> dict:
    if run.result_file is not None:
        return json.loads(run.result_file.read_text())
    lines = [ln for ln in out_path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the run printed nothing")
    return json.loads(lines[-1])


def run_unit(unit: Unit, rnd: int, cores: list[int], log: Path, logs_dir: Path) -> list[dict]:
    """Start the unit's runs together, each pinned to its core; append each record as it finishes."""
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL(None, use_errno=True)
    attempt = uuid.uuid4().hex[:12]
    order = cores if rnd % 2 == 1 else cores[::-1]
    running: list[tuple[int, subprocess.Popen, int, float, Path, Path]] = []
    records: list[dict] = []
    try:
        for i, run in enumerate(unit.runs):
            core = order[i % len(order)]
            if run.workdir is not None:
                shutil.rmtree(run.workdir, ignore_errors=True)
                run.workdir.parent.mkdir(parents=True, exist_ok=True)
            if run.result_file is not None:
                run.result_file.unlink(missing_ok=True)
            stem = logs_dir / _slug(f"r{rnd}-s{unit.seed}-{unit.key}-{i}-{run.lib}")
            out_path, err_path = Path(f"{stem}.out"), Path(f"{stem}.err")
            env = dict(os.environ, **SINGLE_THREAD_ENV, **run.env)
            with open(out_path, "w") as so, open(err_path, "w") as se:
                pin = functools.partial(_pin, core)  # no threads here: preexec_fn is safe
                p = subprocess.Popen(run.cmd, stdout=so, stderr=se, env=env, cwd=run.cwd, preexec_fn=pin)
            running.append((i, p, core, time.time(), out_path, err_path))
        while running:
            finished = [x for x in running if x[1].poll() is not None]
            if not finished:
                time.sleep(0.1)
                continue
            for x in finished:
                running.remove(x)
                rec = _record(unit, x, rnd, attempt)
                with open(log, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                records.append(rec)
    finally:
        for _, p, *_ in running:
            p.kill()
            p.wait()
    return records


def _record(unit: Unit, proc: tuple, rnd: int, attempt: str) -> dict[str, Any]:
    i, p, core, started, out_path, err_path = proc
    run = unit.runs[i]
    rec: dict[str, Any] = {"status": "ok"}
    if p.returncode == 0:
        try:
            rec.update(run.parse(_result(run, out_path)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            rec = {"status": "failed", "error": f"unreadable result: {e!r}"}
    else:
        tail = err_path.read_text().strip().splitlines()[-15:]
        rec = {"status": "failed", "error": f"exit code {p.returncode}", "stderr_tail": tail}
    side = None if unit.group is None else ("gendm" if i == 0 else "peer")
    meta = dict(unit=unit.key, key=run.key, group=unit.group, side=side, round=rnd, seed=unit.seed)
    meta.update(lib=run.lib, core=core, position=i, unit_size=len(unit.runs), attempt=attempt)
    meta.update(started=round(started, 3), ended=round(time.time(), 3), stdout=str(out_path))
    meta.update(stderr=str(err_path), command=run.cmd)
    return rec | meta


def run_rounds(
    plan: Callable[[int], list[Unit]],
    rounds: int,
    log: Path,
    cores: list[int] | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Run every unit of ``plan(round)`` for rounds 1..``rounds`` not yet complete in ``log``; return
    the records of the failed runs of this call (the log keeps everything)."""
    cores = cores or default_cores()
    if len(cores) != 2:
        raise PairingError(f"pass exactly two cores for the pairs, got {cores}.")
    if rounds < 1:
        raise PairingError(f"rounds must be >= 1, got {rounds}.")
    log.parent.mkdir(parents=True, exist_ok=True)
    logs_dir = log.with_suffix(".logs")
    logs_dir.mkdir(exist_ok=True)
    units = _planned(plan, rounds)
    done = _matching(units, read_log(log))
    todo = [(rnd, u) for rnd, u in units if (u.key, rnd, u.seed) not in done]
    echo(f"{len(units)} units, {len(units) - len(todo)} already recorded in {log}, {len(todo)} to run")
    previous = signal.getsignal(signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a plain `kill` then ends the children too (finally in run_unit)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    failed: list[dict] = []
    t0 = time.perf_counter()
    try:
        for n, (rnd, u) in enumerate(todo, 1):
            recs = run_unit(u, rnd, cores, log, logs_dir)
            failed += [r for r in recs if r["status"] != "ok"]
            eta = (time.perf_counter() - t0) / n * (len(todo) - n)
            parts = [
                f"{r['lib']}@{r['core']}: "
                + (_fmt_rate(r) if r["status"] == "ok" else f"FAILED ({r['error']}, see {r['stderr']})")
                for r in recs
            ]
            echo(
                f"[{n}/{len(todo)}] round {rnd} seed {u.seed} {u.key}: {'; '.join(parts)} "
                f"(ETA {eta / 60:.0f} min)"
            )
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return failed


def _planned(plan: Callable[[int], list[Unit]], rounds: int) -> list[tuple[int, Unit]]:
    units = [(rnd, u) for rnd in range(1, rounds + 1) for u in plan(rnd)]
    keys = [(u.key, rnd, u.seed) for rnd, u in units]
    if len(set(keys)) != len(keys):
        raise PairingError("the plan names one (unit, round, seed) twice; make unit keys unique.")
    return units


def _matching(units: list[tuple[int, Unit]], records: list[dict]) -> dict[tuple[str, int, int], list[dict]]:
    """The complete attempts of planned units whose recorded commands are the planned ones (a log
    reused by a different command, say other steps, does not count as done)."""
    done = complete(records)
    out = {}
    for rnd, u in units:
        recs = done.get((u.key, rnd, u.seed))
        if recs is not None and [r["command"] for r in recs] == [run.cmd for run in u.runs]:
            out[(u.key, rnd, u.seed)] = recs
    return out


def collect(plan: Callable[[int], list[Unit]], rounds: int, log: Path) -> list[dict]:
    """The records of the latest complete attempt of every planned unit, in plan order."""
    units = _planned(plan, rounds)
    done = _matching(units, read_log(log))
    return [r for rnd, u in units for r in done.get((u.key, rnd, u.seed), [])]


def _fmt_rate(r: dict) -> str:
    rate = r.get("learn_rate")
    ret = r.get("final_return")
    rate_s = f"{rate:.1f} {r.get('rate_unit', '/s')}" if isinstance(rate, int | float) else "rate n/a"
    return rate_s + (f", return {ret:.1f}" if isinstance(ret, int | float) else "")


# ------------------------------------------------------------------------------------------ summary
def _spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def summarize(runs: list[dict], reps: int = 50_000, returns: bool = True) -> dict[str, Any]:
    """Per comparison group (``Unit.group``): ratios per pair, per round and overall, and per library
    its rates and (``returns``; only where a group is one task) the IQM [95% CI] of its final returns
    over seeds."""
    from gendm.bench.stats import iqm, stratified_bootstrap_ci

    out: dict[str, Any] = {}
    groups = list(dict.fromkeys(r["group"] for r in runs if r.get("group")))
    for g in groups:
        rs = [r for r in runs if r.get("group") == g]
        pairs: dict[tuple[str, int, int], dict[str, dict]] = {}
        for r in rs:
            pairs.setdefault((r["unit"], r["round"], r["seed"]), {})[r["side"]] = r
        ratio = _ratio_stats(pairs, lambda r: r["learn_rate"])
        steady = None
        if all(_steady_rate(r) is not None for r in rs):
            steady = _ratio_stats(pairs, _steady_rate)
        libs: dict[str, Any] = {}
        for side in ("gendm", "peer"):
            mine = [r for r in rs if r["side"] == side]
            if not mine:
                continue
            lib = mine[0]["lib"]
            per_seed: dict[int, list[float]] = {}
            for r in mine:
                if isinstance(r.get("final_return"), int | float):
                    per_seed.setdefault(r["seed"], []).append(float(r["final_return"]))
            entry: dict[str, Any] = {
                "side": side,
                "rate_unit": mine[0].get("rate_unit"),
                "learn_rate": _spread([r["learn_rate"] for r in mine]),
                "runs": len(mine),
            }
            if per_seed and returns:
                seeds = sorted(per_seed)
                finals = np.array([[np.mean(per_seed[s])] for s in seeds])
                point, lo, hi = stratified_bootstrap_ci(finals, iqm, reps=reps, seed=0)
                entry["final_return"] = {"iqm": point, "ci95": [lo, hi], "seeds": seeds}
                entry["final_return"]["per_seed_mean"] = finals[:, 0].tolist()
            libs[lib] = entry
        names = list(libs)
        out[g] = {
            "gendm": names[0] if names else None,
            "peer": names[1] if len(names) > 1 else None,
            "rate_unit": rs[0].get("rate_unit"),
            "pairs": len(ratio["per_pair"]),
            "ratio": ratio,
            **({"ratio_after_first_update": steady} if steady else {}),
            "libs": libs,
        }
    return out


def _steady_rate(r: dict) -> float | None:
    """Updates per second after a run's first update (which holds a JIT compile for SBX), or None
    where the run did not record its first update's time."""
    needed = ("learn_updates", "learn_s", "first_update_s")
    if not all(isinstance(r.get(k), int | float) for k in needed) or r["learn_updates"] < 2:
        return None
    return (r["learn_updates"] - 1) / max(r["learn_s"] - r["first_update_s"], 1e-9)


def _ratio_stats(pairs: dict[tuple[str, int, int], dict[str, dict]], rate: Callable[[dict], float]) -> dict:
    """gendm's rate over the peer's per pair, the median per round, the median of round medians and
    its range over rounds."""
    per_pair = [
        {"round": rnd, "seed": seed, "unit": unit, "ratio": rate(p["gendm"]) / rate(p["peer"])}
        for (unit, rnd, seed), p in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0]))
        if {"gendm", "peer"} <= set(p)
    ]
    by_round: dict[int, list[float]] = {}
    for x in per_pair:
        by_round.setdefault(x["round"], []).append(x["ratio"])
    round_medians = {rnd: float(np.median(v)) for rnd, v in sorted(by_round.items())}
    medians = list(round_medians.values())
    return {
        "median_of_round_medians": float(np.median(medians)) if medians else None,
        "range_over_rounds": [min(medians), max(medians)] if medians else None,
        "round_medians": round_medians,
        "per_pair": per_pair,
    }


def markdown(summary: dict[str, Any]) -> str:
    """One line per comparison group."""
    lines = []
    for g, s in summary.items():
        r = s["ratio"]
        if r["median_of_round_medians"] is None:
            lines.append(f"- **{g}**: no complete pair yet")
            continue
        lo, hi = r["range_over_rounds"]
        rets = "; ".join(
            f"{lib} {v['learn_rate']['median']:.1f} {v['rate_unit'] or '/s'}"
            + (
                f", return IQM {v['final_return']['iqm']:.1f} "
                f"[{v['final_return']['ci95'][0]:.1f}, {v['final_return']['ci95'][1]:.1f}]"
                if "final_return" in v
                else ""
            )
            for lib, v in s["libs"].items()
        )
        steady = s.get("ratio_after_first_update")
        after = (
            f", {steady['median_of_round_medians']:.2f}x after each run's first update (range "
            f"{steady['range_over_rounds'][0]:.2f}-{steady['range_over_rounds'][1]:.2f}; SBX's holds its JIT)"
            if steady and steady["median_of_round_medians"] is not None
            else ""
        )
        lines.append(
            f"- **{g}**: {s['gendm']}/{s['peer']} learning-phase {s['rate_unit']} = "
            f"**{r['median_of_round_medians']:.2f}x** (median of {len(r['round_medians'])} round medians, "
            f"range {lo:.2f}-{hi:.2f}, {s['pairs']} pairs){after}; {rets}"
        )
    return "\n".join(lines)


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def pending(plan: Callable[[int], list[Unit]], rounds: int, log: Path) -> list[dict]:
    """The planned units not yet complete in ``log``, each with its latest failure, if any."""
    units = _planned(plan, rounds)
    records = read_log(log)
    done = _matching(units, records)
    failures = {(r["unit"], r["round"], r["seed"]): r for r in records if r["status"] != "ok"}
    out = []
    for rnd, u in units:
        k = (u.key, rnd, u.seed)
        if k not in done:
            f = failures.get(k)
            err = None if f is None else {"lib": f["lib"], "error": f["error"], "stderr": f.get("stderr")}
            out.append({"unit": u.key, "round": rnd, "seed": u.seed, "last_failure": err})
    return out

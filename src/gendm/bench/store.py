"""SQLite store of a benchmark: one row per run (config hash, status, error, timings, versions, git
commit) and its evaluation curve. Every write is one short transaction in WAL mode, so a killed
driver or worker never corrupts it and never loses a run already recorded as done."""

from __future__ import annotations

import functools
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gendm.bench.spec import RunSpec
from gendm.core.errors import GendmError

RESULTS_DB = "results.sqlite"
"""The store's file name inside a benchmark directory."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, method TEXT NOT NULL, algo TEXT NOT NULL, task TEXT NOT NULL,
    seed INTEGER NOT NULL, config_hash TEXT NOT NULL, spec_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, wall_s REAL, train_s REAL, env_steps INTEGER, grad_steps INTEGER,
    final_return REAL, env_steps_per_s REAL, grad_steps_per_s REAL, peak_rss_mb REAL,
    versions_json TEXT, git_commit TEXT, host TEXT, worker TEXT, precision TEXT, step_unit TEXT
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id), env_steps INTEGER NOT NULL, return_mean REAL NOT NULL,
    return_std REAL, wall_s REAL, PRIMARY KEY (run_id, env_steps)
);
"""
ADDED_COLUMNS = (("precision", "TEXT"), ("step_unit", "TEXT"))
STATUSES = ("pending", "running", "done", "failed")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RunRecord:
    """Outcome of one (method, task, seed) run; ``curve`` holds (step, mean eval return) in order, the
    step counted in ``step_unit``."""

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
    step_unit: str = "env_steps"
    """What the curve's steps count: ``env_steps`` (online), ``grad_steps`` (offline) or ``iterations``
    (fine-tuning), as the run's summary.json says."""


def legacy_step_unit(task: str, env_steps: int | None) -> str:
    """The step unit of a run recorded before the store kept it: fine-tuning iterations on text tasks,
    gradient steps when no environment step was taken (an offline run), else environment steps."""
    if task.startswith("text:"):
        return "iterations"
    return "grad_steps" if not env_steps else "env_steps"


class StoreError(GendmError):
    """The benchmark store cannot be opened or read: corrupt, not SQLite, locked or not writable."""


def store_error(path: Path, e: sqlite3.Error) -> StoreError:
    """A StoreError saying what is wrong with ``path`` and how to recover."""
    if isinstance(e, sqlite3.OperationalError):  # locked, unwritable, unopenable: the file itself is fine
        return StoreError(
            f"Cannot use the benchmark store {path}: {e}. Check that its directory is writable and that "
            "no other `gendm bench` is writing to it, then rerun."
        )
    return StoreError(
        f"The benchmark store {path} is corrupt or not an SQLite database ({e}). Move it aside "
        f"(mv {path} {path}.bad) and rerun `gendm bench SPEC --out {path.parent}`: finished runs are "
        "recovered from their runs/*/summary.json and the others run again."
    )


def _guarded(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise store_error(self.path, e) from e

    return wrapper  # type: ignore[return-value]


class Store:
    @_guarded
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file where the directory (or one above it) should be, no permission
            raise StoreError(
                f"Cannot create the benchmark directory {self.path.parent}: {e.strerror or e}. "
                "Choose another --out directory."
            ) from None
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            columns = {row["name"] for row in self.db.execute("PRAGMA table_info(runs)")}
            for name, kind in ADDED_COLUMNS:  # stores written before the column existed
                if name not in columns:
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            self.db.execute("SELECT COUNT(*) FROM runs").fetchone()
            self.db.execute("SELECT COUNT(*) FROM curves").fetchone()
        except sqlite3.Error:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _tx(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self.db:  # BEGIN ... COMMIT, or ROLLBACK on error
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, tuple(params))

    @_guarded
    def add_runs(self, runs: Iterable[RunSpec]) -> None:
        """Insert runs not seen before as pending; existing rows (and their results) are kept."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, method, algo, task, seed, config_hash, spec_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.run_id, r.method, r.algo, r.task, r.seed, r.config_hash, r.to_json()) for r in runs],
            )

    @_guarded
    def status(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row["status"] if row else None

    @_guarded
    def mark_running(self, run_id: str, worker: str) -> None:
        self._tx(
            "UPDATE runs SET status='running', attempts=attempts+1, started_at=?, worker=?, host=?, "
            "error=NULL WHERE run_id=?",
            (time.time(), worker, socket.gethostname(), run_id),
        )

    @_guarded
    def mark_failed(self, run_id: str, error: str) -> None:
        self._tx(
            "UPDATE runs SET status='failed', error=?, finished_at=? WHERE run_id=?",
            (error, time.time(), run_id),
        )

    @_guarded
    def mark_done(self, run_id: str, summary: dict[str, Any]) -> None:
        """Record a finished run and its curve in one transaction."""
        versions = summary.get("versions", {})
        x = summary.get("step_unit", "env_steps")  # offline curves are keyed by gradient steps
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE runs SET status='done', error=?, finished_at=?, wall_s=?, train_s=?, env_steps=?, "
                "grad_steps=?, final_return=?, env_steps_per_s=?, grad_steps_per_s=?, peak_rss_mb=?, "
                "versions_json=?, git_commit=?, precision=?, step_unit=? WHERE run_id=?",
                (
                    "; ".join(summary.get("warnings") or []) or None,  # a done run's error: its warnings
                    time.time(),
                    summary["wall_s"],
                    summary.get("train_s"),
                    summary["env_steps"],
                    summary["grad_steps"],
                    summary["final_return"],
                    summary.get("env_steps_per_s"),
                    summary.get("grad_steps_per_s"),
                    summary.get("peak_rss_mb"),
                    json.dumps(versions),
                    versions.get("git_commit"),
                    summary.get("precision"),  # as resolved for the run's device
                    x,
                    run_id,
                ),
            )
            self.db.execute("DELETE FROM curves WHERE run_id=?", (run_id,))
            self.db.executemany(
                "INSERT INTO curves (run_id, env_steps, return_mean, return_std, wall_s) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, p[x], p["return_mean"], p.get("return_std"), p.get("wall_s"))
                    for p in summary["curve"]
                ],
            )

    @_guarded
    def rows(self, run_ids: Iterable[str] | None = None) -> list[sqlite3.Row]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY method, task, seed").fetchall()
        if run_ids is None:
            return rows
        wanted = set(run_ids)
        return [r for r in rows if r["run_id"] in wanted]

    @_guarded
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for row in self.db.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status"):
            out[row["status"]] = row["n"]
        return out

    @_guarded
    def records(self, run_ids: Iterable[str] | None = None) -> list[RunRecord]:
        """Runs as report records (curves included); pending/running runs are left out."""
        curves: dict[str, list[tuple[int, float]]] = {}
        for row in self.db.execute(
            "SELECT run_id, env_steps, return_mean FROM curves ORDER BY run_id, env_steps"
        ):
            curves.setdefault(row["run_id"], []).append((row["env_steps"], row["return_mean"]))
        return [
            RunRecord(
                method=r["method"],
                task=r["task"],
                seed=r["seed"],
                status=r["status"],
                final_return=r["final_return"],
                env_steps=r["env_steps"] or 0,
                grad_steps=r["grad_steps"] or 0,
                wall_s=r["wall_s"] or 0.0,
                peak_rss_mb=r["peak_rss_mb"],
                curve=curves.get(r["run_id"], []),
                error=r["error"],
                train_s=r["train_s"],
                precision=r["precision"],
                step_unit=r["step_unit"] or legacy_step_unit(r["task"], r["env_steps"]),
            )
            for r in self.rows(run_ids)
            if r["status"] in ("done", "failed")
        ]

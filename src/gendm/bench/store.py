"""SQLite store of a benchmark: one row per run (config hash, status, error, timings, versions, git
commit) and its evaluation curve. Every write is one short transaction in WAL mode, so a killed
driver or worker never corrupts it and never loses a run already recorded as done."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gendm.bench.report import RunRecord
from gendm.bench.spec import RunSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, method TEXT NOT NULL, algo TEXT NOT NULL, task TEXT NOT NULL,
    seed INTEGER NOT NULL, config_hash TEXT NOT NULL, spec_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, wall_s REAL, train_s REAL, env_steps INTEGER, grad_steps INTEGER,
    final_return REAL, env_steps_per_s REAL, grad_steps_per_s REAL, peak_rss_mb REAL,
    versions_json TEXT, git_commit TEXT, host TEXT, worker TEXT
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id), env_steps INTEGER NOT NULL, return_mean REAL NOT NULL,
    return_std REAL, wall_s REAL, PRIMARY KEY (run_id, env_steps)
);
"""
STATUSES = ("pending", "running", "done", "failed")


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self.db:  # BEGIN ... COMMIT, or ROLLBACK on error
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, tuple(params))

    def add_runs(self, runs: Iterable[RunSpec]) -> None:
        """Insert runs not seen before as pending; existing rows (and their results) are kept."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, method, algo, task, seed, config_hash, spec_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.run_id, r.method, r.algo, r.task, r.seed, r.config_hash, r.to_json()) for r in runs],
            )

    def status(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row["status"] if row else None

    def mark_running(self, run_id: str, worker: str) -> None:
        self._tx(
            "UPDATE runs SET status='running', attempts=attempts+1, started_at=?, worker=?, host=?, "
            "error=NULL WHERE run_id=?",
            (time.time(), worker, socket.gethostname(), run_id),
        )

    def mark_failed(self, run_id: str, error: str) -> None:
        self._tx(
            "UPDATE runs SET status='failed', error=?, finished_at=? WHERE run_id=?",
            (error, time.time(), run_id),
        )

    def mark_done(self, run_id: str, summary: dict[str, Any]) -> None:
        """Record a finished run and its curve in one transaction."""
        versions = summary.get("versions", {})
        x = summary.get("step_unit", "env_steps")  # offline curves are keyed by gradient steps
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE runs SET status='done', error=?, finished_at=?, wall_s=?, train_s=?, env_steps=?, "
                "grad_steps=?, final_return=?, env_steps_per_s=?, grad_steps_per_s=?, peak_rss_mb=?, "
                "versions_json=?, git_commit=? WHERE run_id=?",
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

    def rows(self, run_ids: Iterable[str] | None = None) -> list[sqlite3.Row]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY method, task, seed").fetchall()
        if run_ids is None:
            return rows
        wanted = set(run_ids)
        return [r for r in rows if r["run_id"] in wanted]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for row in self.db.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status"):
            out[row["status"]] = row["n"]
        return out

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
            )
            for r in self.rows(run_ids)
            if r["status"] in ("done", "failed")
        ]

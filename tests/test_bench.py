import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gendm.bench.runner import run_bench
from gendm.bench.spec import load_spec
from gendm.bench.store import Store
from gendm.core.precision import hardware_native_bf16

SPEC = """
name = "tiny"
seeds = 2
steps = 600
eval_every = 300
eval_episodes = 2
[methods.ppo]
set = { num_envs = 2, num_steps = 50 }
[methods.dqn]
set = { learning_starts = 200, precision = "auto" }
[[tasks]]
env = "CartPole-v1"
"""


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def _rows(out):
    db = sqlite3.connect(out / "results.sqlite")
    db.row_factory = sqlite3.Row
    rows = {r["run_id"]: dict(r) for r in db.execute("SELECT * FROM runs")}
    db.close()
    return rows


def test_local_bench_writes_store_and_reports_then_skips_finished_runs(tmp_path, spec_file):
    out = tmp_path / "out"
    summary = run_bench(load_spec(spec_file), out, workers=2, progress=False)
    rows = _rows(out)
    assert len(rows) == 4 and all(r["status"] == "done" and r["attempts"] == 1 for r in rows.values())
    assert all(r["config_hash"] and r["git_commit"] and r["versions_json"] for r in rows.values())
    for name in ("report.md", "report.html", "summary.json", "results.sqlite"):
        assert (out / name).is_file()
    assert set(summary["scores"]) == {"ppo", "dqn"} and "IQM" in summary["aggregate"]["ppo"]
    assert json.loads((out / "summary.json").read_text())["runs"] == {"done": 4, "failed": 0}
    # the store and the report's compute table show what each run's precision resolved to
    auto = "bf16" if hardware_native_bf16("cpu") else "fp32"
    assert {r["method"]: r["precision"] for r in rows.values()} == {"ppo": "fp32", "dqn": auto}
    assert summary["compute"]["dqn"]["CartPole-v1"]["precision"] == auto
    assert "| Precision |" in (out / "report.md").read_text()
    run_bench(load_spec(spec_file), out, workers=2, progress=False)  # rerun: nothing is redone
    assert _rows(out) == rows


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a killed process waiting to be reaped (a zombie) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _bench_cmd(spec_file, out, workers=1):
    return [
        sys.executable,
        "-m",
        "gendm.cli",
        "bench",
        str(spec_file),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]


def _wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkill_of_the_driver_loses_no_finished_run(tmp_path, spec_file):
    out = tmp_path / "out"
    driver = subprocess.Popen(
        _bench_cmd(spec_file, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(
        lambda: (out / "results.sqlite").exists() and any(r["status"] == "done" for r in _rows(out).values())
    )
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = {k: v for k, v in _rows(out).items() if v["status"] == "done"}
    worker_pids = [int(v["worker"].split()[1]) for v in _rows(out).values() if v["status"] == "running"]
    for pid in worker_pids:  # workers die with their driver (PR_SET_PDEATHSIG)
        _wait_for(lambda pid=pid: not _alive(pid), timeout=30)
    assert subprocess.run(_bench_cmd(spec_file, out, workers=2), capture_output=True).returncode == 0
    after = _rows(out)
    assert all(r["status"] == "done" for r in after.values()) and len(after) == 4
    for run_id, row in done_before.items():  # finished runs were kept, not redone
        assert after[run_id]["finished_at"] == row["finished_at"] and after[run_id]["attempts"] == 1


@pytest.mark.slow
def test_sigkill_of_a_worker_fails_that_run_and_a_rerun_redoes_it(tmp_path, spec_file):
    out = tmp_path / "out"
    driver = subprocess.Popen(
        _bench_cmd(spec_file, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for(lambda: any(r["status"] == "running" for r in _rows(out).values()))
    victim = next(r for r in _rows(out).values() if r["status"] == "running")
    os.kill(int(victim["worker"].split()[1]), signal.SIGKILL)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1 and "FAILED" in output
    row = _rows(out)[victim["run_id"]]
    assert row["status"] == "failed" and "killed by signal 9" in row["error"]
    assert subprocess.run(_bench_cmd(spec_file, out, workers=2), capture_output=True).returncode == 0
    row = _rows(out)[victim["run_id"]]
    assert row["status"] == "done" and row["attempts"] == 2


@pytest.mark.slow
def test_ray_backend_runs_the_same_spec(tmp_path, spec_file):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    summary = run_bench(load_spec(spec_file), out, workers=2, backend="ray", progress=False)
    rows = _rows(out)
    assert summary["runs"] == {"done": 4, "failed": 0} and all(r["worker"] == "ray" for r in rows.values())
    assert all(Path(p).is_file() for p in (out / "report.html", out / "summary.json"))


ONE_RUN = """
name = "one"
seeds = 1
steps = 128
eval_every = 128
eval_episodes = 1
[methods.ppo]
set = { num_steps = 64 }
[[tasks]]
env = "CartPole-v1"
"""


def test_a_corrupt_store_is_refused_and_moving_it_aside_recovers_the_finished_runs(tmp_path):
    """What the corrupt-store error tells the user to do works: the rerun adopts the finished run from
    its summary.json (it is not trained again) and the report is whole."""
    from gendm.bench.store import StoreError

    spec, out = load_spec_text(tmp_path, ONE_RUN), tmp_path / "out"
    run_bench(spec, out, workers=1, progress=False)
    ((run_id, row),) = _rows(out).items()
    assert row["status"] == "done" and row["attempts"] == 1
    db = out / "results.sqlite"
    db.write_bytes(db.read_bytes()[:100] + b"\xff" * 4000)  # a torn header and garbage pages
    for name in ("results.sqlite-wal", "results.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    advice = f"(mv {db} {db}.bad) and rerun `gendm bench SPEC --out {out}`"
    with pytest.raises(StoreError, match="is corrupt or not an SQLite database") as e:
        run_bench(spec, out, workers=1, progress=False)
    assert advice in str(e.value)
    db.rename(db.with_name("results.sqlite.bad"))
    summary = run_bench(spec, out, workers=1, progress=False)
    after = _rows(out)[run_id]
    assert after["status"] == "done" and after["attempts"] == 0  # adopted, never marked running again
    assert after["final_return"] == row["final_return"] and summary["runs"] == {"done": 1, "failed": 0}


def test_an_unreadable_checkpoint_fails_the_run_saying_how_to_redo_it(tmp_path):
    from gendm.bench.worker import execute

    (run,) = load_spec_text(tmp_path, ONE_RUN).runs
    assert execute(run, tmp_path / "run")["status"] == "ok"
    (tmp_path / "run" / "checkpoint" / "meta.json").write_text("{")
    failed = execute(run, tmp_path / "run")
    assert failed["status"] == "failed" and "CorruptCheckpointError" in failed["error"]
    assert "not valid JSON" in failed["error"]
    assert f"Delete {tmp_path / 'run' / 'checkpoint'} and rerun `gendm bench`" in failed["error"]


def load_spec_text(tmp_path, text):
    path = tmp_path / "spec.toml"  # a spec file, as `gendm bench` reads it
    path.write_text(text)
    return load_spec(path)


def test_a_store_written_before_the_precision_column_opens_and_gains_it(tmp_path):
    path = tmp_path / "results.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, method TEXT NOT NULL, algo TEXT NOT NULL, "
        "task TEXT NOT NULL, seed INTEGER NOT NULL, config_hash TEXT NOT NULL, spec_json TEXT NOT NULL, "
        "status TEXT NOT NULL DEFAULT 'pending', error TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
        "started_at REAL, finished_at REAL, wall_s REAL, train_s REAL, env_steps INTEGER, "
        "grad_steps INTEGER, final_return REAL, env_steps_per_s REAL, grad_steps_per_s REAL, "
        "peak_rss_mb REAL, versions_json TEXT, git_commit TEXT, host TEXT, worker TEXT)"
    )
    db.execute("INSERT INTO runs VALUES ('r', 'm', 'sac', 't', 0, 'h', '{}', 'done', NULL, 1, 0, 1, 1, 1, "
               "10, 5, -1.5, 1, 1, 100, '{}', 'abc', 'host', 'w')")  # fmt: skip
    db.commit()
    db.close()
    store = Store(path)
    (record,) = store.records()
    store.close()
    assert record.final_return == -1.5 and record.precision is None

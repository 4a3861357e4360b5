"""Harness scaling: the same spec with 1 and 2 local workers (parallel efficiency = T1 / (2 * T2)),
and with the Ray backend at 2 workers (Ray vs local). Every run uses one torch thread. Two times per
configuration: the whole command (driver start-up and the report included, both serial) and the run
phase alone (first run started to last run finished, from results.sqlite).

    python benchmarks/harness.py --out benchmarks/results/harness.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name = "harness"
seeds = 4
steps = 30000
eval_every = 10000
eval_episodes = 5
[methods.ppo]
[methods.dqn]
set = { learning_starts = 1000 }
[[tasks]]
env = "CartPole-v1"
"""


def timed(args: list[str], out: Path) -> tuple[float, float]:
    t = time.perf_counter()
    subprocess.run([*args, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t
    db = sqlite3.connect(out / "results.sqlite")
    start, end = db.execute("SELECT MIN(started_at), MAX(finished_at) FROM runs").fetchone()
    db.close()
    return total, end - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "spec.toml").write_text(SPEC)
    base = [
        sys.executable,
        "-m",
        "gendm.cli",
        "bench",
        str(tmp / "spec.toml"),
        "--no-progress",
        "--threads-per-worker",
        "1",
    ]
    res = {}
    for name, extra in (
        ("local_1", ["--workers", "1"]),
        ("local_2", ["--workers", "2"]),
        ("ray_2", ["--workers", "2", "--backend", "ray"]),
    ):
        total, runs = timed([*base, *extra], tmp / name)
        res[name] = {"total_s": total, "run_phase_s": runs}
        print(f"{name}: {total:.1f} s in all, {runs:.1f} s running", flush=True)
    for key in ("total_s", "run_phase_s"):
        res[f"parallel_efficiency_{key}"] = res["local_1"][key] / (2 * res["local_2"][key])
        res[f"ray_over_local_{key}"] = res["ray_2"][key] / res["local_2"][key]
    res["runs"] = 8
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

"""Harness scaling: the same spec with 1 and 2 local workers (parallel efficiency = T1 / (2 * T2)),
and with the Ray backend at 2 workers (Ray vs local). Every run uses one torch thread.

    python benchmarks/harness.py --out benchmarks/results/harness.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name = "harness"
seeds = 4
steps = 20000
eval_every = 10000
eval_episodes = 5
[methods.ppo]
[methods.dqn]
set = { learning_starts = 1000 }
[[tasks]]
env = "CartPole-v1"
"""


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


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
        out = tmp / name
        res[name] = timed([*base, "--out", str(out), *extra])
        print(f"{name}: {res[name]:.1f} s", flush=True)
    res["parallel_efficiency_2_workers"] = res["local_1"] / (2 * res["local_2"])
    res["ray_over_local_time"] = res["ray_2"] / res["local_2"]
    res["runs"] = 8
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

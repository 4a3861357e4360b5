"""Load time and peak memory of a 1M-transition offline dataset (HalfCheetah-v5 shaped: 17-dim
observations, 6-dim actions, 1000 episodes of 1000 steps) stored in Minari's HDF5 format.

The dataset is written once with ``gendm.data.save_dataset`` (timed), then each repetition loads it
with ``gendm.data.load_dataset`` (h5py straight into preallocated arrays, then validation) in a
fresh subprocess, reporting the load time, the process's resident memory before loading (after
imports) and its peak resident memory (``resource.getrusage``, and ``VmHWM``). Target: < 10 s and
< 1 GB peak. Building and loading both run in subprocesses of a driver that imports only numpy:
Linux carries the parent's resident size at fork into the child's ``ru_maxrss`` across ``exec``, so
a driver holding the built dataset would inflate every child's peak.

    python benchmarks/dataset_load.py --reps 3 --out benchmarks/results/dataset_load.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASET_ID = "bench/halfcheetah/synthetic-v0"


def status_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def build(root: Path, episodes: int, length: int) -> float:
    """Write a contiguous synthetic dataset (next_obs[t] == obs[t+1] inside episodes); return seconds."""
    from gendm.data import OfflineDataset, save_dataset

    rng = np.random.default_rng(0)
    n = episodes * length
    obs = np.empty((n, 17), np.float32)
    next_obs = np.empty((n, 17), np.float32)
    for e in range(episodes):
        seq = rng.standard_normal((length + 1, 17), dtype=np.float32)
        obs[e * length : (e + 1) * length], next_obs[e * length : (e + 1) * length] = seq[:-1], seq[1:]
    truncations = np.zeros(n, bool)
    truncations[length - 1 :: length] = True
    ds = OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=next_obs,
        terminations=np.zeros(n, bool),
        truncations=truncations,
        episode_ends=np.arange(length, n + 1, length, dtype=np.int64),
        env_id="HalfCheetah-v5",
        metadata={"description": "synthetic benchmark data"},
    )
    t = time.perf_counter()
    save_dataset(ds, DATASET_ID, root=root, overwrite=True)
    return time.perf_counter() - t


def load_once(root: str) -> dict:
    """Run in a fresh process: import, load, report."""
    import resource

    import torch

    torch.set_num_threads(1)
    from gendm.data import load_dataset

    before = status_mb()
    t = time.perf_counter()
    ds = load_dataset(DATASET_ID, root=root)
    load_s = time.perf_counter() - t
    return {
        "transitions": len(ds),
        "episodes": ds.num_episodes,
        "load_s": round(load_s, 3),
        "rss_before_load_mb": round(before, 1),
        "rss_after_load_mb": round(status_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "vm_hwm_mb": round(status_mb("VmHWM"), 1),
        "arrays_mb": round(
            sum(a.nbytes for a in (ds.observations, ds.next_observations, ds.actions)) / 2**20, 1
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--length", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--root", type=Path, default=None, help="dataset root (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--build", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(load_once(a.child)))
        return
    if a.build:
        print(json.dumps(build(Path(a.build), a.episodes, a.length)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = a.root or Path(tmp)
        sizes = ["--episodes", str(a.episodes), "--length", str(a.length)]
        out = subprocess.run(
            [sys.executable, __file__, "--build", str(root), *sizes],
            capture_output=True,
            text=True,
            check=True,
        )
        save_s = json.loads(out.stdout.strip().splitlines()[-1])
        size_mb = sum(f.stat().st_size for f in (root / DATASET_ID).rglob("*") if f.is_file()) / 2**20
        print(f"wrote {a.episodes * a.length} transitions ({size_mb:.0f} MiB on disk) in {save_s:.1f} s")
        reps = []
        for i in range(a.reps):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root)], capture_output=True, text=True, check=True
            )
            reps.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"rep {i}: {reps[-1]}")
    res = {"save_s": round(save_s, 3), "file_mib": round(size_mb, 1), "reps": reps}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

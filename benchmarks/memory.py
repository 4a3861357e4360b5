"""Resident memory of a 1M-transition replay buffer for HalfCheetah-v5 (17-dim observations, 6-dim
actions), filled completely, measured as the process RSS before and after.

    python benchmarks/memory.py --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gendm.data import ReplayBuffer


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    before = rss_mb()
    buf = ReplayBuffer(a.capacity, (17,), (6,), seed=0)
    chunk = 10_000
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(a.capacity // chunk):
        buf.add(
            rng.standard_normal((chunk, 17), np.float32),
            rng.standard_normal((chunk, 6), np.float32),
            rng.standard_normal(chunk, np.float32),
            rng.standard_normal((chunk, 17), np.float32),
            np.zeros(chunk, bool),
            np.zeros(chunk, bool),
        )
    fill_s = time.perf_counter() - t
    after = rss_mb()
    t = time.perf_counter()
    for _ in range(1000):
        buf.sample(256)
    sample_us = (time.perf_counter() - t) / 1000 * 1e6
    res = {
        "capacity": a.capacity,
        "buffer_nbytes_mb": buf.nbytes() / 2**20,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "buffer_resident_mb": after - before,
        "fill_s": fill_s,
        "sample_256_us": sample_us,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

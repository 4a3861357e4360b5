"""Per-call cost of the parts of gendm's off-policy loop at HalfCheetah sizes (17-dim observations,
6-dim actions, SAC 256x256, batch 256), each timed alone on warm caches: ``ReplayBuffer.add`` of one
transition from numpy arrays, ``ReplayBuffer.sample(256)``, ``SAC.act`` on one observation, and one
``SAC.update`` (fp32 and bf16) including its ``sample``. Best of ``--rounds`` rounds, in microseconds.

Run it against an older checkout to compare (``PYTHONPATH=<old>/src``); inside a training loop every
part costs more (colder caches), so these are lower bounds, for A/B comparisons. ``--set`` changes the
SAC config (e.g. ``--set update=reference`` times the autograd reference update instead of the
hand-derived one that ``update=auto`` picks here).

    python benchmarks/loop_parts.py --out benchmarks/results/loop_parts.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import gendm
from gendm.agents.sac import SAC, SACConfig
from gendm.core.config import apply_overrides
from gendm.data import ReplayBuffer

OBS, ACT, BATCH = 17, 6, 256


def best_us(fn, calls: int, rounds: int) -> float:
    for _ in range(max(calls // 10, 5)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return round(best * 1e6, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a SACConfig override")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
    buffer = ReplayBuffer(50_000, (OBS,), (ACT,), "cpu", seed=0)
    obs = rng.standard_normal((1, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, (1, ACT)).astype(np.float32)
    reward, done = np.array([0.5]), np.array([False])
    for _ in range(10_000):
        buffer.add(obs, action, reward, obs, done, done)
    results = {
        "replay_add_us": best_us(lambda: buffer.add(obs, action, reward, obs, done, done), 5000, a.rounds),
        "replay_sample_256_us": best_us(lambda: buffer.sample(BATCH), 2000, a.rounds),
    }
    obs_t = torch.as_tensor(obs)
    for precision in ("fp32", "bf16"):
        config = apply_overrides(SACConfig(precision=precision), a.set)
        agent = SAC(config, obs_space, act_space, torch.device("cpu"))
        if precision == "fp32":
            results["sac_act_us"] = best_us(lambda agent=agent: agent.act(obs_t), 3000, a.rounds)
        results[f"sac_update_{precision}_us"] = best_us(
            lambda agent=agent: agent.update(buffer.sample(BATCH)), 200, a.rounds
        )
    here = Path(gendm.__file__).parent  # the gendm checkout imported, which may be an older worktree
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit.stdout.strip(), "threads": a.threads}
    if a.set:
        record["overrides"] = a.set
    record |= results
    print(json.dumps(record, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Diffuser's cost on Hopper-shaped windows (obs 11, act 3, H=32, the paper's U-Net and value net):
gradient steps per second and planning latency per action (one observation).

    python benchmarks/diffuser_speed.py [--threads 1] [--device cpu] [--out results.json]

Planning rows: ``none`` (1 unguided plan), ``guided`` (1 guided plan), ``sorted`` / ``both`` with N plans;
every plan runs ``sampling_steps`` denoising steps (20 = the paper's T). Random weights: the cost does not
depend on training.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.diffuser import Diffuser, DiffuserConfig, WindowBatch


def build(device: torch.device, **overrides) -> Diffuser:
    obs_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    return Diffuser(DiffuserConfig(**overrides), obs_space, act_space, device)


def time_it(fn, warmup: int, reps: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for batch_size in (32, 64):
        agent = build(device, batch_size=batch_size)
        h = agent.config.horizon
        batch = WindowBatch(
            torch.randn(batch_size, h, 11, device=device),
            torch.rand(batch_size, h, 3, device=device) * 2 - 1,
            torch.zeros(batch_size, h, dtype=torch.bool, device=device),
            torch.randn(batch_size, device=device),
        )
        dt = time_it(lambda: agent.update(batch), 3, args.reps, device)  # noqa: B023
        rows.append({"what": "update", "batch_size": batch_size, "steps_per_s": 1 / dt, "ms": 1e3 * dt})
        print(rows[-1], flush=True)
    obs = torch.randn(1, 11, device=device)
    for planning, plans, steps in [
        ("none", 1, 20),
        ("guided", 1, 20),
        ("sorted", 16, 20),
        ("sorted", 64, 20),
        ("both", 16, 20),
        ("both", 64, 20),
        ("sorted", 16, 5),
    ]:
        agent = build(device, planning=planning, num_plans=plans, sampling_steps=steps)
        dt = time_it(lambda: agent.plan(obs), 1, max(1, args.reps // 2), device)  # noqa: B023
        rows.append(
            {"what": "plan", "planning": planning, "num_plans": plans, "steps": steps, "ms": 1e3 * dt}
        )
        print(rows[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "device": args.device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

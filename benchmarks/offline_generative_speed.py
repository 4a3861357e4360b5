"""Gradient steps per second of the offline agents on Hopper-shaped data (obs 11, act 3, batch 256).

The agents are built with their default configs (the papers' network sizes) on a synthetic in-memory
batch, so only the update is timed — no sampler, no evaluation. One process, ``--threads`` torch
threads (1 by default: the benchmark runner's share of a core). V-GPS's update is an IQL critic step
(no actor), measured here without a base policy; its acting cost is K base-policy calls.

    python benchmarks/offline_generative_speed.py --algos iql idql diffusion_ql vgps --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.critics import IQLCritic
from gendm.data.replay import Batch
from gendm.train import all_methods

OBS, ACT, BATCH = 11, 3, 256
DEVICE = torch.device("cpu")  # --device sets it


def batch(gen: torch.Generator) -> Batch:
    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    actions = torch.rand(BATCH, ACT, generator=gen) * 2 - 1
    parts = rand(BATCH, OBS), actions, rand(BATCH), rand(BATCH, OBS), torch.zeros(BATCH), torch.zeros(BATCH)
    return Batch(*(p.to(DEVICE) for p in parts))


class CriticOnly:
    """V-GPS's update without loading a base policy: one IQL critic step (its whole update)."""

    def __init__(self) -> None:
        self.critic = IQLCritic(OBS, ACT).to(DEVICE)
        self.opt = torch.optim.Adam(self.critic.trainable(), lr=3e-4, fused=True)

    def update(self, b: Batch) -> None:
        loss, _, _ = self.critic.losses(b.obs, b.actions, b.rewards, b.next_obs, b.terminations, 0.99, 0.7)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.critic.update_target(0.005)


def make(algo: str, overrides: dict):
    if algo == "vgps":
        return CriticOnly()
    spec = all_methods().get(algo)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)
    return spec.builder(spec.config_cls(**overrides), obs_space, act_space, DEVICE, 1_000_000)


def steps_per_s(agent, seconds: float, gen: torch.Generator) -> float:
    batches = [batch(gen) for _ in range(8)]
    for i in range(5):  # warm-up
        agent.update(batches[i % 8])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        agent.update(batches[n % 8])
        n += 1
    return n / (time.perf_counter() - t0)


def acts_per_s(agent, seconds: float) -> float | None:
    if not hasattr(agent, "act"):
        return None
    obs = torch.randn(1, OBS, device=DEVICE)
    agent.act(obs)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        agent.act(obs)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", nargs="+", default=["iql", "idql", "diffusion_ql", "vgps"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--set", nargs="*", default=[], help="algo:key=value overrides, e.g. diffusion_ql:activation=silu"
    )
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    overrides: dict[str, dict] = {}
    for item in args.set:
        algo, kv = item.split(":", 1)
        key, value = kv.split("=", 1)
        overrides.setdefault(algo, {})[key] = json.loads(value) if value[:1].isdigit() else value
    rows = []
    for algo in args.algos:
        agent = make(algo, overrides.get(algo, {}))
        row = {
            "algo": algo,
            "overrides": overrides.get(algo, {}),
            "grad_steps_per_s": round(steps_per_s(agent, args.seconds, gen), 1),
            "acts_per_s_batch1": None if algo == "vgps" else round(acts_per_s(agent, args.seconds / 2), 1),
            "threads": args.threads,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

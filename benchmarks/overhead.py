"""Overhead of gendm's SAC update against plain PyTorch on the same networks (Pendulum-sized: 3-dim
observations, 1-dim actions, 256x256 actor and twin critics, batch 256).

- floor: one forward/backward/Adam step through the actor and both critics (the least any SAC
  update could cost: every network once forward and once backward);
- plain SAC: the same SAC update written CleanRL-style in plain PyTorch (separate critic modules,
  three optimisers, a Python loop for the Polyak update);
- gendm SAC: ``gendm.agents.sac.SAC.update`` in fp32 and in bf16.

Subnormal floats are flushed to zero for every variant, as gendm's training loop does.
``--width 8 --batch 8`` shrinks networks and batch until the arithmetic is negligible, which leaves
each variant's fixed per-update cost (Python, dispatch, autograd, optimiser bookkeeping).

    python benchmarks/overhead.py --threads 1 --out benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gendm.agents.sac import SAC, SACConfig
from gendm.data import ReplayBuffer

B, OBS, ACT, H = 256, 3, 1, 256


def net(i, o):
    return nn.Sequential(nn.Linear(i, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, o))


def make_floor():
    actor, q1, q2 = net(OBS, 2 * ACT), net(OBS + ACT, 1), net(OBS + ACT, 1)
    opt = torch.optim.Adam([*actor.parameters(), *q1.parameters(), *q2.parameters()], lr=3e-4)
    x, xa = torch.randn(B, OBS), torch.randn(B, OBS + ACT)

    def step():
        loss = actor(x).sum() + q1(xa).sum() + q2(xa).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def make_plain_sac(buf):
    actor, q1, q2, t1, t2 = net(OBS, 2 * ACT), *(net(OBS + ACT, 1) for _ in range(4))
    t1.load_state_dict(q1.state_dict())
    t2.load_state_dict(q2.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    a_opt, q_opt = (
        torch.optim.Adam(actor.parameters(), 3e-4),
        torch.optim.Adam([*q1.parameters(), *q2.parameters()], 3e-4),
    )
    al_opt = torch.optim.Adam([log_alpha], 3e-4)

    def pi(o):
        mean, log_std = actor(o).chunk(2, -1)
        std = log_std.clamp(-20, 2).exp()
        x = mean + std * torch.randn_like(mean)
        y = torch.tanh(x)
        logp = (torch.distributions.Normal(mean, std).log_prob(x) - torch.log(1 - y.pow(2) + 1e-6)).sum(-1)
        return y, logp

    def step():
        b = buf.sample(B)
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            na, nlogp = pi(b.next_obs)
            nx = torch.cat([b.next_obs, na], -1)
            target = b.rewards + 0.99 * (1 - b.terminations) * (
                torch.min(t1(nx), t2(nx)).squeeze(-1) - alpha * nlogp
            )
        x = torch.cat([b.obs, b.actions], -1)
        q_loss = 0.5 * (F.mse_loss(q1(x).squeeze(-1), target) + F.mse_loss(q2(x).squeeze(-1), target))
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        a, logp = pi(b.obs)
        xa = torch.cat([b.obs, a], -1)
        a_loss = (alpha * logp - torch.min(q1(xa), q2(xa)).squeeze(-1)).mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        al_loss = -(log_alpha * (logp.detach() - ACT)).mean()
        al_opt.zero_grad()
        al_loss.backward()
        al_opt.step()
        with torch.no_grad():
            for t, s in ((t1, q1), (t2, q2)):
                for pt, ps in zip(t.parameters(), s.parameters()):
                    pt.mul_(0.995).add_(0.005 * ps)

    return step


def make_gendm(buf, precision):
    env = gym.make("Pendulum-v1")
    config = SACConfig(precision=precision, hidden=(H, H), batch_size=B)
    agent = SAC(config, env.observation_space, env.action_space, torch.device("cpu"))
    return lambda: agent.update(buf.sample(B))


def time_it(fn, n):
    for _ in range(20):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def main():
    global B, H
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=300, help="updates per measurement")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--width", type=int, default=H, help=f"hidden width of every network (default {H})")
    p.add_argument("--batch", type=int, default=B, help=f"batch size (default {B})")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    B, H = a.batch, a.width
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as every gendm training run does (BENCHMARKS.md §3), for all variants
    buf = ReplayBuffer(10_000, (OBS,), (ACT,), seed=0)
    n = 10_000
    buf.add(
        np.random.randn(n, OBS),
        np.random.uniform(-2, 2, (n, ACT)),
        np.random.randn(n),
        np.random.randn(n, OBS),
        np.zeros(n),
        np.zeros(n),
    )
    variants = {
        "floor (fwd/bwd/Adam, all nets)": make_floor(),
        "plain PyTorch SAC": make_plain_sac(buf),
        "gendm SAC fp32": make_gendm(buf, "fp32"),
        "gendm SAC bf16": make_gendm(buf, "bf16"),
    }
    times = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, fn in variants.items():
            times[k].append(time_it(fn, a.n))
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<32} {v:7.2f} ms/update  ({1e3 / v:6.1f}/s)  rounds: {[round(x, 2) for x in times[k]]}")
    if a.out:
        a.out.write_text(
            json.dumps(
                {
                    "threads": a.threads,
                    "batch": B,
                    "hidden": H,
                    "median_ms": med,
                    "rounds_ms": times,
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

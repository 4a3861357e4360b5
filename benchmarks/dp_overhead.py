"""Training-throughput overhead of Diffusion Policy's update against a bare PyTorch loop over the same
network and loss (the method of ``benchmarks/overhead.py``: same batch, same optimiser, interleaved
rounds, median reported).

- bare PyTorch: the same denoiser module (``ResidualMLPDenoiser`` or ``TemporalUNet1D``), the DDPM
  epsilon loss written out by hand (normalise observations, scale actions, draw t and noise, noise the
  chunk, regress the noise), fused AdamW with the same hyperparameters, an EMA by
  ``torch._foreach_lerp_``; no learning-rate schedule, no metrics;
- gendm: ``DiffusionPolicy.update`` on the same pre-drawn batch (fp32, and bf16 autocast);
- gendm + sampler: ``update(sampler.sample(B))``, i.e. what the offline loop runs per step (on-device
  gathering of To observations and Tp actions per sequence).

Two sizes: ``demo`` (the demo's and test's MLP: width 128, depth 2, Tp 8, batch 128) and ``default``
(DiffusionPolicyConfig's defaults with the MLP denoiser: width 256, depth 3, Tp 16, batch 256).

    .venv/bin/python benchmarks/dp_overhead.py --threads 1 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gendm.agents.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig
from gendm.data.collect import collect
from gendm.envs import make_env

ENV = "gendm/TwoPathReach-v0"
SIZES = {
    "demo": {"width": 128, "depth": 2, "pred_horizon": 8, "action_horizon": 4, "batch_size": 128},
    "default": {"width": 256, "depth": 3, "pred_horizon": 16, "action_horizon": 8, "batch_size": 256},
}


def make_bare(agent: DiffusionPolicy, batch):
    """The same network, loss and optimiser in plain PyTorch (weights copied from the agent's)."""
    import copy

    c = agent.config
    net = copy.deepcopy(agent.model.net)
    ema = [p.detach().clone() for p in net.parameters()]
    params = list(net.parameters())
    fused = agent.device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(
        params, lr=c.learning_rate, betas=(0.95, 0.999), weight_decay=c.weight_decay, fused=fused or None
    )
    abars = agent.model.alphas_cumprod.clone()
    mean, std = agent.obs_norm.mean.clone(), agent.obs_norm.std.clone()
    low, high = agent.action_scaler.low.clone(), agent.action_scaler.high.clone()
    T = c.num_train_steps

    def step():
        b = batch.obs.shape[0]
        cond = ((batch.obs - mean) / std).reshape(b, -1)
        cond = torch.cat([cond, torch.ones(b, 1, device=cond.device)], dim=-1)
        x0 = (2 * (batch.actions - low) / (high - low) - 1).clamp(-1, 1)
        t = torch.randint(0, T, (b,), device=x0.device)
        abar = abars[t].view(b, 1, 1)
        eps = torch.randn_like(x0)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        loss = ((net(x_t, t.float() / T, cond) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - c.ema_decay)

    return step


def time_it(fn, n: int, device: torch.device) -> float:
    for _ in range(10):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=100, help="updates per measurement")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--sizes", default="demo,default")
    p.add_argument("--denoiser", default="mlp", choices=["mlp", "unet"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_overhead.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    data = collect(ENV, "expert", episodes=100, seed=0, progress=False)
    env = make_env(ENV, 1)
    results = {}
    for size in a.sizes.split(","):
        torch.manual_seed(0)
        variants = {}
        for precision in ("fp32", "bf16"):
            config = DiffusionPolicyConfig(denoiser=a.denoiser, precision=precision, **SIZES[size])
            agent = DiffusionPolicy(
                config, env.single_observation_space, env.single_action_space, device, 10**6
            )
            agent.prepare(data)
            sampler = agent.make_sampler(data, device, 0)
            batch = sampler.sample(config.batch_size)
            if precision == "fp32":
                variants["bare PyTorch"] = make_bare(agent, batch)
                variants["gendm update (same batch)"] = lambda ag=agent, b=batch: ag.update(b)
                variants["gendm update + sampler"] = lambda ag=agent, s=sampler, n=config.batch_size: (
                    ag.update(s.sample(n))
                )
            else:
                variants["gendm update bf16 (same batch)"] = lambda ag=agent, b=batch: ag.update(b)
        times = {k: [] for k in variants}
        for _ in range(a.rounds):
            for k, fn in variants.items():
                times[k].append(time_it(fn, a.n, device))
        med = {k: float(np.median(v)) for k, v in times.items()}
        ratio = med["gendm update (same batch)"] / med["bare PyTorch"]
        print(f"\n{size} ({a.denoiser}, {SIZES[size]}), {a.threads} thread(s), {a.device}:")
        for k, v in med.items():
            print(
                f"  {k:<32} {v:8.2f} ms/update  ({1e3 / v:7.1f}/s)  rounds: {[round(x, 2) for x in times[k]]}"
            )
        print(f"  gendm / bare time ratio: {ratio:.3f}")
        results[size] = {
            "config": SIZES[size],
            "median_ms": med,
            "rounds_ms": times,
            "ratio_gendm_to_bare": ratio,
        }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "threads": a.threads,
                "device": a.device,
                "denoiser": a.denoiser,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "sizes": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

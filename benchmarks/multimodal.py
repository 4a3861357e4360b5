"""Multimodal imitation: Gaussian BC, mixture-density BC and discretised-action BC vs Diffusion Policy on
``gendm/TwoPathReach-v0``, and the quality-latency frontier of Diffusion Policy's solvers.

Data: ``--episodes`` episodes of the scripted bimodal expert (a fair coin for left or right per
episode; every episode succeeds). Per seed, these policies are trained for ``--steps`` gradient steps:
Gaussian BC (``bc``, 256x256, d3rlpy's lr 1e-3); the multimodal baselines a reviewer asks for, trained
and evaluated exactly like it (same data, steps, seeds, evaluation episodes, ``bc``'s trunk, lr and
batch): mixture-density BC (``mdn_bc``, K = 2, 3, 4, 5 Gaussian components) and discretised-action BC
(``bet_bc``, 16 k-means action bins plus residual offsets, as Behavior Transformers); and Diffusion
Policy (``diffusion_policy``,
residual-MLP denoiser 128 wide, 2 blocks, Tp 8 / Ta 4 / To 2, lr 1e-3, batch 128) with four models: a
diffusion model predicting epsilon (T=100, the paper's parameterisation), one predicting v (the
demo's), a rectified-flow model and a shortcut model. Each is evaluated at its **last** weights (the
EMA for Diffusion Policy) on ``--eval-episodes`` episodes that start from fixed seeds: one episode per
sub-env of a vector env, so early-ending (successful) episodes are not over-counted. The v model is
evaluated with DDPM, DDIM and DPM-Solver++(2M) at several step counts, the epsilon model with each
solver's headline step count (DDPM 100 is the paper's simulation setting, DDIM 10 its real-world
one), the flow model with Euler and the shortcut model with its own solver at several step counts.
The BC-family policies are evaluated with ``act(deterministic=True)`` (bc: the mean; mdn_bc: the
mean of the most probable component; bet_bc: the most probable bin plus its offset) and, as extra
rows with solver ``sample``, with ``deterministic=False`` (torch seeded per seed), since Diffusion
Policy samples in evaluation too.
Success rates are aggregated over seeds with the IQM and a 95% stratified-bootstrap CI
(``gendm.bench.stats``); ``right`` (share of episodes that passed the disc on the right) measures
mode coverage.

Latency: ``DiffusionPolicy.sample_chunk`` (one action chunk per row) at batch 1 and batch 64, median
of ``--reps`` calls, for every solver and step count, and one ``act`` call for each BC-family policy
(``--no-latency`` skips all of it).
Writes ``--out`` (default ``benchmarks/results/multimodal.json``: raw per-seed numbers) and the same
name with ``.png`` (success vs latency, one curve per solver, a marker per BC-family policy), and
prints markdown tables.

    .venv/bin/python benchmarks/multimodal.py --seeds 5 [--device cuda] [--out benchmarks/results/X.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gendm.agents.bc import BC, BCConfig
from gendm.agents.bet_bc import BeTBC, BeTBCConfig
from gendm.agents.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig
from gendm.agents.mdn_bc import MDNBC, MDNBCConfig
from gendm.bench import stats
from gendm.core.provenance import provenance
from gendm.core.seeding import seed_everything
from gendm.data.collect import collect
from gendm.envs import make_env

ENV = "gendm/TwoPathReach-v0"
EVAL_SEED = 10_000
DP = {  # Diffusion Policy for a short chunk on a CPU (the demo's and the test's configuration)
    "denoiser": "mlp",
    "width": 128,
    "depth": 2,
    "pred_horizon": 8,
    "action_horizon": 4,
    "learning_rate": 1e-3,
    "lr_warmup_steps": 50,
    "batch_size": 128,
}
BC_FAMILY = {  # model name: (label, agent class, config class, overrides); all use bc's trunk, lr, batch
    "bc": ("Gaussian BC", BC, BCConfig, {}),
    "mdn_bc-K2": ("MDN BC, K=2", MDNBC, MDNBCConfig, {"num_components": 2}),
    "mdn_bc-K3": ("MDN BC, K=3", MDNBC, MDNBCConfig, {"num_components": 3}),
    "mdn_bc-K4": ("MDN BC, K=4", MDNBC, MDNBCConfig, {"num_components": 4}),
    "mdn_bc-K5": ("MDN BC, K=5", MDNBC, MDNBCConfig, {"num_components": 5}),
    "bet_bc": ("BeT-style BC, 16 bins", BeTBC, BeTBCConfig, {}),
}
BC_ACTING = {"-": True, "sample": False}  # solver column: deterministic act / sampled act
MODELS = {  # name: config overrides
    "diffusion-eps": {"family": "diffusion", "prediction": "eps"},  # the paper's parameterisation
    "diffusion-v": {"family": "diffusion", "prediction": "v"},  # the demo's
    "flow": {"family": "flow"},
    "shortcut": {"family": "shortcut"},
}
SOLVER_STEPS = {  # (model, solver): step counts on the frontier
    ("diffusion-v", "ddpm"): [5, 10, 20, 50, 100],
    ("diffusion-v", "ddim"): [1, 2, 5, 10, 20, 50],
    ("diffusion-v", "dpmpp_2m"): [1, 2, 5, 10, 20],
    ("diffusion-eps", "ddpm"): [100],
    ("diffusion-eps", "ddim"): [10],
    ("diffusion-eps", "dpmpp_2m"): [10],
    ("flow", "euler"): [1, 2, 5, 10, 20],
    ("shortcut", "shortcut"): [1, 2, 4, 8, 16],
}
HEADLINE = [  # (label, model, solver, steps)
    ("DP diffusion (eps), DDPM 100", "diffusion-eps", "ddpm", 100),
    ("DP diffusion (eps), DDIM 10", "diffusion-eps", "ddim", 10),
    ("DP diffusion (eps), DPM-Solver++ 10", "diffusion-eps", "dpmpp_2m", 10),
    ("DP diffusion (v), DDPM 100", "diffusion-v", "ddpm", 100),
    ("DP diffusion (v), DDIM 10", "diffusion-v", "ddim", 10),
    ("DP diffusion (v), DPM-Solver++ 10", "diffusion-v", "dpmpp_2m", 10),
    ("DP flow, Euler 10", "flow", "euler", 10),
    ("DP shortcut, 1 step", "shortcut", "shortcut", 1),
    ("DP shortcut, 2 steps", "shortcut", "shortcut", 2),
]


def evaluate(agent, episodes: int, device: torch.device, deterministic: bool = True) -> dict[str, float]:
    """One episode per sub-env from fixed seeds: success rate, crash rate, right-side share."""
    env = make_env(ENV, episodes, seed=EVAL_SEED)
    obs, _ = env.reset(seed=EVAL_SEED)
    if hasattr(agent, "reset_episodes"):
        agent.reset_episodes(np.ones(episodes, dtype=bool))
    outcome = np.full(episodes, -1)  # -1 running, 0 timeout, 1 success, 2 crash
    side = np.zeros(episodes)
    while (outcome < 0).any():
        action = agent.act(torch.as_tensor(obs, device=device), deterministic=deterministic).cpu().numpy()
        obs, _, term, trunc, info = env.step(action)
        ended = (term | trunc) & (outcome < 0)
        if ended.any():
            final = info["final_info"]
            outcome[ended] = np.where(final["is_success"][ended], 1, np.where(term[ended], 2, 0))
            side[ended] = final["side"][ended]
        if (term | trunc).any() and hasattr(agent, "reset_episodes"):
            agent.reset_episodes(term | trunc)
    env.close()
    return {
        "success": float((outcome == 1).mean()),
        "crash": float((outcome == 2).mean()),
        "right": float((side > 0).mean()),
    }


def train(agent, data, steps: int, seed: int, device: torch.device) -> float:
    agent.prepare(data)
    sampler = agent.make_sampler(data, device, seed)
    batch_size = agent.config.batch_size
    t0 = time.perf_counter()
    for _ in range(steps):
        agent.update(sampler.sample(batch_size))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def latency_ms(fn, device: torch.device, reps: int) -> tuple[float, float]:
    """Median and minimum wall-clock of ``reps`` calls, in ms (the minimum is the least disturbed by
    other processes on a shared machine)."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3000, help="gradient steps per policy")
    p.add_argument("--episodes", type=int, default=100, help="expert episodes in the dataset")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--reps", type=int, default=20, help="calls per latency measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/multimodal.json"))
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")
    p.add_argument("--plot-only", action="store_true", help="redraw tables and figure from --out")
    a = p.parse_args()
    if a.plot_only:
        saved = json.loads(a.out.read_text())
        summarize(saved["rows"], saved["latency"])
        plot(saved["rows"], saved["latency"], a.out.with_suffix(".png"))
        return
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    where = provenance(a.threads)  # at the start: the tree and machine the run used
    data = collect(ENV, "expert", episodes=a.episodes, seed=0, progress=False)
    print(f"dataset: {a.episodes} expert episodes, {len(data)} transitions", flush=True)
    obs_space, act_space = make_env(ENV, 1).single_observation_space, make_env(ENV, 1).single_action_space
    rows, latency = [], []
    for seed in range(a.seeds):
        for model, (_, agent_cls, config_cls, extra) in BC_FAMILY.items():
            seed_everything(seed)
            agent = agent_cls(config_cls(**extra), obs_space, act_space, device, a.steps)
            train_s = train(agent, data, a.steps, seed, device)
            for solver, deterministic in BC_ACTING.items():
                torch.manual_seed(EVAL_SEED + seed)  # the sampled actions' noise
                result = evaluate(agent, a.eval_episodes, device, deterministic)
                row = {
                    "seed": seed,
                    "model": model,
                    "solver": solver,
                    "steps": 0,
                    "train_s": train_s,
                    **result,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                if seed == 0 and not a.no_latency:
                    for batch in (1, 64):
                        obs = torch.zeros(batch, *obs_space.shape, device=device)
                        ms, ms_min = latency_ms(
                            lambda o=obs, p=agent, d=deterministic: p.act(o, deterministic=d), device, a.reps
                        )
                        latency.append(
                            {
                                "model": model,
                                "solver": solver,
                                "steps": 0,
                                "batch": batch,
                                "ms": ms,
                                "ms_min": ms_min,
                            }
                        )
        for model, extra in MODELS.items():
            seed_everything(seed)
            config = DiffusionPolicyConfig(**DP, **extra)
            agent = DiffusionPolicy(config, obs_space, act_space, device, a.steps)
            train_s = train(agent, data, a.steps, seed, device)
            for (m, solver), step_counts in SOLVER_STEPS.items():
                if m != model:
                    continue
                for steps in step_counts:
                    config.solver, config.sample_steps = solver, steps
                    agent.generator.manual_seed(seed)
                    row = {
                        "seed": seed,
                        "model": model,
                        "solver": solver,
                        "steps": steps,
                        "train_s": train_s,
                        **evaluate(agent, a.eval_episodes, device),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if seed == 0 and not a.no_latency:
                        for batch in (1, 64):
                            window = torch.randn(batch, config.obs_horizon, agent.obs_dim, device=device)
                            ms, ms_min = latency_ms(
                                lambda w=window, p=agent: p.sample_chunk(w), device, a.reps
                            )
                            latency.append(
                                {
                                    "model": model,
                                    "solver": solver,
                                    "steps": steps,
                                    "batch": batch,
                                    "ms": ms,
                                    "ms_min": ms_min,
                                }
                            )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "device": a.device,
        "threads": a.threads,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "dataset_transitions": len(data),
        "args": {k: str(v) for k, v in vars(a).items()},
        "provenance": where,
        "dp_config": DP,
        "bc_family": {
            model: {"algo": cls.__module__.rsplit(".", 1)[-1], **extra}
            for model, (_, cls, _, extra) in BC_FAMILY.items()
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"meta": meta, "rows": rows, "latency": latency}, indent=1))
    summarize(rows, latency)
    plot(rows, latency, a.out.with_suffix(".png"))


def _picked(rows, model, solver, steps) -> list[dict]:
    return sorted(
        (r for r in rows if (r["model"], r["solver"], r["steps"]) == (model, solver, steps)),
        key=lambda r: r["seed"],
    )


def _success(rows, model, solver, steps) -> np.ndarray:
    return np.array([r["success"] for r in _picked(rows, model, solver, steps)])


def _lat(latency, model, solver, steps, batch) -> float:
    """Median latency in ms, NaN where it was not measured (``--no-latency``, or an older file)."""
    return next(
        (
            x["ms"]
            for x in latency
            if (x["model"], x["solver"], x["steps"], x["batch"]) == (model, solver, steps, batch)
        ),
        math.nan,
    )


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _methods(rows) -> list[tuple[str, str, str, int]]:
    """(label, model, solver, steps) of the main table: the BC family (acting deterministically, then
    sampling), then Diffusion Policy's headline settings; methods absent from ``rows`` are left out."""
    bc_family = [
        (label if solver == "-" else f"{label}, sampled", model, solver, 0)
        for solver in BC_ACTING
        for model, (label, *_) in BC_FAMILY.items()
    ]
    return [m for m in [*bc_family, *HEADLINE] if _picked(rows, *m[1:])]


def summarize(rows, latency) -> None:
    print("\n| method | success IQM [95% CI] | per-seed success | chunk latency b=1 / b=64 (ms) |")
    print("|---|---|---|---|")
    for label, model, solver, steps in _methods(rows):
        s = _success(rows, model, solver, steps)
        point, lo, hi = stats.stratified_bootstrap_ci(s[:, None], stats.iqm, reps=20_000)
        lat = (
            f"{_ms(_lat(latency, model, solver, steps, 1))} / {_ms(_lat(latency, model, solver, steps, 64))}"
        )
        print(f"| {label} | {point:.2f} [{lo:.2f}, {hi:.2f}] | {', '.join(f'{x:.2f}' for x in s)} | {lat} |")
    print("\n| method | crash mean | right-side share mean (per seed) |")
    print("|---|---|---|")
    for label, model, solver, steps in _methods(rows):
        picked = _picked(rows, model, solver, steps)
        crash = np.mean([r["crash"] for r in picked])
        right = [r["right"] for r in picked]
        print(f"| {label} | {crash:.2f} | {np.mean(right):.2f} ({', '.join(f'{x:.2f}' for x in right)}) |")
    print("\n| model | solver | steps | success mean (per seed) | latency b=1 (ms) | latency b=64 (ms) |")
    print("|---|---|---|---|---|---|")
    for (model, solver), step_counts in SOLVER_STEPS.items():
        for steps in step_counts:
            s = _success(rows, model, solver, steps)
            if not len(s):
                continue
            b1, b64 = (_ms(_lat(latency, model, solver, steps, b)) for b in (1, 64))
            per_seed = ", ".join(f"{x:.2f}" for x in s)
            print(f"| {model} | {solver} | {steps} | {s.mean():.2f} ({per_seed}) | {b1} | {b64} |")


def plot(rows, latency, path: Path) -> None:
    if not latency:
        print("\nno latency measured (--no-latency): no figure")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    markers = iter("*PXDv^<>")
    bc_markers = {m: next(markers) for m in BC_FAMILY if m != "bc"}
    for ax, batch in zip(axes, (1, 64)):
        for (model, solver), step_counts in SOLVER_STEPS.items():
            xs = [_lat(latency, model, solver, k, batch) for k in step_counts]
            ys = [_success(rows, model, solver, k).mean() for k in step_counts]
            single = len(step_counts) == 1  # the epsilon model's headline points
            (line,) = ax.plot(xs, ys, marker="s" if single else "o", label=f"{model} / {solver}")
            for x, y, k in zip(xs, ys, step_counts):
                ax.annotate(
                    str(k),
                    (x, y),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                    color=line.get_color(),
                )
        for model, marker in bc_markers.items():  # one point per policy: deterministic act
            s = _success(rows, model, "-", 0)
            if len(s):
                x = _lat(latency, model, "-", 0, batch)
                color = plt.get_cmap("Dark2")(list(bc_markers).index(model))
                ax.plot([x], [s.mean()], marker=marker, ls="none", ms=9, color=color, alpha=0.8, label=model)
        bc_y = _success(rows, "bc", "-", 0).mean()
        ax.axhline(bc_y, color="grey", ls="--", lw=1, label="Gaussian BC")
        ax.set_xscale("log")
        ax.set_xlabel(f"sampling latency at batch {batch} (ms, log; DP: one chunk, BC: one act)")
        ax.set_title(f"batch {batch}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("success rate (mean of seeds, last checkpoint)")
    axes[0].legend(fontsize=6, loc="lower right", ncol=2)
    fig.suptitle("TwoPathReach: success vs sampling latency (labels: solver steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

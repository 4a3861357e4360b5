"""gendm vs Stable-Baselines3 with identical hyperparameters, one run on one machine.

Each (library, seed) trains in its own process with ``--threads`` torch threads (default 1; with
``--workers 1 --threads 2`` one run at a time uses both cores); jobs are interleaved so both
libraries see the same machine load. Both are scored by the same evaluation (gendm's protocol:
10 deterministic episodes on a separate env, last checkpoint). Throughput is env steps per second
of training (learn() wall time for SB3; the training loop's time without evaluation for gendm).
gendm's loop treats subnormal floats as zero (``TrainSettings.flush_denormals``); ``sb3-ftz`` is SB3
with the same flag set in its process, to show how much of the ratio that flag alone is.

    python benchmarks/vs_sb3.py --algo sac --env Pendulum-v1 --steps 20000 --seeds 5 \
        --set learning_rate=1e-3 --set learning_starts=100 --out benchmarks/results/sac_pendulum_handgrad.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EVAL_EPISODES = 10


def sb3_kwargs(algo: str, cfg: dict) -> dict:
    """Translate a gendm config (as a dict) into the equivalent SB3 constructor arguments."""
    if algo == "sac":
        return dict(
            learning_rate=cfg["learning_rate"],
            buffer_size=cfg["buffer_size"],
            learning_starts=cfg["learning_starts"],
            batch_size=cfg["batch_size"],
            tau=cfg["tau"],
            gamma=cfg["gamma"],
            train_freq=cfg["train_freq"],
            gradient_steps=cfg["gradient_steps"],
            ent_coef="auto",
            policy_kwargs=dict(net_arch=list(cfg["hidden"])),
        )
    if algo == "ppo":
        import torch

        lr = cfg["learning_rate"]
        return dict(
            learning_rate=(lambda p: p * lr) if cfg["anneal_lr"] else lr,
            n_steps=cfg["num_steps"],
            batch_size=cfg["num_envs"] * cfg["num_steps"] // cfg["num_minibatches"],
            n_epochs=cfg["update_epochs"],
            gamma=cfg["gamma"],
            gae_lambda=cfg["gae_lambda"],
            clip_range=cfg["clip_coef"],
            clip_range_vf=cfg["clip_coef"] if cfg["clip_vloss"] else None,
            normalize_advantage=cfg["norm_adv"],
            ent_coef=cfg["ent_coef"],
            vf_coef=cfg["vf_coef"],
            max_grad_norm=cfg["max_grad_norm"],
            policy_kwargs=dict(
                net_arch=dict(pi=list(cfg["hidden"]), vf=list(cfg["hidden"])), activation_fn=torch.nn.Tanh
            ),
        )
    raise SystemExit(f"no SB3 mapping for {algo}")


def run_one(
    lib: str, algo: str, env_id: str, steps: int, seed: int, overrides: list[str], threads: int = 1
) -> dict:
    import torch

    torch.set_num_threads(threads)
    from gendm.agents import ALGOS
    from gendm.core.config import apply_overrides, to_dict
    from gendm.envs import make_env
    from gendm.train import TrainSettings, train
    from gendm.train.evaluate import evaluate
    from gendm.train.online import EVAL_SEED_OFFSET

    if lib == "gendm-bf16":
        overrides = [*overrides, "precision=bf16"]
    cfg = apply_overrides(ALGOS.get(algo).config_cls(), overrides)
    if lib.startswith("gendm"):
        with tempfile.TemporaryDirectory() as out:
            s = train(
                TrainSettings(
                    algo,
                    env_id,
                    steps=steps,
                    seed=seed,
                    out_dir=Path(out),
                    overrides=overrides,
                    eval_every=steps,
                    eval_episodes=EVAL_EPISODES,
                    progress=False,
                    tensorboard=False,
                    resume=False,
                    threads=threads,
                )
            )
        return {
            "final_return": s["final_return"],
            "env_steps": s["env_steps"],
            "train_s": s["train_s"],
            "env_steps_per_s": s["env_steps_per_s"],
            "grad_steps": s["grad_steps"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    if lib == "sb3-ftz":  # SB3 given the one process flag gendm's loop sets (subnormals as zero)
        torch.set_flush_denormal(True)

    c = to_dict(cfg)
    cls = {"sac": sb3.SAC, "ppo": sb3.PPO}[algo]
    env = make_vec_env(env_id, n_envs=c["num_envs"], seed=seed)
    model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **sb3_kwargs(algo, c))
    t = time.perf_counter()
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - t

    class Adapter:  # gendm's evaluate() drives any object with act() and device
        device = torch.device("cpu")

        def act(self, obs, deterministic=True):
            return torch.as_tensor(model.predict(obs.numpy(), deterministic=deterministic)[0])

    eval_env = make_env(env_id, 1, seed=seed + EVAL_SEED_OFFSET)
    returns = evaluate(Adapter(), eval_env, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)
    return {
        "final_return": float(returns.mean()),
        "env_steps": int(model.num_timesteps),
        "train_s": train_s,
        "env_steps_per_s": model.num_timesteps / train_s,
        "grad_steps": int(getattr(model, "_n_updates", 0)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=["sac", "ppo"], required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--set", action="append", default=[], help="gendm config override, applied to both")
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--libs", default="gendm,sb3", help="comma-separated: gendm, gendm-bf16, sb3, sb3-ftz")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--one", nargs=2, metavar=("LIB", "SEED"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.algo, a.env, a.steps, int(a.one[1]), a.set, a.threads)))
        return
    jobs = [(lib, seed) for seed in range(a.seeds) for lib in a.libs.split(",")]
    base = [
        sys.executable,
        __file__,
        "--algo",
        a.algo,
        "--env",
        a.env,
        "--steps",
        str(a.steps),
        "--out",
        str(a.out),
    ]
    base += [x for s in a.set for x in ("--set", s)] + ["--libs", a.libs, "--threads", str(a.threads)]

    def launch(job):
        lib, seed = job
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
        out = subprocess.run([*base, "--one", lib, str(seed)], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{lib} seed {seed} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1]) | {"lib": lib, "seed": seed}
        print(json.dumps(r), flush=True)
        return r

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with ThreadPoolExecutor(a.workers) as pool:
        results = list(pool.map(launch, jobs))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "algo": a.algo,
                "env": a.env,
                "steps": a.steps,
                "overrides": a.set,
                "workers": a.workers,
                "threads": a.threads,
                "started": started,
                "command": " ".join(sys.argv),
                "machine": f"{os.cpu_count()}-core CPU",
                "runs": results,
            },
            indent=2,
        )
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

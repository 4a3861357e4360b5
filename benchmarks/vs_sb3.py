"""gendm vs Stable-Baselines3 and SBX (the JAX Stable-Baselines) with identical hyperparameters, side by
side on one machine.

Pairing (``benchmarks/pairing.py``): ``--libs`` names gendm's variants (``gendm`` fp32, ``gendm-bf16``)
and peers (``sb3``, ``sb3-ftz``, ``sbx``); every (gendm variant, peer) is a comparison. For each round
1..``--rounds`` and seed 0..``--seeds``-1, gendm's run and the peer's run of that seed start together,
one process per core, pinned, one thread each; the core each gets alternates between rounds. Every run
is appended to ``--log`` (default: ``--out`` with ``.jsonl``) as it finishes, so rerunning the same
command after an interruption runs only the pairs not yet recorded. With several peers gendm runs
once per peer (each ratio comes from runs that shared the machine).

Rate (``learn_rate``): the learning phase only, after the ``learning_starts`` random warm-up steps,
evaluation excluded. SAC: gradient updates per second; PPO (no warm-up): env steps per second of the
whole training. gendm: from its first update (which follows env step ``learning_starts``) to the end of
the training loop, minus the loop's evaluation and checkpoint time, over the updates done in it
(timed around the trainer's ``agent.update`` and ``_loop``). SB3 and SBX (SBX uses SB3's callback
API): a callback records the time when ``num_timesteps`` reaches ``learning_starts`` and when
``learn()`` ends; the rate is the updates (``_n_updates``) done in between over that time. SBX's JIT
compilation happens in its first updates, inside this window (a user pays it too; a few seconds);
``first_update_s`` records how long the window took to its first update, to show that share.
``env_steps_per_s`` keeps the old whole-run figure (warm-up included) for reference.

Scores: both libraries by gendm's evaluation (10 deterministic episodes on a separate env seeded
seed + 10000, last checkpoint). SB3 and SBX get gendm's config mapped to their arguments
(``sb3_kwargs``: net_arch, lr, batch, buffer, learning_starts, tau, gamma, train_freq, gradient_steps,
ent_coef auto). gendm's loop treats subnormal floats as zero (``TrainSettings.flush_denormals``);
``sb3-ftz`` is SB3 with that flag set, to show how much of the ratio the flag alone is. ``gendm`` runs
``precision=fp32``; ``gendm-bf16`` is refused on a CPU without native bf16 (emulated there).

    python benchmarks/vs_sb3.py --algo sac --env Pendulum-v1 --steps 20000 --seeds 5 --rounds 3 \\
        --libs gendm,sb3,sbx --set learning_rate=1e-3 --set learning_starts=100 \\
        --out benchmarks/results/sac_pendulum_paired.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairing  # benchmarks/pairing.py, beside this file

EVAL_EPISODES = 10
GENDM_LIBS = ("gendm", "gendm-bf16")
PEER_LIBS = ("sb3", "sb3-ftz", "sbx")
OFF_POLICY = ("sac", "crossq")


def sb3_kwargs(algo: str, cfg: dict) -> dict:
    """Translate a gendm config (as a dict) into the equivalent SB3 (and SBX) constructor arguments."""
    if algo in OFF_POLICY:
        common = dict(
            learning_rate=cfg["learning_rate"],
            buffer_size=cfg["buffer_size"],
            learning_starts=cfg["learning_starts"],
            batch_size=cfg["batch_size"],
            gamma=cfg["gamma"],
            train_freq=cfg["train_freq"],
            gradient_steps=cfg["gradient_steps"],
            ent_coef="auto",
        )
        if algo == "sac":
            return common | dict(tau=cfg["tau"], policy_kwargs=dict(net_arch=list(cfg["hidden"])))
        # CrossQ's peer is SBX's (its authors' reference); gendm's field names mapped onto it
        return common | dict(
            qf_learning_rate=cfg["critic_learning_rate"],
            policy_delay=cfg["policy_delay"],
            policy_kwargs=dict(
                net_arch=dict(pi=list(cfg["hidden"]), qf=list(cfg["critic_hidden"])),
                n_critics=cfg["num_critics"],
                batch_norm_actor=cfg["actor_batch_norm"],
                batch_norm_momentum=cfg["batch_norm_momentum"],
                renorm_warmup_steps=cfg["renorm_warmup_steps"],
            ),
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


def refuse_emulated_bf16(libs: list[str]) -> None:
    """``gendm-bf16`` only where gendm treats bf16 as native on this CPU."""
    if "gendm-bf16" not in libs:
        return
    import torch

    from gendm.core.precision import native_bf16

    if not native_bf16(torch.device("cpu")):
        raise SystemExit(
            "gendm-bf16: bf16 is emulated on this CPU (no AVX512-BF16 or AMX), so it is slower than fp32 "
            "and its speed says nothing about gendm; drop gendm-bf16 from --libs (gendm runs fp32)."
        )


def _rates(algo: str, learn_s: float, env_steps: int, updates: int) -> dict[str, Any]:
    out = {
        "learn_s": learn_s,
        "learn_env_steps": env_steps,
        "learn_updates": updates,
        "learn_env_steps_per_s": env_steps / learn_s if learn_s > 0 else None,
        "learn_updates_per_s": updates / learn_s if learn_s > 0 else None,
    }
    key, unit = (
        ("learn_updates_per_s", "updates/s")
        if algo in OFF_POLICY
        else ("learn_env_steps_per_s", "env steps/s")
    )
    return out | {"learn_rate": out[key], "rate_unit": unit}


def run_gendm(lib: str, algo: str, env_id: str, steps: int, seed: int, overrides: list[str]) -> dict:
    """gendm's run, timed around the trainer's first update and the end of its loop."""
    from gendm.train import TrainSettings
    from gendm.train.online import OnlineTrainer

    if not any(o.startswith("precision=") for o in overrides):
        overrides = [*overrides, "precision=bf16" if lib == "gendm-bf16" else "precision=fp32"]
    elif lib == "gendm-bf16":
        raise SystemExit("gendm-bf16 sets precision=bf16 itself; drop precision= from --set")
    with tempfile.TemporaryDirectory() as out:
        trainer = OnlineTrainer(
            TrainSettings(
                algo, env_id, steps=steps, seed=seed, out_dir=Path(out), overrides=overrides,
                eval_every=steps, eval_episodes=EVAL_EPISODES, progress=False, tensorboard=False,
                resume=False, threads=1,
            )
        )  # fmt: skip
        marks: dict[str, float] = {}
        update, loop = trainer.agent.update, trainer._loop
        on_policy = trainer.method.family != "off_policy"

        def start() -> None:
            marks.update(t0=time.perf_counter(), eval0=trainer.eval_s)
            marks.update(steps0=trainer.env_steps, grads0=trainer.grad_steps)

        def timed_update(batch):
            if "t0" not in marks:
                start()
            out = update(batch)
            marks.setdefault("first", time.perf_counter())
            return out

        def timed_loop() -> None:
            if on_policy:  # no warm-up: the whole loop learns
                start()
            loop()
            marks.update(t1=time.perf_counter(), eval1=trainer.eval_s)

        trainer.agent.update, trainer._loop = timed_update, timed_loop
        s = trainer.run()
    if "t0" not in marks:
        raise SystemExit(f"gendm {algo} made no update in {steps} steps: raise --steps above learning_starts")
    learn_s = marks["t1"] - marks["t0"] - (marks["eval1"] - marks["eval0"])
    first_update_s = marks["first"] - marks["t0"]
    rates = _rates(
        algo, learn_s, s["env_steps"] - int(marks["steps0"]), s["grad_steps"] - int(marks["grads0"])
    )
    return rates | {
        "final_return": s["final_return"],
        "env_steps": s["env_steps"],
        "train_s": s["train_s"],
        "env_steps_per_s": s["env_steps_per_s"],
        "grad_steps": s["grad_steps"],
        "precision": getattr(trainer.agent, "precision", None),
        "first_update_s": first_update_s,
    }


def run_peer(lib: str, algo: str, env_id: str, steps: int, seed: int, overrides: list[str]) -> dict:
    """SB3 (``sb3``, ``sb3-ftz``) or SBX (``sbx``), timed by a callback, scored by gendm's evaluation."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from gendm.core.config import apply_overrides, to_dict
    from gendm.envs import make_env
    from gendm.train import all_methods
    from gendm.train.evaluate import evaluate
    from gendm.train.trainer import EVAL_SEED_OFFSET

    if lib == "sbx":
        if algo not in OFF_POLICY:
            raise SystemExit(f"sbx is compared for SAC and CrossQ only here, not {algo}")
        import sbx

        cls = {"sac": sbx.SAC, "crossq": sbx.CrossQ}[algo]
    else:
        import stable_baselines3 as sb3

        if algo == "crossq":
            raise SystemExit("CrossQ's peer is SBX (--libs gendm,sbx); SB3 has no CrossQ")
        cls = {"sac": sb3.SAC, "ppo": sb3.PPO}[algo]
    if lib == "sb3-ftz":  # SB3 given the one process flag gendm's loop sets (subnormals as zero)
        torch.set_flush_denormal(True)
    c = to_dict(apply_overrides(all_methods().get(algo).config_cls(), overrides))
    warmup = c["learning_starts"] if algo in OFF_POLICY else 0

    class LearnPhase(BaseCallback):
        """Time and update count when the learning phase starts (num_timesteps reaches the warm-up)
        and when learn() ends."""

        def __init__(self) -> None:
            super().__init__()
            self.marks: dict[str, float] = {}

        def _mark(self) -> None:
            self.marks.update(t0=time.perf_counter(), steps0=self.num_timesteps)
            self.marks["updates0"] = self.model._n_updates

        def _on_training_start(self) -> None:
            if warmup == 0:
                self._mark()

        def _on_step(self) -> bool:
            if "t0" not in self.marks and self.num_timesteps >= warmup:
                self._mark()
            elif "first" not in self.marks and self.model._n_updates > self.marks.get("updates0", 1e18):
                self.marks["first"] = time.perf_counter()  # the first train() call (SBX: its JIT compile)
            return True

        def _on_training_end(self) -> None:
            self.marks.update(t1=time.perf_counter())

    env = make_vec_env(env_id, n_envs=c["num_envs"], seed=seed)
    model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **sb3_kwargs(algo, c))
    timer = LearnPhase()
    t = time.perf_counter()
    model.learn(total_timesteps=steps, callback=timer)
    train_s = time.perf_counter() - t
    m = timer.marks
    updates = int(model._n_updates - m["updates0"]) if algo in OFF_POLICY else int(model._n_updates)
    if updates == 0 or m["t1"] <= m["t0"]:
        raise SystemExit(f"{lib} {algo} made no update in {steps} steps: raise --steps above learning_starts")
    rates = _rates(algo, m["t1"] - m["t0"], int(model.num_timesteps - m["steps0"]), updates)

    class Adapter:  # gendm's evaluate() drives any object with act() and device
        device = torch.device("cpu")

        def act(self, obs, deterministic=True):
            return torch.as_tensor(model.predict(obs.numpy(), deterministic=deterministic)[0])

    eval_env = make_env(env_id, 1, seed=seed + EVAL_SEED_OFFSET)
    returns = evaluate(Adapter(), eval_env, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)
    return rates | {
        "final_return": float(returns.mean()),
        "env_steps": int(model.num_timesteps),
        "train_s": train_s,
        "env_steps_per_s": model.num_timesteps / train_s,
        "grad_steps": int(model._n_updates),
        "first_update_s": m["first"] - m["t0"] if "first" in m else None,
    }


def run_one(lib: str, algo: str, env_id: str, steps: int, seed: int, overrides: list[str]) -> dict:
    """One library's run in this process (one torch thread); the result ``main`` records."""
    import torch

    torch.set_num_threads(1)
    refuse_emulated_bf16([lib])
    run = run_gendm if lib in GENDM_LIBS else run_peer
    out = run(lib, algo, env_id, steps, seed, overrides)
    return out | {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "affinity": sorted(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
    }


def parse_libs(text: str) -> list[tuple[str, str]]:
    libs = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in libs if x not in GENDM_LIBS + PEER_LIBS]
    if unknown:
        raise SystemExit(
            f"--libs: unknown {', '.join(unknown)}; choose from {', '.join(GENDM_LIBS + PEER_LIBS)}"
        )
    ours, peers = [x for x in libs if x in GENDM_LIBS], [x for x in libs if x in PEER_LIBS]
    if not ours or not peers:
        raise SystemExit(f"--libs {text!r}: name at least one of {', '.join(GENDM_LIBS)} and one peer")
    return [(g, p) for g in ours for p in peers]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=["sac", "crossq", "ppo"], required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="repeats of the whole comparison (default 3)")
    p.add_argument("--set", action="append", default=[], help="gendm config override, applied to all")
    p.add_argument("--libs", default="gendm,sb3", help="gendm, gendm-bf16 and peers sb3, sb3-ftz, sbx")
    p.add_argument("--cores", default=None, help="the two cores for the pairs, e.g. 0,1 (default: first two)")
    p.add_argument("--out", type=Path, help="final JSON (provenance, runs, summary); required")
    p.add_argument("--log", type=Path, default=None, help="JSONL of finished runs (default: OUT.jsonl)")
    p.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates for the return CIs")
    p.add_argument("--one", nargs=2, metavar=("LIB", "SEED"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        import json

        print(json.dumps(run_one(a.one[0], a.algo, a.env, a.steps, int(a.one[1]), a.set)))
        return
    if a.out is None:
        p.error("the following arguments are required: --out")
    pairs = parse_libs(a.libs)
    refuse_emulated_bf16([g for g, _ in pairs])
    if a.seeds < 1 or a.rounds < 1 or a.steps < 1:
        raise SystemExit("--steps, --seeds and --rounds must be >= 1")
    log = a.log or a.out.with_suffix(".jsonl")
    base = [sys.executable, str(Path(__file__).resolve()), "--algo", a.algo, "--env", a.env]
    base += ["--steps", str(a.steps), *[x for s in a.set for x in ("--set", s)]]

    def plan(rnd: int) -> list[pairing.Unit]:
        return [
            pairing.Unit(
                f"{g}~{peer}",
                seed,
                [
                    pairing.Run(lib, [*base, "--one", lib, str(seed)], key=f"{a.algo}/{a.env}")
                    for lib in (g, peer)
                ],
                group=f"{g}~{peer}",
            )
            for seed in range(a.seeds)
            for g, peer in pairs
        ]

    from gendm.core.provenance import provenance

    prov = provenance(threads=1)
    cores = [int(c) for c in a.cores.split(",")] if a.cores else None
    failed = pairing.run_rounds(plan, a.rounds, log, cores=cores)
    runs = pairing.collect(plan, a.rounds, log)
    summary = pairing.summarize(runs, reps=a.reps)
    pairing.write_json_atomic(
        a.out,
        {
            "provenance": prov,
            "command": " ".join([sys.executable, *sys.argv]),
            "benchmark": {
                "algo": a.algo,
                "env": a.env,
                "steps": a.steps,
                "overrides": a.set,
                "seeds": a.seeds,
                "rounds": a.rounds,
                "libs": a.libs,
                "pairs": [f"{g}~{p}" for g, p in pairs],
                "cores": cores or pairing.default_cores(),
                "log": str(log),
                "eval_episodes": EVAL_EPISODES,
                "rate": "learning phase only (after learning_starts; evaluation excluded), see vs_sb3.py",
            },
            "runs": runs,
            "summary": summary,
        },
    )
    print(f"{a.algo.upper()} {a.env}, {a.steps:,} steps, {a.seeds} seeds x {a.rounds} rounds:")
    print(pairing.markdown(summary) or "no complete pair yet")
    print(f"wrote {a.out} ({len(runs)} runs; log {log})")
    if failed:
        raise SystemExit(
            f"{len(failed)} runs failed (see their stderr logs); rerun the same command to retry"
        )


if __name__ == "__main__":
    main()

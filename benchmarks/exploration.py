"""Exploration on sparse MiniGrid tasks: PPO vs PPO+RND vs PPO+ELLM-style embedding reward vs PPO+LM
feedback (ONI-style asynchronous annotator), one run on one machine.

Every method is gendm's PPO with the same settings on the captioned MiniGrid envs
(``gendm.envs.captioned``: flat 7x7x3 egocentric view, event captions in ``info``); methods differ
only in the intrinsic reward added to the *training* env (``gendm.train.intrinsic``):

- ``ppo``:  none;
- ``rnd``:  random network distillation on observations;
- ``ellm``: cosine(caption event, mission) from all-MiniLM-L6-v2, thresholded, count-normalised;
- ``lm``:   events labelled "helpful for the mission? yes/no" by a language model on a background
  thread (0 until labelled), count-normalised (Motif). ``--lm embed`` uses a stand-in "model" that
  answers yes when the event's MiniLM embedding is close to the mission's (no LLM needed);
  ``--lm openai:http://host:port/v1#model`` any OpenAI-compatible server; ``--lm hf:/path`` a local
  Hugging Face model. ``--lm-cache`` keeps answers across runs.

Metrics, per task and seed: **frames to first success** (env steps until the first training episode
with extrinsic return > 0; a run that never succeeds counts as ``--steps``, i.e. censored at the
budget) and **success rate at fixed budgets** (the evaluation protocol's success rate at the last
evaluation at or before each budget: 10 deterministic episodes, last checkpoint, never the best).
Aggregates over tasks and seeds: IQM with 95% stratified-bootstrap CIs (``gendm.bench.stats``).

Full run (about 3 tasks x 4 methods x 5 seeds x 500k steps; hours on CPU):

    .venv/bin/python benchmarks/exploration.py --seeds 5 --steps 500000 \
        --budgets 100000 250000 500000 --eval-every 25000 --workers 4 --out runs/exploration

Smoke run:

    .venv/bin/python benchmarks/exploration.py --tasks DoorKey-5x5 --seeds 1 --steps 1024 \
        --budgets 512 1024 --eval-every 512 --eval-episodes 2 --out /tmp/exploration_smoke
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

TASKS = {
    "DoorKey-8x8": "MiniGrid-DoorKey-8x8-v0",
    "KeyCorridorS3R3": "MiniGrid-KeyCorridorS3R3-v0",
    "MultiRoom-N4-S5": "MiniGrid-MultiRoom-N4-S5-v1",
    "DoorKey-5x5": "MiniGrid-DoorKey-5x5-v0",
    "MultiRoom-N2-S4": "MiniGrid-MultiRoom-N2-S4-v0",
    "Empty-5x5": "MiniGrid-Empty-5x5-v0",
}
METHODS = ("ppo", "rnd", "ellm", "lm")


def intrinsic_settings(method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The method's exploration reward as a ``gendm.rewards.factory`` spec (None for plain PPO)."""
    if method == "ppo":
        return None
    if method == "rnd":
        return {"kind": "rnd", "coef": args.rnd_coef}
    table = {"kind": method, "coef": args.caption_coef, "beta": args.beta, "threshold": args.ellm_threshold}
    if method == "lm":
        table |= {"backend": args.lm, "cache": args.lm_cache, "batch": args.lm_batch, "chat": args.lm_chat}
    return table


def run_one(task: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from gendm.rewards import register_captioned
    from gendm.train.intrinsic import IntrinsicTrainer
    from gendm.train.trainer import TrainSettings

    torch.set_num_threads(1)
    env_id = register_captioned(TASKS.get(task, task))
    s = TrainSettings(
        "ppo",
        env_id,
        steps=args.steps,
        seed=seed,
        out_dir=Path(args.out) / "runs" / f"{task}_{method}_s{seed}",
        overrides={"num_envs": args.num_envs, "num_steps": args.num_steps, "ent_coef": args.ent_coef},
        intrinsic=intrinsic_settings(method, args),
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_deterministic=not args.eval_stochastic,
        progress=False,
        tensorboard=False,
        resume=False,
        threads=1,
    )
    t0 = time.perf_counter()
    summary = IntrinsicTrainer(s).run()
    curve = summary["curve"]
    success_at = {}
    for b in args.budgets:
        points = [p for p in curve if p["env_steps"] <= b]
        success_at[str(b)] = float(points[-1].get("success_rate") or 0.0) if points else 0.0
    first = summary["first_success_step"]
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "first_success_step": first,
        "frames_to_first_success": first if first is not None else args.steps,
        "success_at": success_at,
        "final_success_rate": summary["success_rate"],
        "env_steps_per_s": summary["env_steps_per_s"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "intrinsic_stats": summary["intrinsic_stats"],
    }


def aggregate(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """IQM + 95% stratified-bootstrap CI per method: frames to first success and success at budgets."""
    from gendm.bench.stats import stratified_bootstrap_ci

    out: dict[str, Any] = {}
    for method in args.methods:
        rows = [r for r in results if r["method"] == method]
        per_task = [[r for r in rows if r["task"] == t] for t in args.tasks]
        per_task = [t for t in per_task if t]
        if not per_task:
            continue
        frames = [np.array([r["frames_to_first_success"] for r in t], dtype=float) for t in per_task]
        entry = {"frames_to_first_success": stratified_bootstrap_ci(frames, reps=args.reps)}
        for b in args.budgets:
            scores = [np.array([r["success_at"][str(b)] for r in t], dtype=float) for t in per_task]
            entry[f"success@{b}"] = stratified_bootstrap_ci(scores, reps=args.reps)
        entry["solved_runs"] = sum(r["first_success_step"] is not None for r in rows)
        entry["runs"] = len(rows)
        out[method] = entry
    return out


def table(agg: dict[str, Any], args: argparse.Namespace) -> str:
    cols = ["frames_to_first_success", *[f"success@{b}" for b in args.budgets]]
    lines = [
        "| method | solved | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for method, e in agg.items():
        cells = [f"{e[c][0]:.3g} [{e[c][1]:.3g}, {e[c][2]:.3g}]" for c in cols]
        lines.append(f"| {method} | {e['solved_runs']}/{e['runs']} | " + " | ".join(cells) + " |")
    note = (
        f"IQM [95% stratified-bootstrap CI] over {len(args.tasks)} task(s) x {args.seeds} seed(s); "
        "success = evaluation success rate at the last checkpoint at or before each budget (never the best); "
        f"frames to first success censored at {args.steps}."
    )
    return "\n".join(lines) + "\n\n" + note


def per_seed_table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Raw numbers: per task and method, each seed's frames to first success and success at each budget."""
    lines = [
        "| task | method | frames to first success (seeds 0..) | "
        + " | ".join(f"success@{b} (seeds 0..)" for b in args.budgets)
        + " | env steps/s |",
        "|---|---|---|" + "---|" * len(args.budgets) + "---|",
    ]
    for task in args.tasks:
        for method in args.methods:
            rows = sorted(
                (r for r in results if r["task"] == task and r["method"] == method), key=lambda r: r["seed"]
            )
            if not rows:
                continue
            frames = ", ".join(str(r["first_success_step"] or f">{args.steps}") for r in rows)
            cells = [", ".join(f"{r['success_at'][str(b)]:.1f}" for r in rows) for b in args.budgets]
            speed = np.mean([r["env_steps_per_s"] for r in rows])
            lines.append(f"| {task} | {method} | {frames} | " + " | ".join(cells) + f" | {speed:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["DoorKey-8x8", "KeyCorridorS3R3", "MultiRoom-N4-S5"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=500_000)
    p.add_argument("--budgets", type=int, nargs="+", default=[100_000, 250_000, 500_000])
    p.add_argument("--eval-every", type=int, default=25_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument(
        "--eval-stochastic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sampled (seeded) evaluation actions: an argmax MiniGrid policy often loops forever",
    )
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--rnd-coef", type=float, default=0.005, help="RND coefficient (RND pays every step)")
    p.add_argument(
        "--caption-coef", type=float, default=0.1, help="ELLM / LM coefficient (pays per rewarded event)"
    )
    p.add_argument("--beta", type=float, default=0.5, help="count-normalisation exponent (caption rewards)")
    p.add_argument(
        "--ellm-threshold", type=float, default=0.4, help="cosine threshold (ELLM; and the --lm embed judge)"
    )
    p.add_argument("--lm", default="embed", help="embed | openai:http://host:port/v1#model | hf:/path")
    p.add_argument("--lm-cache", default=None, help="SQLite response cache for the LM annotator")
    p.add_argument("--lm-batch", type=int, default=16)
    p.add_argument("--lm-chat", action="store_true", help="ask through chat() instead of complete()")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reps", type=int, default=10_000, help="bootstrap replicates")
    p.add_argument("--out", default="runs/exploration")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # One JSON line per finished run: a rerun with the same --out skips those (resumable).
    done_path = out / "runs.jsonl"
    results: list[dict[str, Any]] = []
    if done_path.exists():
        results = [json.loads(line) for line in done_path.read_text().splitlines() if line.strip()]
    finished = {(r["task"], r["method"], r["seed"]) for r in results}
    jobs = [
        (t, m, s)
        for s in range(args.seeds)
        for t in args.tasks
        for m in args.methods
        if (t, m, s) not in finished
    ]
    if finished:
        print(f"resuming: {len(finished)} finished run(s) in {done_path}, {len(jobs)} to go")

    def record(r: dict[str, Any]) -> None:
        results.append(r)
        with done_path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps({k: r[k] for k in ("task", "method", "seed", "first_success_step", "wall_s")}))

    if args.workers > 1 and jobs:
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(run_one, *job, args) for job in jobs]
            for fut in as_completed(futures):
                record(fut.result())
    else:
        for job in jobs:
            record(run_one(*job, args))
    wanted = {(t, m, s) for s in range(args.seeds) for t in args.tasks for m in args.methods}
    results = [r for r in results if (r["task"], r["method"], r["seed"]) in wanted]
    agg = aggregate(results, args)
    report = {"args": vars(args), "results": results, "aggregate": agg}
    (out / "exploration.json").write_text(json.dumps(report, indent=1))
    text = table(agg, args) + "\n\n" + per_seed_table(results, args)
    (out / "exploration.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

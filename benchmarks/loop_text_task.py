"""LOOP on the addition text task: success before and after fine-tuning, per seed, with wall time.

Per seed: a tiny GPT-2 (2 layers, 32 wide, word-level vocabulary built locally) is pretrained on noisy
answers (right with probability ``--correct-prob``, otherwise a random number), then fine-tuned with
LOOP (``gendm.finetune.LOOPTrainer``: K completions per prompt, leave-one-out advantages, PPO-clip)
for ``--iterations`` iterations. Success is the exact probability (temperature 1) of the right
answer token, averaged over all prompts of the task; the last weights are reported, never the best.

    .venv/bin/python benchmarks/loop_text_task.py --seeds 5 --iterations 150
"""

from __future__ import annotations

import argparse
import statistics

import torch

from gendm.finetune import LOOPConfig
from gendm.finetune.text_tasks import finetune_addition


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    cfg = LOOPConfig(
        group_size=args.group_size,
        prompts_per_iteration=args.prompts_per_iteration,
        max_new_tokens=2,
        learning_rate=args.lr,
        seed=seed,
    )
    _, s = finetune_addition(
        cfg,
        args.iterations,
        seed,
        max_operand=args.max_operand,
        pretrain_steps=args.pretrain_steps,
        correct_prob=args.correct_prob,
    )
    return {
        "initial": s["initial_success"],
        "final": s["final_success"],
        "pretrain_s": s["pretrain_s"],
        "loop_s": s["loop_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--correct-prob", type=float, default=0.3)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--prompts-per-iteration", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-operand", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| seed | initial success | final success | gain | pretrain s | LOOP s |")
    print("|---|---|---|---|---|---|")
    gains = []
    for seed in range(args.seeds):
        r = run_seed(seed, args)
        gains.append(r["final"] - r["initial"])
        print(
            f"| {seed} | {r['initial']:.3f} | {r['final']:.3f} | {gains[-1]:+.3f} | "
            f"{r['pretrain_s']:.1f} | {r['loop_s']:.1f} |",
            flush=True,
        )
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(
        f"\nmean gain {statistics.mean(gains):+.3f} (sd {spread:.3f}) over {args.seeds} seeds; last weights."
    )


if __name__ == "__main__":
    main()

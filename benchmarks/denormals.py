"""What subnormal floats cost a training run: the same run with ``TrainSettings.flush_denormals`` off
and on, one torch thread, interleaved rounds; per round the training speed, the time of each Adam step
(``torch.optim.Adam.step``, timed around the call) and the final return.

    python benchmarks/denormals.py --algo sac --env Pendulum-v1 --steps 3000 --set learning_starts=100
    python benchmarks/denormals.py --algo iql --dataset gendm/hopper/medium-expert-v0 --steps 3000 \
        --set return_scale=1000 --out benchmarks/results/denormals_iql.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gendm.train import TrainSettings, train


def timed_adam_steps() -> list[float]:
    """Wrap ``torch.optim.Adam.step`` so every call's duration (s) lands in the returned list."""
    durations: list[float] = []
    step = torch.optim.Adam.step

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        out = step(self, *args, **kwargs)
        durations.append(time.perf_counter() - t)
        return out

    torch.optim.Adam.step = timed
    return durations


def one_run(a: argparse.Namespace, flush: bool, durations: list[float]) -> dict:
    durations.clear()
    with tempfile.TemporaryDirectory() as out:
        s = train(
            TrainSettings(
                a.algo,
                a.env,
                dataset=a.dataset,
                steps=a.steps,
                seed=a.seed,
                out_dir=Path(out),
                overrides=a.set,
                eval_every=a.steps,
                eval_episodes=a.eval_episodes,
                progress=False,
                tensorboard=False,
                resume=False,
                threads=1,
                flush_denormals=flush,
            )
        )
    unit = s["step_unit"]
    return {
        "flush_denormals": flush,
        "final_return": s["final_return"],
        "train_s": s["train_s"],
        f"{unit}_per_s": s[f"{unit}_per_s"],
        "adam_steps": len(durations),
        "adam_ms_median": 1e3 * float(np.median(durations)),
        "adam_ms_mean": 1e3 * float(np.mean(durations)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", required=True)
    p.add_argument("--env", default=None)
    p.add_argument("--dataset", default=None)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=2, help="interleaved off/on pairs")
    p.add_argument("--eval-episodes", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    durations = timed_adam_steps()
    runs = [one_run(a, flush, durations) for _ in range(a.rounds) for flush in (False, True)]
    for r in runs:
        print(json.dumps(r), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M")}
        a.out.write_text(json.dumps(meta | {"runs": runs}, indent=2))


if __name__ == "__main__":
    main()

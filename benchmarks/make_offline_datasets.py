"""D4RL-style offline datasets from gendm's own SAC, saved in Minari's format.

    .venv/bin/python benchmarks/make_offline_datasets.py --env Hopper-v5 --threads 2

1. Train SAC (``precision=auto``: bf16 where native) for ``--medium-steps`` in ``RUN``; copy
   ``RUN/checkpoint`` to ``RUN/medium``: the *medium* policy, and its replay buffer is *medium-replay*.
2. Resume the same run to ``--expert-steps``: ``RUN/checkpoint`` is the *expert* policy.
3. Write ``NAMESPACE/<task>/{random,medium,expert,medium-replay,medium-expert}-v0``: random, medium
   and expert hold ``--dataset-steps`` transitions each (checkpoint policies act deterministically
   plus ``--noise`` Gaussian noise on the [-1, 1]-scaled action), medium-replay holds every
   transition of the replay buffer at the medium budget (episode boundaries kept, the run's last
   partial episode marked truncated), medium-expert is medium followed by expert (as in D4RL).

Every step is skipped when its output exists, so rerunning the command resumes. The mean return of
each dataset is printed with its normalised score (0 = random, 100 = expert reference of
``gendm.envs.references``). D4RL chose the medium policy by score (about 1/3 of the expert's);
here it is a training budget: pick ``--medium-steps`` so that the medium return lands there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from gendm.agents.loading import checkpoint_policy
from gendm.core.config import parse_assignments
from gendm.data.collect import collect, find_checkpoint, replay_buffer_dataset
from gendm.data.dataset import OfflineDataset
from gendm.data.minari_io import dataset_root, load_dataset, save_dataset
from gendm.envs.references import reference
from gendm.train import TrainSettings, train

KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")


def task_name(env_id: str) -> str:
    """'Hopper-v5' -> 'hopper', 'gendm/TwoPathReach-v0' -> 'twopathreach'."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


def train_policies(a: argparse.Namespace, run: Path) -> tuple[Path, Path]:
    """Train to the medium budget, keep that checkpoint, resume to the expert budget."""
    overrides = {"precision": "auto"} | parse_assignments(a.set)
    medium = run / "medium"

    def settings(steps: int) -> TrainSettings:
        return TrainSettings(
            "sac",
            a.env,
            steps=steps,
            seed=a.seed,
            out_dir=run,
            overrides=overrides,
            eval_every=a.eval_every,
            eval_episodes=a.eval_episodes,
            progress=not a.no_progress,
            threads=a.threads,
            device=a.device,
        )

    if not (medium / "meta.json").is_file():
        summary = train(settings(a.medium_steps))
        print(f"medium policy: {summary['env_steps']} env steps, eval return {summary['final_return']:.1f}")
        tmp = run / "medium.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(find_checkpoint(run), tmp)
        shutil.rmtree(medium, ignore_errors=True)
        tmp.rename(medium)
    summary = train(settings(a.expert_steps))
    print(f"expert policy: {summary['env_steps']} env steps, eval return {summary['final_return']:.1f}")
    return medium, run / "checkpoint"


def main(argv: list[str] | None = None) -> dict[str, OfflineDataset]:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=110),
    )
    p.add_argument("--env", default="Hopper-v5", help="Gymnasium id (default: Hopper-v5)")
    p.add_argument("--medium-steps", type=int, default=100_000, help="SAC env steps of the medium policy")
    p.add_argument("--expert-steps", type=int, default=1_000_000, help="SAC env steps of the expert policy")
    p.add_argument("--dataset-steps", type=int, default=1_000_000, help="transitions of random/medium/expert")
    p.add_argument("--noise", type=float, default=0.1, help="action noise std of medium/expert (default 0.1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=25_000, help="evaluate the SAC run every N env steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="SAC config override")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/offline_datasets/<task>-s<seed>")
    p.add_argument("--namespace", default="gendm", help="dataset ids are NAMESPACE/<task>/<kind>-v0")
    p.add_argument("--root", type=Path, default=None, help="datasets root (default: Minari's)")
    p.add_argument("--overwrite", action="store_true", help="rewrite datasets that exist")
    p.add_argument("--device", default="cpu", help="device of SAC training and of the policies' rollouts")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not 0 < a.medium_steps <= a.expert_steps:
        p.error("need 0 < --medium-steps <= --expert-steps")
    if a.threads:
        torch.set_num_threads(a.threads)
    task = task_name(a.env)
    run = a.run_dir or Path("runs") / "offline_datasets" / f"{task}-s{a.seed}"
    t0 = time.perf_counter()
    medium_ckpt, expert_ckpt = train_policies(a, run)
    train_s = time.perf_counter() - t0
    command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])

    def ids(kind: str) -> str:
        return f"{a.namespace}/{task}/{kind}-v0"

    def exists(kind: str) -> bool:
        return (dataset_root(a.root) / ids(kind) / "data" / "metadata.json").is_file()

    def rollouts(policy: str, noise: float, seed: int) -> OfflineDataset:
        act, info = (policy, None) if policy == "random" else checkpoint_policy(policy, a.device, a.env)
        return collect(
            a.env,
            act,
            steps=a.dataset_steps,
            noise=noise,
            seed=seed,
            progress=not a.no_progress,
            command=command,
            policy_info=info,
        )

    builders = {
        "random": lambda: rollouts("random", 0.0, a.seed + 1),
        "medium": lambda: rollouts(str(medium_ckpt), a.noise, a.seed + 2),
        "expert": lambda: rollouts(str(expert_ckpt), a.noise, a.seed + 3),
        "medium-replay": lambda: replay_buffer_dataset(medium_ckpt),
        "medium-expert": lambda: OfflineDataset.concatenate(
            [datasets["medium"], datasets["expert"]],
            metadata={
                "algorithm_name": "gendm sac medium + expert",
                "description": f"{ids('medium')} followed by {ids('expert')}.",
                "provenance": {"policy": "concatenation", "parts": [ids("medium"), ids("expert")]},
            },
        ),
    }
    datasets: dict[str, OfflineDataset] = {}
    for kind in KINDS:
        if exists(kind) and not a.overwrite:
            datasets[kind] = load_dataset(ids(kind), a.root)
            continue
        t = time.perf_counter()
        datasets[kind] = builders[kind]()
        save_dataset(datasets[kind], ids(kind), a.root, overwrite=a.overwrite)
        print(f"wrote {ids(kind)} in {time.perf_counter() - t:.1f} s")

    ref = reference(a.env)
    print(f"\nSAC training: {train_s:.0f} s (this session). Datasets under {dataset_root(a.root)}:")
    print(f"{'dataset':<40} {'transitions':>11} {'episodes':>8} {'return mean ± std':>22} {'normalised':>10}")
    for kind, ds in datasets.items():
        returns = ds.episode_returns()
        norm = (
            f"{100 * (returns.mean() - ref.random_return) / (ref.expert_return - ref.random_return):.1f}"
            if ref
            else "-"
        )
        cell = f"{returns.mean():.1f} ± {returns.std():.1f}"
        print(f"{ids(kind):<40} {len(ds):>11} {ds.num_episodes:>8} {cell:>22} {norm:>10}")
    return datasets


if __name__ == "__main__":
    main()

"""Offline RL suite: gendm's offline methods and d3rlpy's IQL / TD3+BC on the same Minari datasets, run
side by side on one machine.

Pairing (``benchmarks/pairing.py``). For each round 1..``--rounds``, seed and dataset, gendm's IQL
(TD3+BC) run and d3rlpy's run of the same seed start together, one process per core, pinned, one torch
thread each; the cores alternate between rounds. The speed ratio of a pair is gendm's gradient steps
per second over d3rlpy's (training only: ``grad_steps / train_s``, which excludes setup, evaluation and
checkpoints for both; there is no warm-up offline); the suite reports the median of the round medians
and its range over rounds. Methods without a d3rlpy counterpart (``gendm:bc``, ``gendm:idql``,
``gendm:diffusion_ql``) run once (in round 1), two at a time, each on its own core.

gendm runs from ``--gendm-python`` (``.venv``: ``python -m gendm.cli train ALGO --dataset ID ...``),
d3rlpy from ``--d3rlpy-python`` (``.venv-d3rlpy``: ``benchmarks/vs_d3rlpy.py``, which documents its
hyperparameters and how to create that environment), because d3rlpy 2.8.1 pins gymnasium 1.0.0 and
gendm needs gymnasium >= 1.1. Both write ``RUN/summary.json`` with gendm's contract and both are scored
by gendm's protocol: ``--eval-episodes`` deterministic episodes on a separate env (reset with seed +
10000) every ``--eval-every`` gradient steps; the score is the **last** evaluation, never the best.

Hyperparameters: both libraries at the papers' settings (listed in ``benchmarks/vs_d3rlpy.py``); gendm's
defaults already equal them except IQL's reward scaling, so the suite always passes ``--set
return_scale=1000`` to gendm's IQL (``MATCHED``), and ``precision=fp32``. ``--methods`` also takes
``gendm-bf16:ALGO``, the same gendm agent with ``precision=bf16`` (refused where bf16 is emulated), and
``d3rlpy-ftz:ALGO``, d3rlpy with the subnormals-as-zero flag gendm's training loop sets; every gendm
variant of an algorithm is paired with every d3rlpy variant of it.

Resumable: every finished run is appended to ``--log`` (default: ``--out`` with ``.jsonl``); rerunning
the same command runs only the pairs not yet recorded (an interrupted pair is rerun whole). Missing
gendm methods (not in ``gendm.train.all_methods()``), a gendm CLI without ``--dataset`` and missing datasets
are skipped with a printed reason.

Output: ``--out`` (``benchmarks/results/offline_suite.json``: provenance, per-(method, dataset, seed)
numbers, every raw run and the paired summary) and a markdown report beside it (``.md``): normalised
score (``100 * (R - ref_min) / (ref_max - ref_min)`` with the dataset's ``ref_min_score`` /
``ref_max_score``, else ``gendm.envs.references``) as IQM with a 95% stratified-bootstrap CI
(``gendm.bench.stats``, 50k replicates; each seed's score averaged over its rounds first), gradient
steps per second, and gendm vs d3rlpy for IQL and TD3+BC: the IQM difference, the probability of
improvement and the paired speed ratio, pooled over datasets and per dataset.

    .venv/bin/python benchmarks/offline_suite.py --steps 20000 --eval-every 5000 --seeds 5 --rounds 3
    .venv/bin/python benchmarks/offline_suite.py --summarize-only --steps 20000    # tables only
    .venv/bin/python benchmarks/offline_suite.py --make-tiny /tmp/tiny-datasets    # a smoke dataset
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairing  # benchmarks/pairing.py, beside this file

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("hopper", "halfcheetah", "walker2d")
KINDS = ("medium", "medium-replay", "medium-expert")
DEFAULT_DATASETS = [f"gendm/{e}/{k}-v0" for e in ENVS for k in KINDS]
DEFAULT_METHODS = [
    "gendm:iql",
    "d3rlpy:iql",
    "gendm:td3bc",
    "d3rlpy:td3bc",
    "gendm:bc",
    "gendm:idql",
    "gendm:diffusion_ql",
]
PAIRED = ("iql", "td3bc")
# gendm overrides that make its configs equal to benchmarks/vs_d3rlpy.py's (all other defaults already
# match, see both docstrings): IQL's paper-locomotion reward scaling, which d3rlpy's reproduction uses.
MATCHED = ["iql:return_scale=1000"]
GENDM_LIBS = {"gendm": ["precision=fp32"], "gendm-bf16": ["precision=bf16"]}
# d3rlpy-ftz: d3rlpy with the one process flag gendm's loop sets (subnormal floats as zero), to show how
# much of the speed ratio that flag alone is.
D3RLPY_LIBS = {"d3rlpy": [], "d3rlpy-ftz": ["--flush-denormals"]}


@dataclass(frozen=True)
class Job:
    lib: str
    algo: str
    dataset: str
    seed: int

    @property
    def method(self) -> str:
        return f"{self.lib}:{self.algo}"

    def run_dir(self, runs: Path, tag: str, rnd: int) -> Path:
        """``tag`` names the unit kind (the pair, or ``solo``): a gendm run paired with two peers has
        one directory per pair."""
        where = runs / self.dataset.replace("/", "__") / pairing._slug(tag)
        return where / f"r{rnd}-s{self.seed}" / f"{self.lib}-{self.algo}"


# --------------------------------------------------------------------------------------- what exists
def gendm_capabilities(py: str) -> tuple[set[str], bool, str]:
    """(registered gendm algorithms, whether `gendm train` takes --dataset, a reason if unusable)."""
    code = (
        "import json, subprocess, sys\n"
        "from gendm.train import all_methods\n"
        "h = subprocess.run([sys.executable, '-m', 'gendm.cli', 'train', '--help'], capture_output=True,"
        " text=True).stdout\n"
        "print(json.dumps({'algos': list(all_methods()), 'dataset': '--dataset' in h}))\n"
    )
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return set(), False, f"{py} cannot import gendm: {out.stderr.strip().splitlines()[-1:]}"
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return set(info["algos"]), bool(info["dataset"]), ""


def dataset_dir(dataset: str, root: str | None) -> Path | None:
    cands = [Path(dataset)]
    roots = [root, os.environ.get("MINARI_DATASETS_PATH"), str(Path.home() / ".minari" / "datasets")]
    cands += [Path(r) / dataset for r in roots if r]
    for c in cands:
        for d in (c / "data", c):
            if (d / "main_data.hdf5").is_file() and (d / "metadata.json").is_file():
                return d
    return None


def references(data: Path) -> tuple[float, float, str]:
    """(ref_min, ref_max, source) of a dataset: its metadata, else gendm.envs.references."""
    meta = json.loads((data / "metadata.json").read_text())
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        return float(meta["ref_min_score"]), float(meta["ref_max_score"]), "dataset metadata"
    env_id = meta.get("env_id") or json.loads(meta.get("env_spec") or "{}").get("id")
    from gendm.envs.references import reference

    ref = reference(env_id) if env_id else None
    if ref is None:
        raise SystemExit(
            f"{data}: no ref_min/max_score in metadata.json and no gendm reference for {env_id}."
        )
    return ref.random_return, ref.expert_return, "gendm.envs.references"


# --------------------------------------------------------------------------------------- running
def command(job: Job, a: argparse.Namespace, out: Path) -> list[str]:
    common = ["--steps", str(a.steps), "--seed", str(job.seed), "--out", str(out)]
    common += ["--eval-every", str(a.eval_every), "--eval-episodes", str(a.eval_episodes)]
    common += ["--threads", "1"]
    if job.lib in D3RLPY_LIBS:
        cmd = [a.d3rlpy_python, str(ROOT / "benchmarks" / "vs_d3rlpy.py"), "--algo", job.algo]
        cmd += ["--dataset", job.dataset, *common, "--device", a.device, *D3RLPY_LIBS[job.lib]]
        return cmd + (["--datasets-root", a.datasets_root] if a.datasets_root else [])
    cmd = [a.gendm_python, "-m", "gendm.cli", "train", job.algo, "--dataset", job.dataset, *common]
    cmd += ["--device", a.device, "--no-progress", "--no-resume"]
    for s in MATCHED + a.set:
        algo, _, kv = s.partition(":")
        if algo in ("gendm", job.algo):
            cmd += ["--set", kv]
    return cmd + [x for kv in GENDM_LIBS[job.lib] for x in ("--set", kv)]


def parse_summary(job: Job, steps: int, out: Path) -> Callable[[dict], dict]:
    """``summary.json`` of a run -> its record; the rate is grad_steps / train_s for both libraries."""

    def parse(s: dict) -> dict:
        if s.get("status", "ok") != "ok" or int(s.get("grad_steps", -1)) < steps:
            raise ValueError(
                f"status {s.get('status')!r} at {s.get('grad_steps')} of {steps} gradient steps: "
                f"{s.get('error')}"
            )
        return {
            "method": job.method,
            "algo": job.algo,
            "dataset": job.dataset,
            "final_return": s["final_return"],
            "grad_steps": s["grad_steps"],
            "train_s": s["train_s"],
            "wall_s": s["wall_s"],
            "learn_rate": s["grad_steps"] / s["train_s"],
            "rate_unit": "grad steps/s",
            "peak_rss_mb": s.get("peak_rss_mb"),
            "precision": s.get("precision"),
            "torch_threads": s.get("torch_threads"),
            "versions": s.get("versions"),
            "curve": s.get("curve"),
            "run_dir": str(out),
        }

    return parse


def make_plan(a: argparse.Namespace, datasets: list[str], methods: list[tuple[str, str]]):
    """round -> units: every (gendm variant, d3rlpy variant) of an algorithm as a pair per dataset and
    seed; in round 1 also the methods without a counterpart, two to a unit."""
    pairs = [
        (g, p, ga)
        for g, ga in methods
        if g in GENDM_LIBS
        for p, pa in methods
        if p in D3RLPY_LIBS and pa == ga
    ]
    paired = {(g, algo) for g, _, algo in pairs} | {(p, algo) for _, p, algo in pairs}
    solo = [m for m in methods if m not in paired]
    env = {"MINARI_DATASETS_PATH": str(Path(a.datasets_root).resolve())} if a.datasets_root else {}

    def run(job: Job, tag: str, rnd: int) -> pairing.Run:
        out = job.run_dir(a.runs_dir, tag, rnd)
        cmd = command(job, a, out)
        parse = parse_summary(job, a.steps, out)
        return pairing.Run(job.lib, cmd, key=f"{job.method}|{job.dataset}", result_file=out / "summary.json",
                           workdir=out, parse=parse, env=env, cwd=ROOT)  # fmt: skip

    def plan(rnd: int) -> list[pairing.Unit]:
        units = []
        for seed in range(a.seeds):
            for d in datasets:
                for g, p, algo in pairs:
                    tag = f"{g}~{p}-{algo}"
                    runs = [run(Job(lib, algo, d, seed), tag, rnd) for lib in (g, p)]
                    units.append(pairing.Unit(f"{tag}|{d}", seed, runs, group=f"{algo}|{d}|{g}~{p}"))
            if rnd == 1:
                jobs = [Job(lib, algo, d, seed) for d in datasets for lib, algo in solo]
                for i in range(0, len(jobs), 2):
                    chunk = jobs[i : i + 2]
                    key = "solo:" + "+".join(f"{j.method}|{j.dataset}" for j in chunk)
                    units.append(pairing.Unit(key, seed, [run(j, "solo", rnd) for j in chunk]))
        return units

    return plan, pairs


# --------------------------------------------------------------------------------------- summary
def per_seed_rows(records: list[dict], refs: dict[str, tuple]) -> list[dict]:
    """One row per (method, dataset, seed): its return averaged over its runs (rounds, pairs), its rate
    the median over them."""
    by: dict[tuple[str, str, int], list[dict]] = {}
    for r in records:
        by.setdefault((r["method"], r["dataset"], r["seed"]), []).append(r)
    rows = []
    for (method, dataset, seed), rs in by.items():
        lo, hi, _ = refs[dataset]
        ret = float(np.mean([r["final_return"] for r in rs]))
        rows.append(
            {
                "lib": rs[0]["lib"],
                "algo": rs[0]["algo"],
                "method": method,
                "dataset": dataset,
                "seed": seed,
                "runs": len(rs),
                "final_return": ret,
                "final_returns": [r["final_return"] for r in rs],
                "normalized_score": 100.0 * (ret - lo) / (hi - lo),
                "grad_steps": rs[0]["grad_steps"],
                "train_s": float(np.median([r["train_s"] for r in rs])),
                "grad_steps_per_s": float(np.median([r["learn_rate"] for r in rs])),
                "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in rs) or None,
            }
        )
    return rows


def pooled_ratio(records: list[dict], algo: str, lib: str, peer: str, datasets: list[str], reps: int) -> dict:
    """The paired ratio of ``lib`` over ``peer`` on ``algo`` pooled over ``datasets``: each round's
    median over all its (dataset, seed) pairs, then the median and range of those."""
    groups = {f"{algo}|{d}|{lib}~{peer}" for d in datasets}
    pooled = [r | {"group": "pooled"} for r in records if r.get("group") in groups]
    return pairing.summarize(pooled, reps=reps, returns=False).get("pooled", {}).get("ratio", {})


def report(
    rows: list[dict], records: list[dict], a: argparse.Namespace, refs: dict[str, tuple], meta: dict
) -> str:
    from gendm.bench.stats import iqm, per_task_iqm_ci, probability_of_improvement_ci, stratified_bootstrap_ci

    reps = a.reps
    methods = list(dict.fromkeys(r["method"] for r in rows))
    datasets = [d for d in dict.fromkeys(r["dataset"] for r in rows)]

    def scores(method: str, only: list[str] | None = None) -> list[np.ndarray]:
        out = []
        for d in only or datasets:
            v = [r["normalized_score"] for r in rows if r["method"] == method and r["dataset"] == d]
            if v:
                out.append(np.array(v))
        return out

    def tasks_of(method: str) -> list[str]:
        return [d for d in datasets if any(r["method"] == method and r["dataset"] == d for r in rows)]

    lines = [
        f"**Offline RL suite**: {len(datasets)} datasets x {len(methods)} methods, {a.steps:,} gradient "
        f"steps, evaluation every {a.eval_every:,} steps ({a.eval_episodes} deterministic episodes, "
        f"**last** evaluation reported, never the best), each gendm run side by side with d3rlpy's run "
        f"of the same seed and dataset (one pinned core and one torch thread each, {a.rounds} rounds, "
        f"cores swapped between rounds), device {a.device}; {meta['where']}.",
        "",
        "Normalised score = 100 x (return - ref_min) / (ref_max - ref_min); IQM with 95% stratified-"
        f"bootstrap CI over seeds ({reps:,} replicates; a seed's score is first averaged over its "
        "rounds); grad steps/s = gradient steps / training seconds (setup and evaluation excluded), "
        "mean over seeds of each seed's median over rounds.",
        "",
        "| method | datasets | dataset-seeds | normalised score IQM [95% CI] | grad steps/s (mean) |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        sc = scores(m)
        point, lo, hi = stratified_bootstrap_ci(sc, iqm, reps=reps, seed=0)
        speed = np.mean([r["grad_steps_per_s"] for r in rows if r["method"] == m])
        n = sum(len(s) for s in sc)
        lines.append(f"| {m} | {len(sc)} | {n} | {point:.1f} [{lo:.1f}, {hi:.1f}] | {speed:.1f} |")

    lines += [
        "",
        "**gendm vs d3rlpy** on the datasets both finished (score difference = IQM(gendm) - IQM(d3rlpy); "
        "P(gendm > d3rlpy) = probability of improvement with 95% CI; speed ratio = gendm / d3rlpy grad "
        "steps/s of runs side by side: per round the median over its (dataset, seed) pairs, reported as "
        "the median of the round medians with their range):",
        "",
        "| gendm method | datasets | gendm IQM | d3rlpy IQM | difference | P(gendm > d3rlpy) [95% CI] "
        "| gendm steps/s | d3rlpy steps/s | speed ratio [range over rounds] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = [
        (lib, peer, algo)
        for algo in PAIRED
        for peer in D3RLPY_LIBS
        for lib in GENDM_LIBS
        if f"{lib}:{algo}" in methods and f"{peer}:{algo}" in methods
    ]
    for lib, peer, algo in pairs or [("gendm", "d3rlpy", algo) for algo in PAIRED]:
        g, d = f"{lib}:{algo}", f"{peer}:{algo}"
        common = [t for t in tasks_of(g) if t in tasks_of(d)]
        label = g if peer == "d3rlpy" else f"{g} vs {peer}"
        if not common:
            lines.append(f"| {label} | 0 | - | - | - | - | - | - | - |")
            continue
        gs, ds = scores(g, common), scores(d, common)
        gi, di = iqm(gs), iqm(ds)
        p, plo, phi = probability_of_improvement_ci(gs, ds, reps=reps, seed=0)
        gsp = np.mean([r["grad_steps_per_s"] for r in rows if r["method"] == g and r["dataset"] in common])
        dsp = np.mean([r["grad_steps_per_s"] for r in rows if r["method"] == d and r["dataset"] in common])
        pr = pooled_ratio(records, algo, lib, peer, common, reps)
        ratio = (
            f"{pr['median_of_round_medians']:.2f}x [{pr['range_over_rounds'][0]:.2f}, "
            f"{pr['range_over_rounds'][1]:.2f}]"
            if pr.get("median_of_round_medians") is not None
            else "n/a"
        )
        lines.append(
            f"| {label} | {len(common)} | {gi:.1f} | {di:.1f} | {gi - di:+.1f} "
            f"| {p:.2f} [{plo:.2f}, {phi:.2f}] | {gsp:.1f} | {dsp:.1f} | {ratio} |"
        )

    per_dataset = pairing.summarize(records, reps=reps)
    if per_dataset:
        lines += ["", "Speed ratio per dataset (gendm / d3rlpy grad steps/s, runs side by side):", ""]
        lines += ["| algorithm | dataset | comparison | ratio (median of round medians) | range | pairs |"]
        lines += ["|---|---|---|---|---|---|"]
        for grp, s in per_dataset.items():
            algo_, dset, comp = grp.split("|")
            r = s["ratio"]
            if r["median_of_round_medians"] is None:
                continue
            lo_, hi_ = r["range_over_rounds"]
            lines.append(
                f"| {algo_} | {dset} | {comp} | {r['median_of_round_medians']:.2f}x | {lo_:.2f}-{hi_:.2f} "
                f"| {s['pairs']} |"
            )
    lines += ["", "Per dataset: normalised score IQM [95% CI] over seeds, and grad steps/s.", ""]
    lines += [
        "| dataset | ref min / max | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for dset in datasets:
        cells = []
        for m in methods:
            v = np.array([r["normalized_score"] for r in rows if r["method"] == m and r["dataset"] == dset])
            sp = [r["grad_steps_per_s"] for r in rows if r["method"] == m and r["dataset"] == dset]
            if len(v) == 0:
                cells.append("-")
                continue
            pt, lo, hi = (float(x[0]) for x in per_task_iqm_ci(v[:, None], reps=reps, seed=0))
            cells.append(f"{pt:.1f} [{lo:.1f}, {hi:.1f}]; {np.mean(sp):.0f}/s")
        lo_, hi_, _ = refs[dset]
        lines.append(f"| {dset} | {lo_:.1f} / {hi_:.1f} | " + " | ".join(cells) + " |")

    cols = [
        "dataset",
        "method",
        "seed",
        "final return",
        "normalised",
        "grad steps",
        "train s",
        "steps/s",
        "peak RSS MB",
    ]
    lines += ["", "<details><summary>Per-seed raw numbers</summary>", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["method"], r["seed"])):
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        cells = [
            r["dataset"], r["method"], r["seed"], f"{r['final_return']:.1f}", f"{r['normalized_score']:.1f}",
            r["grad_steps"], f"{r['train_s']:.1f}", f"{r['grad_steps_per_s']:.1f}", rss,
        ]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- tiny data
def make_tiny(root: Path, env_id: str = "Hopper-v5", transitions: int = 20_000, seed: int = 0) -> str:
    """A small Minari dataset for smoke tests, written with gendm's ``save_dataset``: a mix of random
    and low-noise actions on ``env_id``, episodes cut at 50 steps (so both terminations and
    truncations occur). Returns its id."""
    import gymnasium as gym

    from gendm.data.dataset import OfflineDataset
    from gendm.data.minari_io import save_dataset

    name = env_id.split("-")[0].lower()
    dataset_id = f"gendm-test/{name}/tiny-v0"
    env = gym.make(env_id, max_episode_steps=50)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "nxt", "term", "trunc")}
    ends, n, ep = [], 0, 0
    while n < transitions:
        obs, _ = env.reset(seed=seed + ep)
        scale = 1.0 if ep % 2 == 0 else 0.1  # random and near-still behaviour
        done = False
        while not done:
            a = np.clip(rng.normal(0.0, scale, env.action_space.shape), -1, 1).astype(np.float32)
            nxt, r, term, trunc, _ = env.step(a)
            for k, v in zip(cols, (obs, a, r, nxt, term, trunc)):
                cols[k].append(v)
            obs, n, done = nxt, n + 1, term or trunc
        ends.append(n)
        ep += 1
    ds = OfflineDataset(
        observations=np.asarray(cols["obs"], np.float32),
        actions=np.asarray(cols["act"], np.float32),
        rewards=np.asarray(cols["rew"], np.float32),
        next_observations=np.asarray(cols["nxt"], np.float32),
        terminations=np.asarray(cols["term"], bool),
        truncations=np.asarray(cols["trunc"], bool),
        episode_ends=np.asarray(ends, np.int64),
        env_id=env_id,
        metadata={"description": "smoke-test data: alternating random / low-noise Gaussian actions"},
    )
    path = save_dataset(ds, dataset_id, root=root, overwrite=True)
    print(
        f"wrote {dataset_id} under {root} ({path}): {n} transitions, {len(ends)} episodes, "
        f"{int(ds.terminations.sum())} terminated, {int(ds.truncations.sum())} truncated"
    )
    return dataset_id


# --------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help="comma-separated dataset ids")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated LIB:ALGO, LIB in " + ", ".join([*GENDM_LIBS, *D3RLPY_LIBS]),
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="repeats of every gendm / d3rlpy pair (default 3)")
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--cores", default=None, help="the two cores for the pairs, e.g. 0,1 (default: first two)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="gendm override ALGO:key=value or gendm:key=value (added to " + " ".join(MATCHED) + ")",
    )
    p.add_argument("--datasets-root", default=None, help="root of the dataset ids (default: Minari's)")
    p.add_argument("--runs-dir", type=Path, default=None, help="default: runs/offline_suite/steps{N}")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "offline_suite.json")
    p.add_argument("--log", type=Path, default=None, help="JSONL of finished runs (default: OUT.jsonl)")
    p.add_argument("--gendm-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--d3rlpy-python", default=str(ROOT / ".venv-d3rlpy" / "bin" / "python"))
    p.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the runs to do")
    p.add_argument("--summarize-only", action="store_true", help="only write the tables from finished runs")
    p.add_argument("--make-tiny", type=Path, metavar="ROOT", help="write a tiny smoke-test dataset and exit")
    a = p.parse_args()
    if a.make_tiny:
        make_tiny(a.make_tiny)
        return
    if a.seeds < 1 or a.rounds < 1 or a.steps < 1:
        raise SystemExit("--steps, --seeds and --rounds must be >= 1")
    a.runs_dir = a.runs_dir or ROOT / "runs" / "offline_suite" / f"steps{a.steps}"
    log = a.log or a.out.with_suffix(".jsonl")

    datasets, refs = [], {}
    for d in a.datasets.split(","):
        data = dataset_dir(d, a.datasets_root)
        if data is None:
            print(f"skip dataset {d}: not found (create it with the dataset recipe, or pass --datasets-root)")
            continue
        datasets.append(d)
        refs[d] = references(data)
    methods = []
    algos, has_dataset, why = gendm_capabilities(a.gendm_python)
    for m in a.methods.split(","):
        lib, _, algo = m.partition(":")
        if lib in GENDM_LIBS:
            if why or not has_dataset:
                print(f"skip {m}: {why or 'gendm train has no --dataset option yet'}")
                continue
            if algo not in algos:
                print(
                    f"skip {m}: gendm has no algorithm {algo!r} yet (registered: {', '.join(sorted(algos))})"
                )
                continue
            if lib == "gendm-bf16" and not native_bf16_in(a.gendm_python):
                raise SystemExit(
                    f"{m}: bf16 is emulated on this CPU (no AVX512-BF16 or AMX), so it is slower than "
                    "fp32 and its speed says nothing about gendm; drop it from --methods."
                )
        elif lib in D3RLPY_LIBS:
            if algo not in PAIRED:
                print(f"skip {m}: benchmarks/vs_d3rlpy.py runs only {', '.join(PAIRED)}")
                continue
            if not Path(a.d3rlpy_python).exists():
                print(f"skip {m}: {a.d3rlpy_python} missing (see benchmarks/vs_d3rlpy.py for its setup)")
                continue
        else:
            libs = ", ".join(f"{x}:ALGO" for x in [*GENDM_LIBS, *D3RLPY_LIBS])
            raise SystemExit(f"unknown library in {m!r}: use one of {libs}")
        methods.append((lib, algo))
    plan, pairs = make_plan(a, datasets, methods)
    from gendm.core.provenance import provenance

    prov = provenance(threads=1)
    cores = [int(c) for c in a.cores.split(",")] if a.cores else None
    failed: list[dict] = []
    if a.dry_run:
        units = {(u.key, rnd, u.seed): u for rnd in range(1, a.rounds + 1) for u in plan(rnd)}
        for item in pairing.pending(plan, a.rounds, log):
            print(f"round {item['round']} seed {item['seed']} {item['unit']}:")
            for run in units[(item["unit"], item["round"], item["seed"])].runs:
                print("    " + " ".join(run.cmd))
        return
    if not a.summarize_only:
        failed = pairing.run_rounds(plan, a.rounds, log, cores=cores)
    records = pairing.collect(plan, a.rounds, log)
    missing = pairing.pending(plan, a.rounds, log)
    if missing:
        print(f"{len(missing)} units not finished (listed under 'missing' in {a.out})")
    if not records:
        raise SystemExit("no finished runs to summarise")
    rows = per_seed_rows(records, refs)
    git, cpu = prov["git"], prov["cpu"]
    meta = {
        "where": f"commit {git['short']}{' (dirty tree)' if git['dirty'] is True else ''}, {cpu['model']} "
        f"(AVX512-BF16 {cpu['flags'].get('avx512_bf16')}, AMX {cpu['flags'].get('amx_bf16')}), "
        f"{prov['date_utc']}",
        "command": " ".join([sys.executable, *sys.argv]),
    }
    md = report(rows, records, a, refs, meta)
    payload = {
        "provenance": prov,
        "command": meta["command"],
        "steps": a.steps,
        "eval_every": a.eval_every,
        "eval_episodes": a.eval_episodes,
        "seeds": a.seeds,
        "rounds": a.rounds,
        "cores": cores or pairing.default_cores(),
        "device": a.device,
        "overrides": MATCHED + a.set,
        "pairs": [f"{g}~{p}:{algo}" for g, p, algo in pairs],
        "references": {d: {"ref_min": r[0], "ref_max": r[1], "source": r[2]} for d, r in refs.items()},
        "log": str(log),
        "runs": rows,
        "raw_runs": records,
        "summary": pairing.summarize(records, reps=a.reps),
        "missing": missing,
    }
    pairing.write_json_atomic(a.out, payload)
    a.out.with_suffix(".md").write_text(md)
    print(md)
    print(pairing.markdown(payload["summary"]))
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")
    if failed:
        raise SystemExit(
            f"{len(failed)} runs failed (see their stderr logs); rerun the same command to retry"
        )


def native_bf16_in(py: str) -> bool:
    """Whether gendm, as imported by ``py``, treats bf16 as native on this CPU."""
    code = (
        "import torch; from gendm.core.precision import native_bf16; print(native_bf16(torch.device('cpu')))"
    )
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return out.returncode == 0 and out.stdout.strip().endswith("True")


if __name__ == "__main__":
    main()

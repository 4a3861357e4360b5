"""Offline RL suite: gendm's offline methods and d3rlpy's IQL / TD3+BC on the same Minari datasets, in
one run on one machine.

Every (dataset, method, seed) trains in its own subprocess with one torch thread, ``--workers`` (2) at a
time; jobs are ordered seed-major with each gendm method next to its d3rlpy counterpart, so paired runs
share the machine's load. gendm runs from ``--gendm-python`` (``.venv``: ``python -m gendm.cli train
ALGO --dataset ID ...``), d3rlpy from ``--d3rlpy-python`` (``.venv-d3rlpy``: ``benchmarks/vs_d3rlpy.py``,
which documents its hyperparameters), because d3rlpy 2.8.1 pins gymnasium 1.0.0 and gendm needs
gymnasium >= 1.1. Both write ``RUN/summary.json`` with gendm's contract and both are scored by gendm's
protocol: ``--eval-episodes`` deterministic episodes on a separate env (reset with seed + 10000) every
``--eval-every`` gradient steps; the score is the **last** evaluation, never the best.

Hyperparameters: both libraries at the papers' settings (listed in ``benchmarks/vs_d3rlpy.py``); gendm's
defaults already equal them except IQL's reward scaling, so the suite always passes ``--set
return_scale=1000`` to gendm's IQL (``MATCHED``). ``--methods`` also takes ``gendm-bf16:ALGO``, the same
gendm agent with ``precision=bf16`` (compared with d3rlpy like ``gendm:ALGO``), and ``d3rlpy-ftz:ALGO``,
d3rlpy with the subnormals-as-zero flag gendm's training loop sets (every gendm method is then also
compared with it).

Resumable: a run whose ``summary.json`` says ``ok`` at the full budget is skipped, so rerunning the
same command continues an interrupted suite. Missing gendm methods (not in ``gendm.agents.ALGOS``),
a gendm CLI without ``--dataset`` and missing datasets are skipped with a printed reason.

Output: ``--out`` (``benchmarks/results/offline_suite.json``: raw per-seed numbers and curves) and a
markdown report beside it (``.md``): normalised score (``100 * (R - ref_min) / (ref_max - ref_min)``
with the dataset's ``ref_min_score`` / ``ref_max_score``, else ``gendm.envs.references``) as IQM with
a 95% stratified-bootstrap CI (``gendm.bench.stats``, 50k replicates), gradient steps per second of
training (evaluation excluded), and gendm / d3rlpy for IQL and TD3+BC: the IQM difference, the
probability of improvement and the mean of the per-(dataset, seed) speed ratios.

    .venv/bin/python benchmarks/offline_suite.py --steps 20000 --eval-every 5000 --seeds 5
    .venv/bin/python benchmarks/offline_suite.py --summarize-only --steps 20000    # tables only
    .venv/bin/python benchmarks/offline_suite.py --make-tiny /tmp/tiny-datasets    # a smoke dataset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("hopper", "halfcheetah", "walker2d")
KINDS = ("medium", "medium-replay", "medium-expert")
DEFAULT_DATASETS = [f"gendm/{e}/{k}-v0" for e in ENVS for k in KINDS]
# Paired methods side by side, so that both libraries' runs of one (dataset, seed) overlap in time.
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
GENDM_LIBS = {"gendm": [], "gendm-bf16": ["precision=bf16"]}  # gendm-bf16: the same agent in bf16
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

    def run_dir(self, runs: Path) -> Path:
        return runs / self.dataset.replace("/", "__") / f"{self.lib}-{self.algo}" / f"s{self.seed}"


# --------------------------------------------------------------------------------------- what exists
def gendm_capabilities(py: str) -> tuple[set[str], bool, str]:
    """(registered gendm algorithms, whether `gendm train` takes --dataset, a reason if unusable)."""
    code = (
        "import json, subprocess, sys\n"
        "from gendm.agents import ALGOS\n"
        "h = subprocess.run([sys.executable, '-m', 'gendm.cli', 'train', '--help'], capture_output=True,"
        " text=True).stdout\n"
        "print(json.dumps({'algos': list(ALGOS), 'dataset': '--dataset' in h}))\n"
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
    cmd += ["--device", a.device, "--no-progress"]
    for s in MATCHED + a.set:
        algo, _, kv = s.partition(":")
        if algo in ("gendm", job.algo):
            cmd += ["--set", kv]
    return cmd + [x for kv in GENDM_LIBS[job.lib] for x in ("--set", kv)]


def finished(summary: Path, steps: int) -> bool:
    try:
        s = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return s.get("status", "ok") == "ok" and int(s.get("grad_steps", -1)) >= steps


def run_all(jobs: list[Job], a: argparse.Namespace) -> None:
    todo = [j for j in jobs if not finished(j.run_dir(a.runs_dir) / "summary.json", a.steps)]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already finished, {len(todo)} to run", flush=True)
    if a.dry_run:
        for j in todo:
            print(" ".join(command(j, a, j.run_dir(a.runs_dir))))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if a.datasets_root:
        env["MINARI_DATASETS_PATH"] = str(Path(a.datasets_root).resolve())
    lock, done, t_start = threading.Lock(), [0], time.perf_counter()

    def launch(job: Job) -> None:
        out = job.run_dir(a.runs_dir)
        out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(out / "stdout.log", "w") as so, open(out / "stderr.log", "w") as se:
            rc = subprocess.run(command(job, a, out), stdout=so, stderr=se, env=env, cwd=ROOT).returncode
        took = time.perf_counter() - t
        with lock:
            done[0] += 1
            eta = (time.perf_counter() - t_start) / done[0] * (len(todo) - done[0])
            if rc == 0 and (out / "summary.json").is_file():
                s = json.loads((out / "summary.json").read_text())
                msg = f"return {s['final_return']:.1f}, {s['grad_steps'] / s['train_s']:.1f} grad steps/s"
            else:
                tail = (out / "stderr.log").read_text().strip().splitlines()[-1:]
                msg = f"FAILED (exit {rc}): {tail} - see {out / 'stderr.log'}"
            print(
                f"[{done[0]}/{len(todo)}] {job.method} {job.dataset} seed {job.seed}: {msg} "
                f"({took:.0f} s; ETA {eta / 60:.0f} min)",
                flush=True,
            )

    with ThreadPoolExecutor(a.workers) as pool:
        list(pool.map(launch, todo))


# --------------------------------------------------------------------------------------- summary
def collect(jobs: list[Job], a: argparse.Namespace, refs: dict[str, tuple]) -> tuple[list[dict], list[dict]]:
    """(finished runs, the others with why: not run yet, or failed with the tail of its stderr)."""
    rows, missing = [], []
    for j in jobs:
        path = j.run_dir(a.runs_dir) / "summary.json"
        if not finished(path, a.steps):
            err = path.parent / "stderr.log"
            tail = err.read_text().strip().splitlines()[-3:] if err.is_file() else []
            missing.append({"method": j.method, "dataset": j.dataset, "seed": j.seed, "stderr_tail": tail})
            continue
        s = json.loads(path.read_text())
        lo, hi, _ = refs[j.dataset]
        rows.append(
            {
                "lib": j.lib,
                "algo": j.algo,
                "method": j.method,
                "dataset": j.dataset,
                "seed": j.seed,
                "final_return": s["final_return"],
                "normalized_score": 100.0 * (s["final_return"] - lo) / (hi - lo),
                "grad_steps": s["grad_steps"],
                "train_s": s["train_s"],
                "wall_s": s["wall_s"],
                "grad_steps_per_s": s["grad_steps"] / s["train_s"],
                "peak_rss_mb": s.get("peak_rss_mb"),
                "versions": s.get("versions"),
                "curve": s.get("curve"),
                "run_dir": str(path.parent),
            }
        )
    return rows, missing


def report(rows: list[dict], a: argparse.Namespace, refs: dict[str, tuple], meta: dict) -> str:
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
        f"**last** evaluation reported, never the best), {a.workers} runs in parallel, 1 torch thread "
        f"each, device {a.device}; started {meta['started']}, {meta['machine']}.",
        "",
        "Normalised score = 100 x (return - ref_min) / (ref_max - ref_min); IQM with 95% stratified-"
        f"bootstrap CI over runs ({reps:,} replicates); grad steps/s = gradient steps / training "
        "seconds (evaluation excluded), mean over runs.",
        "",
        "| method | datasets | runs | normalised score IQM [95% CI] | grad steps/s (mean) |",
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
        "P(gendm > d3rlpy) = probability of improvement with 95% CI; speed = mean of per-(dataset, seed) "
        "ratios of grad steps/s; targets: score not worse, speed >= 2x):",
        "",
        "| gendm method | datasets | gendm IQM | d3rlpy IQM | difference | P(gendm > d3rlpy) [95% CI] "
        "| gendm steps/s | d3rlpy steps/s | speed ratio |",
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
        speed = {
            (r["lib"], r["dataset"], r["seed"]): r["grad_steps_per_s"]
            for r in rows
            if r["algo"] == algo and r["dataset"] in common and r["lib"] in (lib, peer)
        }
        ratios = [
            v / speed[(peer, k[1], k[2])]
            for k, v in speed.items()
            if k[0] == lib and (peer, k[1], k[2]) in speed
        ]
        gsp = np.mean([v for k, v in speed.items() if k[0] == lib])
        dsp = np.mean([v for k, v in speed.items() if k[0] == peer])
        ratio = f"{np.mean(ratios):.2f}x" if ratios else "n/a"
        lines.append(
            f"| {label} | {len(common)} | {gi:.1f} | {di:.1f} | {gi - di:+.1f} "
            f"| {p:.2f} [{plo:.2f}, {phi:.2f}] | {gsp:.1f} | {dsp:.1f} | {ratio} |"
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

    from gendm.data.dataset import OfflineDataset, save_dataset

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
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
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
    a.runs_dir = a.runs_dir or ROOT / "runs" / "offline_suite" / f"steps{a.steps}"
    started = time.strftime("%Y-%m-%d %H:%M:%S")

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
    jobs = [Job(lib, algo, d, s) for s in range(a.seeds) for d in datasets for lib, algo in methods]
    if not a.summarize_only:
        run_all(jobs, a)
        if a.dry_run:
            return
    rows, missing = collect(jobs, a, refs)
    if missing:
        print(f"{len(missing)} of {len(jobs)} runs not finished (listed under 'missing' in {a.out})")
    if not rows:
        raise SystemExit("no finished runs to summarise")
    meta = {
        "started": started,
        "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})",
        "command": " ".join([sys.executable, *sys.argv]),
    }
    md = report(rows, a, refs, meta)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "steps": a.steps,
        "eval_every": a.eval_every,
        "eval_episodes": a.eval_episodes,
        "seeds": a.seeds,
        "workers": a.workers,
        "device": a.device,
        "overrides": MATCHED + a.set,
        "references": {d: {"ref_min": r[0], "ref_max": r[1], "source": r[2]} for d, r in refs.items()},
        **meta,
        "runs": rows,
        "missing": missing,
    }
    tmp = a.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, a.out)
    a.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

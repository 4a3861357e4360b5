"""d3rlpy's IQL and TD3+BC on a gendm (Minari-format) dataset, scored by gendm's evaluation protocol.

One run of one library: ``benchmarks/offline_suite.py`` pairs it with gendm's run of the same
algorithm, dataset and seed (``benchmarks/pairing.py``: both start together, each pinned to its own
core with one thread, in several rounds) and reports the median ratio of their gradient steps per
second (``grad_steps / train_s``, below) over the rounds; for IQL and TD3+BC alone:

    .venv/bin/python benchmarks/offline_suite.py --methods gendm:iql,d3rlpy:iql,gendm:td3bc,d3rlpy:td3bc

Runs from its own environment, because d3rlpy 2.8.1 pins ``gymnasium==1.0.0`` while gendm needs
gymnasium >= 1.1 (``gymnasium.vector.AutoresetMode``); create it once (``.venv-d3rlpy`` is
git-ignored; about a minute from a local wheel cache):

    python3 -m venv .venv-d3rlpy
    .venv-d3rlpy/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl   # the exact torch of .venv, CPU
    .venv-d3rlpy/bin/pip install d3rlpy==2.8.1 h5py mujoco imageio
    .venv-d3rlpy/bin/python benchmarks/vs_d3rlpy.py --algo iql --dataset gendm/hopper/medium-v0 \
        --steps 100000 --eval-every 10000 --seed 0 --out runs/d3rlpy-iql-hopper-medium-s0

Data. The Minari files are read directly with h5py (no dependency on the ``minari`` package or its
version): ``DIR/data/main_data.hdf5`` with groups ``episode_N`` (``observations`` has T+1 rows;
``actions``, ``rewards``, ``terminations``, ``truncations`` T) and ``DIR/data/metadata.json``
(``env_spec`` gives the environment id; ``ref_min_score`` / ``ref_max_score`` are copied into the
summary). ``--dataset`` is a directory (the dataset's or its ``data/``) or an id looked up under
``--datasets-root``, ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets`` (Minari's layout).
Terminations map to d3rlpy's ``terminals`` (no bootstrap; d3rlpy uses a zero next observation) and
truncations to ``timeouts``. d3rlpy stores T observations per episode and drops the last transition
of a timed-out episode (it has no next observation); to train on exactly the transitions gendm trains
on, a truncated episode gets one padding row (its true final observation, a zero action and reward)
that carries the timeout flag: the episode then yields all T real transitions, the last one
bootstrapping from the true final observation, and the padding row itself is never a transition. An
episode that ends with both flags set is terminal; one that ends with neither counts as truncated.
(Checked on a dataset with both kinds of endings: d3rlpy's transition picker then returns exactly the
dataset's transitions: observations, actions, rewards, next observations and terminal flags.)

Hyperparameters (the papers' D4RL locomotion settings, as in d3rlpy's reproduction scripts
``reproductions/offline/iql.py`` and ``td3_plus_bc.py``; the other values are d3rlpy 2.8.1's
defaults, which equal the papers'):

- IQL (Kostrikov et al., 2021): expectile 0.7, inverse temperature (``weight_temp``, beta) 3.0,
  advantage weight clipped at 100, actor / critic / value lr 3e-4 (Adam), cosine decay of the actor
  lr over the run's ``--steps`` (``CosineAnnealingLRFactory(T_max=steps)``; the script uses
  T_max = its 500k steps = its run length), batch 256, gamma 0.99, tau 0.005, 2 critics, 256x256
  ReLU MLPs, Gaussian actor with state-independent log-std in [-5, 2] (tanh of the mean at
  evaluation), rewards scaled by ``1000 / (max - min episode return)`` of the dataset
  (``ReturnBasedRewardScaler(multiplier=1000)``, the paper's locomotion normalisation).
- TD3+BC (Fujimoto & Gu, 2021): alpha 2.5, observations standardised with the dataset's mean / std
  (``StandardObservationScaler``, eps 1e-3), actor / critic lr 3e-4, batch 256, gamma 0.99,
  tau 0.005, target policy noise 0.2 clipped at 0.5, actor (and targets) updated every 2nd step,
  2 critics, 256x256 ReLU MLPs.

The scalers' statistics (observation mean / std, largest / smallest episode return) are computed with
numpy and passed in, equal to what d3rlpy's ``fit_with_transition_picker`` computes in Python loops
over every transition (checked: identical values), which saves 5-10 s of setup per 1M transitions.
Actions are scaled to [-1, 1] with ``MinMaxActionScaler`` only when the action space is not already
[-1, 1] (the MuJoCo tasks are).

Loop and timing. A manual loop of ``dataset.sample_transition_batch(256)`` + ``algo.update(batch)``:
exactly the body of d3rlpy's ``fit`` without its per-step logger bookkeeping, progress bar, config
dump and model saving, so d3rlpy's update rate here is, if anything, slightly better than under
``fit`` (measured: the two agree within this shared machine's noise). ``train_s`` is the time of
those calls alone (sampling and update; evaluation excluded), ``grad_steps_per_s = grad_steps /
train_s``; ``wall_s`` is the whole run after setup (evaluation included), ``setup_s`` reading the
files and building the d3rlpy dataset.

Evaluation (gendm's protocol): before training, every ``--eval-every`` gradient steps and at the
end, ``--eval-episodes`` (10) deterministic episodes (``predict``) on a separate environment made
with ``gymnasium.make(env_id)``, reset with ``seed + 10000`` (gendm's ``EVAL_SEED_OFFSET``) before
every evaluation and unseeded between its episodes, as gendm's one-env evaluation vector env; actions
clipped to the action space. ``final_return`` is the **last** evaluation, never the best.

Output: ``OUT/summary.json`` in gendm's contract (``final_return``, ``grad_steps``, ``train_s``,
``wall_s``, ``curve`` of {grad_steps, return_mean, return_std, train_s, wall_s}, ``algo``,
``dataset``, ``seed``, ``versions``, ``provenance`` (``gendm.core.provenance``, imported from this
checkout's ``src``: commit, CPU and flags, threads, date), ...), written atomically (temp file +
rename). CPU by default with ``--threads 1``; ``--device cuda`` passes through to d3rlpy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EVAL_SEED_OFFSET = 10_000  # gendm.train.online.EVAL_SEED_OFFSET (not imported: gendm is not installed here)
ALGOS = ("iql", "td3bc")


# ------------------------------------------------------------------------------------------ dataset
def resolve_dataset(dataset: str, root: str | None = None) -> Path:
    """The ``data/`` directory holding ``main_data.hdf5`` and ``metadata.json``."""
    candidates = [Path(dataset)]
    roots = [root, os.environ.get("MINARI_DATASETS_PATH"), str(Path.home() / ".minari" / "datasets")]
    candidates += [Path(r) / dataset for r in roots if r]
    for c in candidates:
        for d in (c, c / "data"):
            if (d / "main_data.hdf5").is_file():
                return d
    raise SystemExit(
        f"dataset {dataset!r} not found: looked for main_data.hdf5 in "
        + ", ".join(str(c) for c in candidates)
        + ". Pass a directory, or --datasets-root / MINARI_DATASETS_PATH where the id lives."
    )


def read_minari(data_dir: Path) -> dict[str, Any]:
    """Episodes of a Minari HDF5 dataset as lists of numpy arrays, plus the parsed metadata."""
    import h5py

    meta_path = data_dir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    episodes = []
    with h5py.File(data_dir / "main_data.hdf5", "r") as f:
        names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        for k in names:
            g = f[k]
            ep = {
                key: g[key][()]
                for key in ("observations", "actions", "rewards", "terminations", "truncations")
            }
            T = len(ep["rewards"])
            if len(ep["observations"]) != T + 1 or len(ep["actions"]) != T:
                raise SystemExit(
                    f"{data_dir}/main_data.hdf5 {k}: expected T+1 observations and T actions for T={T} "
                    f"rewards, got {len(ep['observations'])} and {len(ep['actions'])}."
                )
            episodes.append(ep)
    if not episodes:
        raise SystemExit(f"{data_dir}/main_data.hdf5 has no episode_N groups.")
    return {"episodes": episodes, "metadata": meta, "env_id": env_id_of(meta, data_dir)}


def env_id_of(meta: dict, data_dir: Path) -> str:
    if meta.get("env_id"):
        return str(meta["env_id"])
    spec = meta.get("env_spec")
    if spec:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        if spec.get("id"):
            return str(spec["id"])
    raise SystemExit(f"{data_dir}/metadata.json names no environment (env_spec.id or env_id).")


def flat_arrays(episodes: list[dict]) -> dict[str, np.ndarray]:
    """Flat d3rlpy arrays (observations, actions, rewards, terminals, timeouts), one padding row per
    truncated episode (see the module docstring), and the count of real transitions."""
    obs, act, rew, term, tout = [], [], [], [], []
    n = 0
    for ep in episodes:
        T = len(ep["rewards"])
        n += T
        terminated = bool(ep["terminations"][-1])
        o = ep["observations"].astype(np.float32)
        a = ep["actions"].astype(np.float32).reshape(T, -1)
        r = ep["rewards"].astype(np.float32).reshape(T)
        if terminated:
            obs.append(o[:T])
            act.append(a)
            rew.append(r)
            t = np.zeros(T, np.float32)
            t[-1] = 1.0
            term.append(t)
            tout.append(np.zeros(T, np.float32))
        else:  # truncated (or cut without a flag): pad with the final observation
            obs.append(o)
            act.append(np.concatenate([a, np.zeros_like(a[:1])]))
            rew.append(np.concatenate([r, np.zeros(1, np.float32)]))
            term.append(np.zeros(T + 1, np.float32))
            t = np.zeros(T + 1, np.float32)
            t[-1] = 1.0
            tout.append(t)
    return {
        "observations": np.concatenate(obs),
        "actions": np.concatenate(act),
        "rewards": np.concatenate(rew),
        "terminals": np.concatenate(term),
        "timeouts": np.concatenate(tout),
        "transitions": n,
    }


# ------------------------------------------------------------------------------------------ algorithms
def dataset_statistics(episodes: list[dict]) -> dict[str, np.ndarray | float]:
    """What d3rlpy's scalers fit (``fit_with_transition_picker``) in Python loops over every transition,
    computed with numpy: mean and std (ddof 0) of the observations the transitions start from, and the
    largest and smallest episode return."""
    obs = np.concatenate([ep["observations"][:-1] for ep in episodes]).astype(np.float64)
    returns = [float(np.sum(ep["rewards"].astype(np.float32).reshape(-1, 1))) for ep in episodes]  # as d3rlpy
    return {
        "obs_mean": obs.mean(0),
        "obs_std": obs.std(0),
        "return_max": max(returns),
        "return_min": min(returns),
    }


def make_algo(algo: str, steps: int, action_space, device: str, stats: dict | None = None):
    """The d3rlpy algorithm; ``stats`` (``dataset_statistics``) pre-fits its scalers, else ``build``
    fits them with d3rlpy's own (slower, identical) code."""
    import d3rlpy

    stats = stats or {}

    common: dict[str, Any] = dict(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256)
    common.update(gamma=0.99, tau=0.005, n_critics=2)
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256], activation="relu")
    common.update(actor_encoder_factory=enc, critic_encoder_factory=enc)
    low, high = np.asarray(action_space.low), np.asarray(action_space.high)
    if not (np.allclose(low, -1.0) and np.allclose(high, 1.0)):
        common["action_scaler"] = d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high)
    if algo == "iql":
        cfg = d3rlpy.algos.IQLConfig(
            **common,
            value_encoder_factory=enc,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)
            ),
            expectile=0.7,
            weight_temp=3.0,
            max_weight=100.0,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(
                return_max=stats.get("return_max"), return_min=stats.get("return_min"), multiplier=1000.0
            ),
        )
    elif algo == "td3bc":
        cfg = d3rlpy.algos.TD3PlusBCConfig(
            **common,
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            alpha=2.5,
            update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(
                mean=stats.get("obs_mean"), std=stats.get("obs_std")
            ),
        )
    else:
        raise SystemExit(f"unknown --algo {algo!r}; choose from {', '.join(ALGOS)}")
    dev = "cpu:0" if device == "cpu" else ("cuda:0" if device == "cuda" else device)
    return cfg.create(device=dev)


def build(algo, dataset) -> None:
    """What ``fit`` does before its loop: fit the scalers on the dataset and build the networks."""
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    build_scalers_with_transition_picker(algo, dataset)
    shape = dataset.sample_transition().observation_signature.shape
    algo.create_impl(shape[0] if len(shape) == 1 else shape, dataset.dataset_info.action_size)


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(algo, env, episodes: int, seed: int) -> np.ndarray:
    """gendm's protocol: reset with ``seed`` once, then unseeded resets between episodes."""
    low, high = env.action_space.low, env.action_space.high
    returns = []
    obs, _ = env.reset(seed=seed)
    while len(returns) < episodes:
        ret, done = 0.0, False
        while not done:
            a = algo.predict(np.asarray(obs, np.float32)[None])[0]
            obs, r, terminated, truncated, _ = env.step(np.clip(a, low, high))
            ret += float(r)
            done = terminated or truncated
        returns.append(ret)
        if len(returns) < episodes:
            obs, _ = env.reset()
    return np.asarray(returns)


def versions() -> dict[str, str]:
    import d3rlpy
    import gymnasium
    import torch

    out = {
        "d3rlpy": d3rlpy.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    return out


def provenance(threads: int) -> dict[str, Any]:
    """``gendm.core.provenance.provenance`` from this checkout's ``src`` (gendm is not installed here;
    that module needs only the standard library and torch)."""
    src = str(Path(__file__).resolve().parent.parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from gendm.core.provenance import provenance as where

    return where(threads)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ the run
def run(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(a.threads)
    if a.flush_denormals:  # the process flag gendm's training loop sets (subnormals as zero)
        torch.set_flush_denormal(True)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import d3rlpy
    import gymnasium as gym

    t_setup = time.perf_counter()
    data_dir = resolve_dataset(a.dataset, a.datasets_root)
    raw = read_minari(data_dir)
    flat = flat_arrays(raw["episodes"])
    d3rlpy.seed(a.seed)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=flat["observations"],
        actions=flat["actions"],
        rewards=flat["rewards"],
        terminals=flat["terminals"],
        timeouts=flat["timeouts"],
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )
    assert dataset.transition_count == flat["transitions"], (dataset.transition_count, flat["transitions"])
    env_id = raw["env_id"]
    eval_env = gym.make(env_id)
    algo = make_algo(a.algo, a.steps, eval_env.action_space, a.device, dataset_statistics(raw["episodes"]))
    build(algo, dataset)
    setup_s = time.perf_counter() - t_setup

    curve: list[dict[str, float]] = []
    train_s = 0.0
    t0 = time.perf_counter()

    def do_eval(step: int) -> None:
        r = evaluate(algo, eval_env, a.eval_episodes, a.seed + EVAL_SEED_OFFSET)
        point = {
            "grad_steps": step,
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "train_s": round(train_s, 3),
            "wall_s": round(time.perf_counter() - t0, 3),
        }
        curve.append(point)
        if a.verbose:
            print(json.dumps(point), file=sys.stderr, flush=True)

    do_eval(0)
    bs = algo.config.batch_size
    step = 0
    last_loss: dict[str, float] = {}
    while step < a.steps:
        chunk = min(a.eval_every - step % a.eval_every, a.steps - step)
        t = time.perf_counter()
        for _ in range(chunk):
            last_loss = algo.update(dataset.sample_transition_batch(bs))
        train_s += time.perf_counter() - t
        step += chunk
        if step % a.eval_every == 0 or step == a.steps:
            do_eval(step)
    wall_s = time.perf_counter() - t0
    finite = all(np.isfinite(v) for v in last_loss.values())
    meta = raw["metadata"]
    return {
        "lib": "d3rlpy",
        "algo": a.algo,
        "dataset": a.dataset,
        "dataset_path": str(data_dir),
        "env_id": env_id,
        "seed": a.seed,
        "status": "ok" if finite else "failed",
        "error": None if finite else f"non-finite loss at the end: {last_loss}",
        "final_return": curve[-1]["return_mean"],
        "final_return_std": curve[-1]["return_std"],
        "grad_steps": step,
        "train_s": round(train_s, 3),
        "wall_s": round(wall_s, 3),
        "setup_s": round(setup_s, 3),
        "eval_s": round(wall_s - train_s, 3),
        "grad_steps_per_s": step / train_s if train_s > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "curve": curve,
        "last_losses": {k: float(v) for k, v in last_loss.items()},
        "eval_protocol": {
            "eval_every": a.eval_every,
            "episodes": a.eval_episodes,
            "deterministic": True,
            "eval_seed": a.seed + EVAL_SEED_OFFSET,
            "reported": "last checkpoint",
        },
        "dataset_info": {
            "episodes": len(raw["episodes"]),
            "transitions": flat["transitions"],
            "terminated_episodes": int(flat["terminals"].sum()),
            "truncated_episodes": int(flat["timeouts"].sum()),
            "ref_min_score": meta.get("ref_min_score"),
            "ref_max_score": meta.get("ref_max_score"),
        },
        "config": json.loads(algo.config.serialize()),
        "timing": "manual loop of sample_transition_batch + update (fit's loop body); train_s excludes eval",
        "versions": versions(),
        "provenance": provenance(a.threads),
        "device": a.device,
        "torch_threads": torch.get_num_threads(),
        "flush_denormals": a.flush_denormals,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, required=True)
    p.add_argument("--dataset", required=True, help="dataset id (Minari layout) or directory")
    p.add_argument("--datasets-root", default=None, help="root of dataset ids (default: Minari's)")
    p.add_argument("--steps", type=int, required=True, help="gradient steps")
    p.add_argument("--eval-every", type=int, default=10_000, help="evaluate every N gradient steps")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, or a torch device string")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--flush-denormals", action="store_true", help="treat subnormal floats as zero, as gendm's loop does"
    )
    p.add_argument("--out", type=Path, required=True, help="run directory; writes OUT/summary.json")
    p.add_argument("--verbose", action="store_true", help="print every evaluation to stderr")
    a = p.parse_args()
    if a.steps < 1 or a.eval_every < 1 or a.eval_episodes < 1:
        raise SystemExit("--steps, --eval-every and --eval-episodes must be >= 1")
    a.out.mkdir(parents=True, exist_ok=True)
    summary = run(a)
    summary["command"] = " ".join([sys.executable, *sys.argv])
    write_json_atomic(a.out / "summary.json", summary)
    print(
        f"{a.algo} seed {a.seed}: final return {summary['final_return']:.1f}, "
        f"{summary['grad_steps_per_s']:.1f} grad steps/s, wrote {a.out / 'summary.json'}"
    )


if __name__ == "__main__":
    main()

"""The online training loop: one loop for off-policy and on-policy agents, the evaluation protocol,
metrics, checkpoints, resume, and a clean stop when training diverges.

Protocol (fixed here, before any number is produced): evaluate at env step 0 and every
``eval_every`` env steps, and once more at the end, with ``eval_episodes`` deterministic episodes on a
separate environment reset with the same seed each time; the reported ``final_return`` is the mean
return of the **last** evaluation (the last checkpoint), never the best. A checkpoint is written
after every evaluation; a rerun with the same ``out_dir`` resumes from it.
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import gendm
from gendm.agents import ALGOS
from gendm.agents.base import Agent, AlgoSpec
from gendm.core.atomic import atomic_write_json
from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint, save_checkpoint_dir
from gendm.core.config import apply_overrides, to_dict
from gendm.core.device import resolve_device
from gendm.core.errors import CheckpointError, ConfigError, GendmError, TrainingDivergedError
from gendm.core.seeding import seed_everything
from gendm.data import ReplayBuffer, RolloutBuffer
from gendm.envs import check_env_id, load_normalization_state, make_env, normalization_state
from gendm.train.evaluate import _to_env_action, episode_returns, evaluate
from gendm.train.logger import MetricLogger

EVAL_SEED_OFFSET = 10_000


@dataclass
class TrainSettings:
    """Everything about a run that is not the algorithm's own config."""

    algo: str
    env_id: str
    steps: int = 100_000
    seed: int = 0
    device: str = "cpu"
    out_dir: Path = Path("runs/train")
    overrides: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 5_000
    eval_episodes: int = 10
    log_every: int = 1_000
    resume: bool = True
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for name in ("steps", "eval_every", "eval_episodes", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


def train(settings: TrainSettings) -> dict[str, Any]:
    """Run (or resume) one training run; write and return its ``summary.json`` contents."""
    return OnlineTrainer(settings).run()


class OnlineTrainer:
    def __init__(self, s: TrainSettings) -> None:
        self.s = s
        if s.threads:
            torch.set_num_threads(s.threads)
        self.spec: AlgoSpec = ALGOS.get(s.algo)
        self.config = apply_overrides(self.spec.config_cls(), s.overrides)
        check_env_id(s.env_id)
        self.device = resolve_device(s.device)
        seed_everything(s.seed)
        c = self.config
        self.env = make_env(
            s.env_id,
            c.num_envs,
            seed=s.seed,
            normalize_obs=c.normalize_obs,
            normalize_reward=c.normalize_reward,
            gamma=c.gamma,
        )
        space = self.env.single_action_space
        if not self.spec.supports(space):
            fits = [n for n, sp in ALGOS.items() if sp.supports(space)]
            raise ConfigError(
                f"{s.algo} needs a {' or '.join(self.spec.action_spaces)} action space, but {s.env_id} "
                f"has {space}. Algorithms for it: {', '.join(fits)}."
            )
        self.eval_env = make_env(s.env_id, 1, seed=s.seed + EVAL_SEED_OFFSET, normalize_obs=c.normalize_obs)
        self.agent: Agent = self.spec.agent_cls(
            c, self.env.single_observation_space, space, self.device, total_steps=s.steps
        )
        self.buffer = self._make_buffer() if self.spec.kind == "off_policy" else None
        self.env_steps = self.grad_steps = 0
        self.curve: list[dict[str, float]] = []
        self.elapsed_before = 0.0  # wall-clock of earlier sessions of this run (resume)
        self.eval_s = 0.0
        self.pending: list[dict[str, torch.Tensor]] = []
        self.episodes: list[float] = []
        self.next_log = s.log_every
        self.ckpt_dir = s.out_dir / "checkpoint"

    # ----------------------------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        s = self.s
        s.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = s.resume and self._try_resume()
        self.logger = MetricLogger(s.out_dir, s.tensorboard)
        self.t0 = time.perf_counter()
        self.bar = tqdm(
            total=s.steps,
            initial=min(self.env_steps, s.steps),
            unit="step",
            disable=not s.progress,
            desc=f"{s.algo} {s.env_id} seed {s.seed}",
            mininterval=1.0,
            dynamic_ncols=True,
        )
        if resumed:
            self.bar.write(f"Resumed {s.out_dir} at env step {self.env_steps}.")
        status, error = "ok", None
        try:
            if not self.curve:
                self._evaluate_and_checkpoint()
            if self.env_steps < s.steps:
                (self._off_policy if self.spec.kind == "off_policy" else self._on_policy)()
            if self.curve[-1]["env_steps"] != self.env_steps:
                self._evaluate_and_checkpoint()
        except TrainingDivergedError as e:
            status, error = "failed", str(e)
            raise
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user; rerun the same command to resume"
            if self.curve and self.agent.parameters_finite():
                self._save()  # keep the work since the last evaluation
            raise
        finally:
            self.bar.close()
            self.logger.close()
            summary = self._summary(status, error)
            if status != "interrupted":
                atomic_write_json(s.out_dir / "summary.json", summary)
        return summary

    def _off_policy(self) -> None:
        c, env, agent, buffer = self.config, self.env, self.agent, self.buffer
        assert buffer is not None
        obs, _ = env.reset(seed=self.s.seed + self.env_steps)
        iteration = 0
        while self.env_steps < self.s.steps:
            if self.env_steps < c.learning_starts:
                actions = env.action_space.sample()
            else:
                actions = _to_env_action(agent.act(self._tensor(obs)), env.single_action_space)
            next_obs, rewards, terms, truncs, info = env.step(actions)
            real_next_obs = self._final_obs(next_obs, terms | truncs, info)
            buffer.add(obs, actions, rewards, real_next_obs, terms, truncs)
            obs = next_obs
            self._count_env_steps(env.num_envs)
            iteration += 1
            if self.env_steps >= c.learning_starts and iteration % c.train_freq == 0:
                for _ in range(c.gradient_steps):
                    self.pending.append(agent.update(buffer.sample(c.batch_size)))
                    self.grad_steps += 1
            self._after_env_step()

    def _on_policy(self) -> None:
        c, env, agent = self.config, self.env, self.agent
        rollout = RolloutBuffer(
            c.num_steps,
            env.num_envs,
            env.single_observation_space.shape,
            env.single_action_space.shape,
            self.device,
            torch.long if isinstance(env.single_action_space, gym.spaces.Discrete) else torch.float32,
        )
        obs, _ = env.reset(seed=self.s.seed + self.env_steps)
        while self.env_steps < self.s.steps:
            for _ in range(c.num_steps):
                obs_t = self._tensor(obs)
                action, log_prob, value = agent.act_with_value(obs_t)
                next_obs, rewards, terms, truncs, info = env.step(
                    _to_env_action(action, env.single_action_space)
                )
                rewards = rewards.astype(np.float32)
                cut = truncs & ~terms
                if cut.any():  # a time limit is not a terminal state: bootstrap from the final observation
                    idx = np.flatnonzero(cut)
                    final = self._tensor(np.stack([info["final_obs"][i] for i in idx]))
                    rewards[idx] += c.gamma * agent.value(final).cpu().numpy()
                self._final_obs(next_obs, terms | truncs, info)  # records finished episodes
                rollout.add(obs_t, action, log_prob, rewards, terms | truncs, value)
                obs = next_obs
                self._count_env_steps(env.num_envs)
                self._after_env_step()
            rollout.compute_gae(agent.value(self._tensor(obs)), c.gamma, c.gae_lambda)
            before = agent.num_updates
            self.pending.append(agent.update(rollout))
            self.grad_steps += agent.num_updates - before
            rollout.reset()

    # ------------------------------------------------------------------------------- step hooks
    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=self.device)

    def _final_obs(self, next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
        """``next_obs`` with the true last observation where an episode ended (SAME_STEP autoreset)."""
        if not done.any():
            return next_obs
        self.episodes += [r for r, _ in episode_returns(info)]
        real = next_obs.copy()
        for i in np.flatnonzero(done):
            real[i] = info["final_obs"][i]
        return real

    def _count_env_steps(self, n: int) -> None:
        self.env_steps += n
        self.agent.env_steps = self.env_steps
        self.bar.update(n)

    def _after_env_step(self) -> None:
        if self.env_steps >= self.next_log:
            self._log()
            self.next_log += self.s.log_every
        if self.env_steps >= self.curve[-1]["env_steps"] + self.s.eval_every:
            self._evaluate_and_checkpoint()

    def _log(self) -> None:
        """Turn the pending metric tensors into floats (one host sync per interval); stop on NaN/Inf."""
        row: dict[str, float] = {}
        if self.pending:
            keys = self.pending[-1].keys()
            means = torch.stack(
                [torch.stack([m[k].float() for m in self.pending if k in m]).mean() for k in keys]
            )
            row = dict(zip(keys, means.tolist()))
            bad = [k for k, v in row.items() if not np.isfinite(v)]
            if bad:
                self._diverged(f"{', '.join(bad)} became non-finite")
            self.pending.clear()
        if self.episodes:
            row["charts/episodic_return"] = float(np.mean(self.episodes))
            self.episodes.clear()
        row["charts/env_steps_per_s"] = self.env_steps / max(self._train_seconds(), 1e-9)
        row["charts/grad_steps"] = self.grad_steps
        self.logger.log(self.env_steps, row)

    def _diverged(self, what: str) -> None:
        last = find_checkpoint_dir(self.ckpt_dir)
        where = (
            f"the last good checkpoint ({last}) was kept" if last else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"Training diverged at env step {self.env_steps}: {what}; {where}. "
            "Try a lower learning rate, gradient clipping or reward normalisation."
        )

    def _train_seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0 - self.eval_s

    # --------------------------------------------------------------------- evaluation, checkpoints
    def _evaluate_and_checkpoint(self) -> None:
        t = time.perf_counter()
        if not self.agent.parameters_finite():
            self._diverged("a parameter became NaN/Inf")
        if self.config.normalize_obs:
            load_normalization_state(self.eval_env, normalization_state(self.env), freeze=True)
        returns = evaluate(self.agent, self.eval_env, self.s.eval_episodes, self.s.seed + EVAL_SEED_OFFSET)
        self.eval_s += time.perf_counter() - t
        point = {
            "env_steps": self.env_steps,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "wall_s": round(self._wall_s(), 3),
            "grad_steps": self.grad_steps,
        }
        self.curve.append(point)
        self.logger.log(
            self.env_steps, {"eval/return_mean": point["return_mean"], "eval/return_std": point["return_std"]}
        )
        self.bar.set_postfix(eval_return=f"{point['return_mean']:.1f}", refresh=False)
        t = time.perf_counter()
        self._save()
        self.eval_s += time.perf_counter() - t

    def _wall_s(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def _identity(self) -> dict[str, Any]:
        return {
            "algo": self.s.algo,
            "env_id": self.s.env_id,
            "seed": self.s.seed,
            "config": to_dict(self.config),
        }

    def _save(self) -> None:
        state = {
            "agent": self.agent.state_dict(),
            "env_norm": normalization_state(self.env),
            "loop": {
                "env_steps": self.env_steps,
                "grad_steps": self.grad_steps,
                "curve": self.curve,
                "wall_s": self._wall_s(),
                "eval_s": self.eval_s,
                "torch_rng": torch.get_rng_state(),
            },
        }
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        save_checkpoint_dir(self.ckpt_dir, state, self._identity() | {"gendm_version": gendm.__version__})

    def _try_resume(self) -> bool:
        path = find_checkpoint_dir(self.ckpt_dir)
        if path is None:
            return False
        state, meta = load_checkpoint(path, self.device)
        mine = self._identity()
        diff = [k for k in ("algo", "env_id", "seed") if meta.get(k) != mine[k]]
        diff += [f"config.{k}" for k, v in mine["config"].items() if meta.get("config", {}).get(k) != v]
        if diff:
            raise CheckpointError(
                f"{self.s.out_dir} holds a checkpoint of a different run (differs in: {', '.join(diff)}). "
                "Use a new --out directory, or --no-resume to overwrite it."
            )
        try:
            self.agent.load_state_dict(state["agent"])
            load_normalization_state(self.env, state["env_norm"])
            if self.buffer is not None:
                self.buffer.load_state_dict(state["buffer"])
            loop = state["loop"]
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"Checkpoint {path} does not fit this agent: {e}") from e
        self.env_steps, self.grad_steps = int(loop["env_steps"]), int(loop["grad_steps"])
        self.agent.env_steps = self.env_steps
        self.curve = list(loop["curve"])
        self.elapsed_before, self.eval_s = float(loop["wall_s"]), float(loop["eval_s"])
        self.next_log = (self.env_steps // self.s.log_every + 1) * self.s.log_every
        torch.set_rng_state(loop["torch_rng"].cpu())
        return True

    def _make_buffer(self) -> ReplayBuffer:
        c, env = self.config, self.env
        discrete = isinstance(env.single_action_space, gym.spaces.Discrete)
        return ReplayBuffer(
            min(c.buffer_size, self.s.steps),
            env.single_observation_space.shape,
            env.single_action_space.shape,
            self.device,
            action_dtype=torch.long if discrete else torch.float32,
            seed=self.s.seed,
        )

    # -------------------------------------------------------------------------------- summary
    def _summary(self, status: str, error: str | None) -> dict[str, Any]:
        last = self.curve[-1] if self.curve else None
        train_s = self._train_seconds()
        return {
            "algo": self.s.algo,
            "env_id": self.s.env_id,
            "seed": self.s.seed,
            "status": status,
            "error": error,
            "final_return": last["return_mean"] if last and status == "ok" else None,
            "final_return_std": last["return_std"] if last and status == "ok" else None,
            "env_steps": self.env_steps,
            "grad_steps": self.grad_steps,
            "wall_s": round(self._wall_s(), 3),
            "train_s": round(train_s, 3),
            "eval_s": round(self.eval_s, 3),
            "env_steps_per_s": self.env_steps / train_s if train_s > 0 else None,
            "grad_steps_per_s": self.grad_steps / train_s if train_s > 0 else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "curve": self.curve,
            "eval_protocol": {
                "eval_every": self.s.eval_every,
                "episodes": self.s.eval_episodes,
                "deterministic": True,
                "reported": "last checkpoint",
            },
            "config": to_dict(self.config),
            "settings": {
                k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self.s).items()
            },
            "versions": versions(),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
        }


def versions() -> dict[str, str]:
    import gymnasium

    return {
        "gendm": gendm.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(gendm.__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


__all__ = ["GendmError", "OnlineTrainer", "TrainSettings", "train"]

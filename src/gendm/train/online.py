"""The online training loop: one loop for off-policy and on-policy agents that learn from their own
interaction. The protocol, checkpoints, resume and divergence stops are shared with the offline loop
(``gendm.train.loop``); ``train()`` runs either, chosen by the algorithm's ``AlgoSpec.kind``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from gendm.agents import ALGOS
from gendm.agents.base import Agent, AlgoSpec
from gendm.core.config import apply_overrides
from gendm.core.device import resolve_device
from gendm.core.errors import ConfigError, GendmError
from gendm.core.seeding import seed_everything
from gendm.data import ReplayBuffer, RolloutBuffer
from gendm.envs import check_env_id, load_normalization_state, make_env, normalization_state
from gendm.train.evaluate import _to_env_action, episode_returns
from gendm.train.loop import EVAL_SEED_OFFSET, Trainer, TrainSettings, git_commit, versions


def train(settings: TrainSettings) -> dict[str, Any]:
    """Run (or resume) one training run, online or offline by the algorithm's kind; write and return
    its ``summary.json`` contents."""
    if ALGOS.get(settings.algo).kind == "offline":
        from gendm.train.offline import OfflineTrainer

        return OfflineTrainer(settings).run()
    if settings.intrinsic is not None:
        from gendm.train.intrinsic import IntrinsicTrainer

        return IntrinsicTrainer(settings).run()
    return OnlineTrainer(settings).run()


class OnlineTrainer(Trainer):
    step_unit, step_name = "env_steps", "env step"

    def __init__(self, s: TrainSettings) -> None:
        self.s = s
        if s.threads:
            torch.set_num_threads(s.threads)
        self.spec: AlgoSpec = ALGOS.get(s.algo)
        _check_online(self.spec, s)
        self.config = apply_overrides(self.spec.config_cls(), s.overrides)
        self.env_id = s.env_id
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
            fits = [n for n, sp in ALGOS.items() if sp.supports(space) and sp.kind != "offline"]
            raise ConfigError(
                f"{s.algo} needs a {' or '.join(self.spec.action_spaces)} action space, but {s.env_id} "
                f"has {space}. Algorithms for it: {', '.join(fits)}."
            )
        self.eval_env = make_env(s.env_id, 1, seed=s.seed + EVAL_SEED_OFFSET, normalize_obs=c.normalize_obs)
        self.agent: Agent = self.spec.agent_cls(
            c, self.env.single_observation_space, space, self.device, total_steps=s.steps
        )
        self.buffer = self._make_buffer() if self.spec.kind == "off_policy" else None
        self._init_loop()

    def _loop(self) -> None:
        (self._off_policy if self.spec.kind == "off_policy" else self._on_policy)()

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
        self._after_step()

    # --------------------------------------------------------------------- evaluation, checkpoints
    def _before_evaluation(self) -> None:
        if self.config.normalize_obs:
            load_normalization_state(self.eval_env, normalization_state(self.env), freeze=True)

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"env_norm": normalization_state(self.env)}
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        load_normalization_state(self.env, state["env_norm"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])

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


def _check_online(spec: AlgoSpec, s: TrainSettings) -> None:
    if s.dataset is not None:
        offline = [n for n, sp in ALGOS.items() if sp.kind == "offline"]
        raise ConfigError(
            f"{s.algo} is an online ({spec.kind}) algorithm: it learns from its own interaction, not from "
            f"a dataset, so it cannot use dataset {s.dataset!r}. Drop --dataset, or pick an offline "
            f"algorithm: {', '.join(offline)}."
        )
    if not s.env_id:
        raise ConfigError(f"{s.algo} learns by interacting with an environment: pass --env ENV_ID.")


__all__ = ["GendmError", "OnlineTrainer", "TrainSettings", "git_commit", "train", "versions"]

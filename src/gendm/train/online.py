"""The online training loop of the ``off_policy`` and ``on_policy`` families: agents that learn from
their own interaction. The protocol, checkpoints, resume and divergence stops are the run skeleton's
(``gendm.train.trainer``); ``gendm.train.train`` picks this trainer by the method's family.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from gendm.agents.base import Agent
from gendm.core.device import resolve_device
from gendm.core.errors import ConfigError
from gendm.core.methods import Method, TaskInfo, accepting
from gendm.core.seeding import seed_everything
from gendm.data import ReplayBuffer, RolloutBuffer
from gendm.envs import check_env_id, load_normalization_state, make_env, normalization_state
from gendm.train import env_state
from gendm.train.evaluate import _to_env_action, episode_returns, evaluation_point
from gendm.train.trainer import EVAL_SEED_OFFSET, Trainer, TrainSettings


class OnlineTrainer(Trainer):
    step_unit, step_name = "env_steps", "env step"

    def __init__(self, s: TrainSettings) -> None:
        self._begin(s)
        _check_online(self.method, s)
        self.config = self.method.make_config(s.overrides)
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
        if not self.method.supports(space):
            task = TaskInfo("env", s.env_id, lambda: (self.env.single_observation_space, space))
            raise ConfigError(
                f"{s.algo} needs a {' or '.join(self.method.action_spaces)} action space, but {s.env_id} "
                f"has {space}. Algorithms for it: {', '.join(accepting(task))}."
            )
        self.eval_env = make_env(s.env_id, 1, seed=s.seed + EVAL_SEED_OFFSET, normalize_obs=c.normalize_obs)
        self.agent: Agent = self.method.builder(
            c, self.env.single_observation_space, space, self.device, total_steps=s.steps
        )
        self.off_policy = self.method.family == "off_policy"
        self.buffer = self._make_buffer() if self.off_policy else None
        self.rollout = None if self.off_policy else self._make_rollout()
        self.obs: np.ndarray | None = None
        """The training env's current observations (set by the loops; restored by an exact resume)."""
        self._init_loop()

    def _loop(self) -> None:
        (self._off_policy if self.off_policy else self._on_policy)()

    def _off_policy(self) -> None:
        c, env, agent, buffer = self.config, self.env, self.agent, self.buffer
        assert buffer is not None
        obs = self._first_obs()
        iteration = self.env_steps // env.num_envs
        while self.env_steps < self.s.steps:
            if self.env_steps < c.learning_starts:
                actions = env.action_space.sample()
            else:
                actions = _to_env_action(agent.act(self._tensor(obs)), env.single_action_space)
            next_obs, rewards, terms, truncs, info = env.step(actions)
            real_next_obs = self._final_obs(next_obs, terms | truncs, info)
            buffer.add(obs, actions, rewards, real_next_obs, terms, truncs)
            self.obs = obs = next_obs
            self._count_env_steps(env.num_envs)
            iteration += 1
            if self.env_steps >= c.learning_starts and iteration % c.train_freq == 0:
                for _ in range(c.gradient_steps):
                    self.pending.append(agent.update(buffer.sample(c.batch_size)))
                    self.grad_steps += 1
            self._after_env_step()

    def _on_policy(self) -> None:
        c, env, agent, rollout = self.config, self.env, self.agent, self.rollout
        assert rollout is not None
        obs = self._first_obs()
        while self.env_steps < self.s.steps:
            for _ in range(c.num_steps - rollout.step):  # a resumed rollout continues where it was
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
                self.obs = obs = next_obs
                self._count_env_steps(env.num_envs)
                if self.env_steps < self.s.steps:  # the last evaluation comes after the last update
                    self._after_env_step()
            rollout.compute_gae(agent.value(self._tensor(obs)), c.gamma, c.gae_lambda)
            before = agent.num_updates
            self.pending.append(agent.update(rollout))
            self.grad_steps += agent.num_updates - before
            rollout.reset()

    def _first_obs(self) -> np.ndarray:
        """Where the loop starts: the restored observations of an exact resume, else a reset (seeded by
        the step count, so a resumed run of an env whose state is not captured differs from an
        uninterrupted one)."""
        if self.obs is not None:
            return self.obs
        if self.env_steps > 0:
            warnings.warn(
                f"{self.env_id}: the training env's state is not checkpointed for this kind of env "
                f"(exact: {env_state.SUPPORTED}), so the resumed run reseeds it and will not equal an "
                "uninterrupted run.",
                stacklevel=2,
            )
        obs, _ = self.env.reset(seed=self.s.seed + self.env_steps)
        return obs

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
    def _measure(self) -> dict[str, Any]:
        if self.config.normalize_obs:
            load_normalization_state(self.eval_env, normalization_state(self.env), freeze=True)
        s = self.s
        return evaluation_point(
            self.agent, self.eval_env, s.eval_episodes, s.seed + EVAL_SEED_OFFSET, s.eval_deterministic
        )

    def _extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"env_norm": normalization_state(self.env)}
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        exact = env_state.capture(self.env) if self.obs is not None else None
        if exact is not None:  # mid-run: the env, its observations and a rollout in progress
            state["env_exact"] = {"env": exact, "obs": self.obs, "episodes": list(self.episodes)}
            if self.rollout is not None:
                r = self.rollout
                state["env_exact"]["rollout"] = {k: getattr(r, k) for k in _ROLLOUT_FIELDS} | {"step": r.step}
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        load_normalization_state(self.env, state["env_norm"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])
        exact = state.get("env_exact")
        if exact is not None and env_state.capture(self.env) is not None:
            env_state.restore(self.env, exact["env"])
            self.obs = np.asarray(exact["obs"])
            self.episodes = [float(r) for r in exact["episodes"]]
            if self.rollout is not None:
                saved = exact["rollout"]
                for k in _ROLLOUT_FIELDS:
                    getattr(self.rollout, k).copy_(saved[k])
                self.rollout.step = int(saved["step"])

    def _make_rollout(self) -> RolloutBuffer:
        c, env = self.config, self.env
        return RolloutBuffer(
            c.num_steps,
            env.num_envs,
            env.single_observation_space.shape,
            env.single_action_space.shape,
            self.device,
            torch.long if isinstance(env.single_action_space, gym.spaces.Discrete) else torch.float32,
        )

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


_ROLLOUT_FIELDS = ("obs", "actions", "log_probs", "rewards", "ended", "values")
"""What a rollout in progress holds (advantages and returns are computed when it is full)."""


def _check_online(method: Method, s: TrainSettings) -> None:
    if s.dataset is not None:
        offline = accepting(TaskInfo("dataset", s.dataset))
        raise ConfigError(
            f"{s.algo} is an online ({method.family}) algorithm: it learns from its own interaction, not "
            f"from a dataset, so it cannot use dataset {s.dataset!r}. Drop --dataset, or pick an offline "
            f"algorithm: {', '.join(offline)}."
        )
    if s.text_task is not None:
        raise ConfigError(
            f"{s.algo} learns by interacting with an environment, not on text task {s.text_task!r}: "
            f"methods for it: {', '.join(accepting(TaskInfo('text_task', s.text_task)))}."
        )
    if not s.env_id:
        raise ConfigError(f"{s.algo} learns by interacting with an environment: pass --env ENV_ID.")


__all__ = ["OnlineTrainer"]

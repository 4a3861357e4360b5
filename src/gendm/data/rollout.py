"""On-policy rollout storage with generalised advantage estimation (Schulman et al., 2016)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class RolloutBuffer:
    """``num_steps x num_envs`` preallocated tensors for one on-policy rollout.

    Transition t of env e ends its episode when ``ended[t, e]`` is 1. Time-limit truncations are
    bootstrapped by the caller (r += gamma * V(final_obs)), so here an ended episode never bootstraps.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: str | torch.device = "cpu",
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        shape = (num_steps, num_envs)
        kw = {"device": self.device}
        self.obs = torch.zeros((*shape, *obs_shape), **kw)
        self.actions = torch.zeros((*shape, *action_shape), dtype=action_dtype, **kw)
        self.log_probs = torch.zeros(shape, **kw)
        self.rewards = torch.zeros(shape, **kw)
        self.ended = torch.zeros(shape, **kw)
        self.values = torch.zeros(shape, **kw)
        self.advantages = torch.zeros(shape, **kw)
        self.returns = torch.zeros(shape, **kw)
        self.step = 0

    def add(self, obs, actions, log_probs, rewards, ended, values) -> None:
        t = self.step
        self.obs[t] = torch.as_tensor(obs, device=self.device, dtype=self.obs.dtype)
        self.actions[t] = torch.as_tensor(actions, device=self.device, dtype=self.actions.dtype).reshape(
            self.actions.shape[1:]
        )
        self.log_probs[t] = log_probs
        self.rewards[t] = torch.as_tensor(rewards, device=self.device, dtype=torch.float32)
        self.ended[t] = torch.as_tensor(ended, device=self.device, dtype=torch.float32)
        self.values[t] = values
        self.step += 1

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def compute_gae(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """Fill ``advantages`` and ``returns`` (= advantages + values) by the backward GAE recursion."""
        last_gae = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(self.num_steps)):
            next_values = last_values if t == self.num_steps - 1 else self.values[t + 1]
            not_ended = 1.0 - self.ended[t]
            delta = self.rewards[t] + gamma * next_values * not_ended - self.values[t]
            last_gae = delta + gamma * gae_lambda * not_ended * last_gae
            self.advantages[t] = last_gae
        self.returns = self.advantages + self.values

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[dict]:
        """Shuffled minibatches over the flattened rollout (the last one may be smaller)."""
        n = self.num_steps * self.num_envs
        flat = {
            "obs": self.obs.reshape(n, *self.obs.shape[2:]),
            "actions": self.actions.reshape(n, *self.actions.shape[2:]),
            "log_probs": self.log_probs.reshape(n),
            "advantages": self.advantages.reshape(n),
            "returns": self.returns.reshape(n),
            "values": self.values.reshape(n),
        }
        perm = torch.randperm(n, device=self.device, generator=generator)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            yield {k: v[idx] for k, v in flat.items()}

    def reset(self) -> None:
        self.step = 0

"""Deep Q-Network (Mnih et al., 2015) with a hard-updated target network and epsilon-greedy
exploration annealed linearly. Defaults follow CleanRL's ``dqn.py`` (classic control)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from gendm.agents.base import Agent, OffPolicyConfig, agent_method
from gendm.core.config import check, field
from gendm.core.methods import register_method
from gendm.data.replay import Batch
from gendm.nn import mlp


@dataclass
class DQNConfig(OffPolicyConfig):
    learning_rate: float = field(2.5e-4, gt=0)
    """Adam learning rate (CleanRL: 2.5e-4)."""
    buffer_size: int = 10_000
    """Replay buffer capacity (CleanRL: 10k)."""
    batch_size: int = 128
    """Transitions per gradient step (CleanRL: 128)."""
    learning_starts: int = 10_000
    """Env steps before learning starts (CleanRL: 10k)."""
    train_freq: int = 10
    """Env steps between gradient steps (CleanRL: 10)."""
    hidden: tuple[int, ...] = (120, 84)
    """Hidden layer widths (CleanRL: 120, 84)."""
    target_network_frequency: int = field(500, ge=1)
    """Env steps between hard target updates (CleanRL: 500)."""
    tau: float = 1.0
    """Target update coefficient; 1.0 copies the network (CleanRL: 1.0)."""
    start_epsilon: float = field(1.0, ge=0, le=1)
    """Initial exploration probability (1.0)."""
    end_epsilon: float = field(0.05, ge=0, le=1)
    """Final exploration probability (0.05)."""
    exploration_fraction: float = field(0.5, gt=0, le=1)
    """Fraction of the run's env steps over which epsilon is annealed (CleanRL: 0.5)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.end_epsilon <= self.start_epsilon, "end_epsilon", "must be <= start_epsilon.")


class DQN(Agent):
    def __init__(
        self,
        config: DQNConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        obs_dim, self.num_actions = int(observation_space.shape[0]), int(action_space.n)
        self.q = mlp(obs_dim, self.num_actions, config.hidden).to(device)
        self.q_target = mlp(obs_dim, self.num_actions, config.hidden).to(device)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        self.opt = self.adam(self.q.parameters(), lr=config.learning_rate)
        self.parts = {"q": self.q, "q_target": self.q_target, "opt": self.opt}
        self._target_every = max(1, config.target_network_frequency // config.train_freq)
        self._loss = self.maybe_compile(self._loss)

    def epsilon(self) -> float:
        c = self.config
        horizon = c.exploration_fraction * (self.total_steps or 1_000_000)
        frac = min(1.0, self.env_steps / horizon)
        return c.start_epsilon + frac * (c.end_epsilon - c.start_epsilon)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        greedy = self.q(obs).argmax(-1)
        if deterministic:
            return greedy
        n = obs.shape[0]
        explore = torch.rand(n, device=self.device) < self.epsilon()
        random_actions = torch.randint(0, self.num_actions, (n,), device=self.device)
        return torch.where(explore, random_actions, greedy)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.autocast():
            with torch.no_grad():
                next_q = self.q_target(batch.next_obs).max(-1).values
                target = batch.rewards + (1 - batch.terminations) * self.config.gamma * next_q
            q = self.q(batch.obs).gather(1, batch.actions.long().unsqueeze(1)).squeeze(1)
            loss = (q - target).pow(2).mean()
        return loss, {"losses/td": loss.detach(), "losses/q_mean": q.detach().mean()}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss, metrics = self._loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.num_updates += 1
        if self.num_updates % self._target_every == 0:
            torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), self.config.tau)
        metrics["charts/epsilon"] = torch.tensor(self.epsilon())
        return metrics


register_method(
    agent_method("dqn", "off_policy", DQNConfig, DQN, ("discrete",), "Deep Q-Network, epsilon-greedy")
)

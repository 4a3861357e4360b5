"""An example online (off-policy) method in one file: linear Q-learning with epsilon-greedy actions.

Q(s, .) = W s + b, trained on replay batches by one-step TD with a Polyak target. Small enough to
learn something on CartPole in a few hundred steps; not part of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gendm.agents.base import Agent, OffPolicyConfig, agent_method
from gendm.core.config import field
from gendm.core.methods import register_method


@dataclass
class LinearQConfig(OffPolicyConfig):
    learning_rate: float = field(1e-2, gt=0)
    """Adam learning rate."""
    epsilon: float = field(0.1, ge=0, le=1)
    """Probability of a uniformly random action while training."""
    tau: float = field(0.05, gt=0, le=1)
    """Polyak coefficient of the target network."""
    learning_starts: int = 64
    """Env steps of random actions first."""
    batch_size: int = 32
    """Transitions per gradient step."""


class LinearQ(Agent):
    def __init__(self, config, observation_space, action_space, device, total_steps=None) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        self.q = torch.nn.Linear(observation_space.shape[0], action_space.n).to(self.device)
        self.q_target = torch.nn.Linear(observation_space.shape[0], action_space.n).to(self.device)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=config.learning_rate)
        self.parts = {"q": self.q, "q_target": self.q_target, "opt": self.opt}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        greedy = self.q(obs).argmax(-1)
        if deterministic:
            return greedy
        explore = torch.rand(obs.shape[0], device=self.device) < self.config.epsilon
        return torch.where(explore, torch.randint_like(greedy, self.action_space.n), greedy)

    def update(self, batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target = batch.rewards + (1 - batch.terminations) * self.config.gamma * (
                self.q_target(batch.next_obs).max(-1).values
            )
        q = self.q(batch.obs).gather(1, batch.actions.long().unsqueeze(1)).squeeze(1)
        loss = (q - target).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), self.config.tau)
        self.num_updates += 1
        return {"losses/td": loss.detach()}


register_method(agent_method("linear_q", "off_policy", LinearQConfig, LinearQ, ("discrete",), "example"))

"""An example offline method in one file: deterministic linear behaviour cloning.

pi(s) = tanh(W s + b) scaled to the Box bounds, fitted to the dataset's actions by mean squared
error; not part of the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gendm.agents.base import OfflineAgent, OfflineConfig, agent_method
from gendm.core.config import field
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler


@dataclass
class LinearBCConfig(OfflineConfig):
    learning_rate: float = field(1e-2, gt=0)
    """Adam learning rate."""
    batch_size: int = 64
    """Transitions per gradient step."""


class LinearBC(OfflineAgent):
    def __init__(self, config, observation_space, action_space, device, total_steps=None) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        self.pi = torch.nn.Linear(observation_space.shape[0], action_space.shape[0]).to(self.device)
        self.scaler = ActionScaler.from_space(action_space).to(self.device)
        self.opt = torch.optim.Adam(self.pi.parameters(), lr=config.learning_rate)
        self.parts |= {"pi": self.pi, "opt": self.opt}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.scaler.unscale(torch.tanh(self.pi(self.obs_norm(obs))))

    def update(self, batch) -> dict[str, torch.Tensor]:
        action = self.scaler.unscale(torch.tanh(self.pi(self.obs_norm(batch.obs))))
        loss = (action - batch.actions).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.num_updates += 1
        return {"losses/mse": loss.detach()}


register_method(agent_method("linear_bc", "offline", LinearBCConfig, LinearBC, ("box",), "example: BC"))

"""V-GPS (Nakamoto, Mees, Kumar & Levine, 2024, "Steering Your Generalists: Improving Robotic Foundation
Models via Value Guidance").

Value-Guided Policy Steering leaves a trained policy untouched — its weights are never updated, not
even read for gradients — and re-ranks its actions at deployment time by a Q-function learned with
offline RL: for each observation, draw K actions from the policy, score them by Q(s, a), execute the
best (or one drawn ∝ exp(Q / temperature)). Here that is one call of ``steer`` with the callable
proposal ``propose(obs_rep, n) = policy.act(obs_rep, deterministic=False)``.

- ``policy``: the ``--out`` directory (or checkpoint directory) of any gendm run whose agent acts one
  step at a time — bc, iql, td3bc, idql, sac, ... — rebuilt from its checkpoint the way
  ``gendm data collect --policy`` does (``gendm.agents.loading.checkpoint_agent``, observation
  normaliser included). A policy whose ``act`` is deterministic (TD3+BC) proposes K equal actions and
  gains nothing.
- the critic: IQL's (expectile V, twin Q; ``gendm.agents.critics.IQLCritic``) trained on the dataset
  by this agent's ``update`` (the paper trains Cal-QL or IQL critics; IQL here), or, with ``critic``,
  the target twins of a finished ``iql`` run: then ``update`` does nothing and the run only evaluates
  (``--steps 1``).

A V-GPS checkpoint holds the critic (when trained here), not the base policy: the policy is reloaded
from ``policy`` (which is part of the config, so of the run's identity) when the run is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from gendm.agents.base import Agent, OfflineAgent, OfflineConfig, agent_method
from gendm.agents.critics import IQLCritic, IQLCriticConfig, ReturnScaled
from gendm.agents.loading import OBS_NORM_EPS, checkpoint_agent
from gendm.core.config import field
from gendm.core.errors import ConfigError
from gendm.core.methods import register_method
from gendm.data.normalize import ActionScaler
from gendm.data.replay import Batch
from gendm.steering import steer


@dataclass
class VGPSConfig(IQLCriticConfig, OfflineConfig):
    """V-GPS's fields; the ``IQLCriticConfig`` fields configure the critic trained here (critic=None)."""

    policy: str = ""
    """Run or checkpoint directory of the trained policy to steer (required: policy=RUN_DIR); its weights
    stay as they are."""
    critic: str | None = None
    """Run or checkpoint directory of a finished iql run whose critic scores the actions; None trains an
    IQL critic on the dataset in update."""
    num_candidates: int = field(10, ge=1)
    """K, actions drawn from the policy per observation (the paper samples 10-50)."""
    selector: str = field("argmax", choices=("argmax", "softmax"))
    """argmax (the greedy limit of the paper's softmax over Q) or softmax (sample ∝ exp(Q / temperature))."""
    temperature: float = field(1.0, gt=0)
    """Temperature of the softmax selector."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the Q twins and V trained here (IQL, d3rlpy: 256, 256)."""


def load_policy(path: str, observation_space: gym.Space, action_space: gym.Space, device: torch.device):
    """The agent saved at ``path`` and a function from raw observations to what it expects."""
    agent, obs_stats, info = checkpoint_agent(path, str(device))
    if (agent.observation_space.shape, agent.action_space.shape) != (
        observation_space.shape,
        action_space.shape,
    ):
        raise ConfigError(
            f"{path} holds a {info['algo']} agent for {info['env_id']} (observations "
            f"{agent.observation_space.shape}, actions {agent.action_space.shape}); this run's env has "
            f"observations {observation_space.shape} and actions {action_space.shape}."
        )
    if type(agent).reset_episodes is not Agent.reset_episodes:
        raise ConfigError(
            f"{path} holds a {info['algo']} agent with per-episode state (observation history or queued "
            "action chunks); V-GPS re-ranks single-step proposals and cannot steer it."
        )
    for module in agent.modules():
        module.requires_grad_(False)
    if obs_stats is None:
        return agent, (lambda obs: obs), info
    mean, var = (torch.as_tensor(x, dtype=torch.float32, device=device) for x in obs_stats)
    std = torch.sqrt(var + OBS_NORM_EPS)
    return agent, (lambda obs: (obs - mean) / std), info


class VGPS(ReturnScaled, OfflineAgent):
    def __init__(
        self,
        config: VGPSConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        c = config
        obs_dim, act_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        self.action_scaler = ActionScaler.from_space(action_space).to(self.device)
        if not c.policy:
            raise ConfigError(
                "Field 'policy': V-GPS steers a trained policy: set policy=RUN_DIR (the --out directory of "
                "`gendm train`, e.g. --set policy=runs/bc)."
            )
        self.policy, self._policy_obs, self.policy_info = load_policy(
            c.policy, observation_space, action_space, self.device
        )
        if c.critic is not None:  # a finished iql run: its q_value scores raw observations and actions
            self.critic_agent, _, info = load_policy(c.critic, observation_space, action_space, self.device)
            if not hasattr(self.critic_agent, "q_value"):
                raise ConfigError(
                    f"critic={c.critic!r} holds a {info['algo']} run; V-GPS needs an iql run's Q."
                )
            self.critic = None
            self._frozen = torch.ones((), device=self.device)
        else:
            self.critic_agent = None
            self.critic = IQLCritic(obs_dim, act_dim, c.hidden, c.num_critics).to(device)
            self.opt = self.adam(self.critic.trainable(), lr=c.critic_learning_rate)
            self.parts |= {"critic": self.critic, "opt": self.opt}
            self._losses = self.maybe_compile(self._losses)

    # ------------------------------------------------------------------------------------ acting
    def propose(self, obs: torch.Tensor, n: int) -> torch.Tensor:
        """The base policy's stochastic actions for raw observations (env units)."""
        return self.policy.act(self._policy_obs(obs), deterministic=False)

    @torch.no_grad()
    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The score of env-unit actions at raw observations: min_i Q'_i(s, a), ``(batch,)``."""
        if self.critic_agent is not None:
            return self.critic_agent.q_value(obs, actions)
        return self.critic.q_target(self.obs_norm(obs), self.action_scaler.scale(actions, clip=True))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """K proposals per observation re-ranked by Q (``selector`` applies whatever ``deterministic``)."""
        c = self.config
        result = steer(
            self.propose,
            lambda actions, obs_rep: self.q_value(obs_rep, actions),
            num_candidates=c.num_candidates,
            cond=obs,
            selector=c.selector,
            temperature=c.temperature,
        )
        return result.samples

    # ------------------------------------------------------------------------------------ update
    def _losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        with self.autocast():
            obs, next_obs = self.obs_norm(batch.obs), self.obs_norm(batch.next_obs)
            actions = self.action_scaler.scale(batch.actions, clip=True)
            loss, metrics, _ = self.critic.losses(
                obs,
                actions,
                batch.rewards * self.reward_scale,
                next_obs,
                batch.terminations,
                c.gamma,
                c.expectile,
            )
        return loss, metrics

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.critic is None:  # the critic came trained: nothing to learn
            self.num_updates += 1
            return {"charts/critic_frozen": self._frozen}
        loss, metrics = self._losses(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.critic.update_target(self.config.tau)
        self.num_updates += 1
        return metrics


register_method(
    agent_method(
        "vgps",
        "offline",
        VGPSConfig,
        VGPS,
        ("box",),
        "V-GPS: any trained policy's actions re-ranked by an offline (IQL) Q-function",
    )
)

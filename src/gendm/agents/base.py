"""The agent contract, shared config fields, and the registry entry of an agent (``agent_method``).

An agent is built from ``(config, observation_space, action_space, device, total_steps)`` and offers
``act(obs, deterministic)``, ``update(batch) -> dict[str, Tensor]``, ``state_dict()`` and
``load_state_dict()``, plus the optional hook ``reset_episodes(mask)`` for agents with per-episode
state. Offline agents (``OfflineAgent``) add ``prepare(dataset)`` and ``make_sampler(...)``.
``update`` returns detached 0-d tensors, not floats, so the hot loop never waits on a host sync; the
training loop turns them into floats once per logging interval.
Training loops, evaluation and checkpoints live in ``gendm.train``, not here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from gendm.core.config import Config, check, field
from gendm.core.methods import Method, TaskInfo, space_kind
from gendm.core.precision import PRECISIONS, resolve_precision
from gendm.nn import Normalizer
from gendm.nn.optim import FusedAdam

if TYPE_CHECKING:
    from gendm.data.dataset import OfflineDataset


LR_SCHEDULES = ("cosine", "constant")
"""Learning-rate schedules of the offline agents' ``*lr_schedule`` fields (``OfflineAgent.cosine_lr``)."""


@dataclass
class AgentConfig(Config):
    """Fields every agent's config has, online and offline."""

    gamma: float = field(0.99, ge=0, le=1)
    """Discount factor."""
    normalize_obs: bool = False
    """Standardise observations: online with running statistics, offline with the dataset's mean and
    std (fitted once); saved in checkpoints."""
    compile: bool = False
    """Wrap the update step in torch.compile (a cold compile costs ~25 s on CPU)."""
    precision: str = field("fp32", choices=PRECISIONS)
    """Update matmul precision: fp32; bf16 (hidden layers in bfloat16 via autocast, or
    ``gendm.nn.fused`` for SAC; output heads, losses and Adam stay fp32; faster only where the device
    computes bf16 natively, see BENCHMARKS.md); or auto (bf16 where native, else fp32)."""


@dataclass
class BaseConfig(AgentConfig):
    """Fields shared by agents that learn online."""

    num_envs: int = field(1, ge=1)
    """Parallel training environments (a synchronous vector env)."""
    normalize_reward: bool = False
    """Scale rewards by a running estimate of the discounted return's std."""


@dataclass
class OffPolicyConfig(BaseConfig):
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    batch_size: int = field(256, ge=1)
    """Transitions per gradient step."""
    learning_starts: int = field(5_000, ge=0)
    """Env steps of uniformly random actions before learning starts."""
    train_freq: int = field(1, ge=1)
    """Env steps (per env) between gradient phases."""
    gradient_steps: int = field(1, ge=1)
    """Gradient steps per gradient phase."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.buffer_size >= self.batch_size, "buffer_size", "must be >= batch_size.")


@dataclass
class OfflineConfig(AgentConfig):
    """Fields shared by agents that learn from a fixed dataset (the ``offline`` family)."""

    batch_size: int = field(256, ge=1)
    """Transitions (or sequences) per gradient step."""


class Agent:
    """Base class: subclasses list their stateful parts (modules, optimisers) in ``self.parts``."""

    config: Any

    def __init__(
        self,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        self.config, self.device, self.total_steps = config, torch.device(device), total_steps
        self.observation_space, self.action_space = observation_space, action_space
        self.parts: dict[str, Any] = {}
        self.num_updates = 0
        self.env_steps = 0  # kept current by the training loop (epsilon and learning-rate schedules)
        # the precision updates run in: config.precision with "auto" resolved for this device
        self.precision = resolve_precision(getattr(config, "precision", "fp32"), self.device)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def update(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def reset_episodes(self, mask: np.ndarray) -> None:
        """Episodes start in the sub-envs where ``mask`` (bool, one per sub-env) is True: after a reset
        (all True) and where an episode just ended (SAME_STEP autoreset). Agents with per-episode
        state (observation history, queued action chunks) clear it here; the default does nothing."""

    def modules(self) -> list[torch.nn.Module]:
        return [p for p in self.parts.values() if isinstance(p, torch.nn.Module)]

    def parameters_finite(self) -> bool:
        """One host sync: True when no parameter holds NaN/Inf."""
        flags = [torch.isfinite(p).all() for m in self.modules() for p in m.parameters()]
        return bool(torch.stack(flags).all()) if flags else True

    def state_dict(self) -> dict[str, Any]:
        counters = {"num_updates": self.num_updates, "env_steps": self.env_steps}
        return {name: part.state_dict() for name, part in self.parts.items()} | counters

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.num_updates, self.env_steps = int(state["num_updates"]), int(state["env_steps"])

    def autocast(self) -> torch.autocast:
        """Context for the forward part of an update: bf16 autocast when ``self.precision`` is bf16."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def adam(self, params, lr: float, **kwargs) -> torch.optim.Adam:
        """Adam with the fused kernel where torch has one (CPU and CUDA): ~30% faster steps here,
        called directly after the first step (``gendm.nn.optim.FusedAdam``)."""
        if self.device.type in ("cpu", "cuda"):
            return FusedAdam(params, lr=lr, **kwargs)
        return torch.optim.Adam(params, lr=lr, **kwargs)

    def maybe_compile(self, fn):
        return torch.compile(fn) if self.config.compile else fn


class OfflineAgent(Agent):
    """Base of agents that learn from a dataset. The offline loop calls ``prepare(dataset)`` once
    before training (and before loading a checkpoint on resume), then draws every batch from
    ``make_sampler(dataset, device, seed).sample(batch_size)``.

    ``self.obs_norm`` standardises observations when ``config.normalize_obs``, else it is the
    identity; subclasses apply it in ``act`` and ``update`` and add their parts to ``self.parts``.
    """

    def __init__(
        self,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        super().__init__(config, observation_space, action_space, device, total_steps)
        self.obs_norm = Normalizer(tuple(observation_space.shape)).to(self.device)
        self.parts = {"obs_norm": self.obs_norm}

    def prepare(self, dataset: OfflineDataset) -> None:
        """Fit dataset statistics (normalisers, scales); kept in ``parts`` so checkpoints carry them."""
        if self.config.normalize_obs:
            self.obs_norm.fit(dataset.observations)

    def cosine_lr(self, base_lr: float, warmup: int = 0) -> float:
        """``base_lr * (1 + cos(pi * progress)) / 2``, progress going from 0 after ``warmup`` updates to
        1 at the run's ``total_steps`` (1M when unknown): the actor schedule of IQL's paper and
        d3rlpy's reproductions (IQL, IDQL, Diffusion-QL) and Diffusion Policy's after its warm-up.
        Call it once ``num_updates >= warmup``."""
        horizon = max((self.total_steps or 1_000_000) - warmup, 1)
        step = self.num_updates - warmup
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(step, horizon) / horizon))

    def make_sampler(self, dataset: OfflineDataset, device: torch.device, seed: int) -> Any:
        """An object whose ``sample(batch_size)`` returns a batch for ``update``: by default uniform
        transitions (``gendm.data.replay.Batch``) from the dataset held on ``device``. Sequence
        models return a sequence sampler here. A ``state_dict``/``load_state_dict`` pair, if present,
        is checkpointed (exact resume of the sampling stream)."""
        from gendm.data.samplers import TransitionSampler

        return TransitionSampler(dataset, device, seed)


def agent_method(
    name: str, family: str, config_cls: type, agent_cls: type, action_spaces: tuple[str, ...], summary: str
) -> Method:
    """The registry entry of an agent (``family`` off_policy, on_policy or offline): ``builder`` is the
    agent class, ``accepts`` the family's rule (online families act in environments, the offline one
    learns from datasets; both need vector observations and an action space in ``action_spaces``).
    An agent file ends with ``register_method(agent_method(...))``."""
    online = family in ONLINE_FAMILIES
    return Method(
        name,
        family,
        config_cls,
        agent_cls,
        summary,
        accepts=functools.partial(_agent_accepts, online, action_spaces),
        action_spaces=action_spaces,
        intrinsic=online,
    )


ONLINE_FAMILIES = ("off_policy", "on_policy")
"""Agent families that learn from their own interaction with an environment."""


def _agent_accepts(online: bool, action_spaces: tuple[str, ...], task: TaskInfo) -> str | None:
    if task.kind == "text_task":
        how = "by acting in a Gymnasium environment" if online else "from a dataset"
        return f"cannot learn text task {task.id}: it learns {how}"
    if online and task.kind == "dataset":
        return f"is an online algorithm, and {task.id} is a dataset"
    if not online and task.kind != "dataset":
        return f"learns from a dataset, and {task.id} is an environment"
    from gendm.envs.text_registry import is_game_file

    if is_game_file(task.id):
        return f"cannot play TextWorld game file {task.id}: language agents only"
    space = task.action_space
    if space is not None and space_kind(space) not in action_spaces:
        return f"cannot act in {task.id} ({type(space).__name__} actions)"
    observations = task.observation_space
    if observations is not None and not isinstance(observations, gym.spaces.Box):
        return f"needs vector observations, and {task.id} has {type(observations).__name__} ones"
    return None

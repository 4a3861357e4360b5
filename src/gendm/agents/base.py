"""The agent contract, shared config fields, and the algorithm registry.

An agent is built from ``(config, observation_space, action_space, device, total_steps)`` and offers
``act(obs, deterministic)``, ``update(batch) -> dict[str, Tensor]``, ``state_dict()`` and
``load_state_dict()``, plus the optional hook ``reset_episodes(mask)`` for agents with per-episode
state. Offline agents (``OfflineAgent``) add ``prepare(dataset)`` and ``make_sampler(...)``.
``update`` returns detached 0-d tensors, not floats, so the hot loop never waits on a host sync; the
training loop turns them into floats once per logging interval.
Training loops, evaluation and checkpoints live in ``gendm.train``, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import gymnasium as gym
import numpy as np
import torch

from gendm.core.config import check
from gendm.core.errors import ConfigError
from gendm.core.precision import PRECISIONS, resolve_precision
from gendm.core.registry import Registry
from gendm.nn import Normalizer
from gendm.nn.optim import FusedAdam

if TYPE_CHECKING:
    from gendm.data.dataset import OfflineDataset


@dataclass
class BaseConfig:
    gamma: float = 0.99
    """Discount factor."""
    num_envs: int = 1
    """Parallel training environments (a synchronous vector env)."""
    normalize_obs: bool = False
    """Normalise observations with running statistics (saved in checkpoints)."""
    normalize_reward: bool = False
    """Scale rewards by a running estimate of the discounted return's std."""
    compile: bool = False
    """Wrap the update step in torch.compile (a cold compile costs ~25 s on CPU)."""
    precision: str = "fp32"
    """Update matmul precision: fp32; bf16 (hidden layers in bfloat16 via autocast, or
    ``gendm.nn.fused`` for SAC; output heads, losses and Adam stay fp32; faster only where the device
    computes bf16 natively, see BENCHMARKS.md); or auto (bf16 where native, else fp32)."""

    def __post_init__(self) -> None:
        check(0.0 <= self.gamma <= 1.0, "gamma", f"must be in [0, 1], got {self.gamma}.")
        check(self.num_envs >= 1, "num_envs", f"must be >= 1, got {self.num_envs}.")
        check(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.",
        )


@dataclass
class OffPolicyConfig(BaseConfig):
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    batch_size: int = 256
    """Transitions per gradient step."""
    learning_starts: int = 5_000
    """Env steps of uniformly random actions before learning starts."""
    train_freq: int = 1
    """Env steps (per env) between gradient phases."""
    gradient_steps: int = 1
    """Gradient steps per gradient phase."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.buffer_size >= self.batch_size, "buffer_size", "must be >= batch_size.")
        check(self.batch_size >= 1, "batch_size", "must be >= 1.")
        check(self.learning_starts >= 0, "learning_starts", "must be >= 0.")
        check(self.train_freq >= 1, "train_freq", "must be >= 1.")
        check(self.gradient_steps >= 1, "gradient_steps", "must be >= 1.")


@dataclass
class OfflineConfig:
    """Fields shared by agents that learn from a fixed dataset (``AlgoSpec.kind == "offline"``)."""

    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 256
    """Transitions (or sequences) per gradient step."""
    normalize_obs: bool = False
    """Standardise observations with the dataset's mean and std (fitted once, saved with the agent)."""
    compile: bool = False
    """Wrap the update step in torch.compile (a cold compile costs ~25 s on CPU)."""
    precision: str = "fp32"
    """Update matmul precision: fp32, bf16 (autocast hidden layers to bfloat16; output heads, losses
    and Adam stay fp32) or auto (bf16 where the device computes it natively, else fp32)."""

    def __post_init__(self) -> None:
        check(0.0 <= self.gamma <= 1.0, "gamma", f"must be in [0, 1], got {self.gamma}.")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}.")
        check(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.",
        )


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

    def cosine_lr(self, base_lr: float) -> float:
        """``base_lr * (1 + cos(pi * progress)) / 2`` over the run's ``total_steps`` (1M when unknown):
        the actor schedule of IQL's paper and d3rlpy's reproductions, also used by IDQL and Diffusion-QL."""
        horizon = max(self.total_steps or 1_000_000, 1)
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(self.num_updates, horizon) / horizon))

    def make_sampler(self, dataset: OfflineDataset, device: torch.device, seed: int) -> Any:
        """An object whose ``sample(batch_size)`` returns a batch for ``update``: by default uniform
        transitions (``gendm.data.replay.Batch``) from the dataset held on ``device``. Sequence
        models return a sequence sampler here. A ``state_dict``/``load_state_dict`` pair, if present,
        is checkpointed (exact resume of the sampling stream)."""
        from gendm.data.samplers import TransitionSampler

        return TransitionSampler(dataset, device, seed)


def box_bounds(space: gym.spaces.Box, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` mapping [-1, 1] onto the Box bounds; unbounded Boxes are an error."""
    low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ConfigError("This algorithm squashes actions with tanh and needs a bounded Box action space.")
    return (high - low) / 2, (high + low) / 2


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    config_cls: type
    agent_cls: type
    kind: Literal["off_policy", "on_policy", "offline"]
    action_spaces: tuple[str, ...]
    summary: str

    def supports(self, action_space: gym.Space) -> bool:
        kind = "discrete" if isinstance(action_space, gym.spaces.Discrete) else "box"
        return kind in self.action_spaces


ALGOS: Registry[AlgoSpec] = Registry("algorithm", hint="List them with `gendm list algos`.")


def register(spec: AlgoSpec) -> AlgoSpec:
    return ALGOS.register(spec.name, spec)

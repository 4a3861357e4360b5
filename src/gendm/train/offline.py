"""The offline training loop: gradient steps on batches drawn from a fixed dataset, evaluated in the
dataset's environment with the same protocol, checkpoints and summary as the online loop
(``gendm.train.trainer``). Steps, ``eval_every`` and ``log_every`` count gradient steps; ``env_steps``
stays 0 and ``dataset_transitions`` records how much data the run learned from.

The evaluation environment is the one the dataset records, as minari's ``recover_environment(eval_env=
True)`` builds it: its ``eval_env_spec``, else its ``env_spec`` (time limit, kwargs and wrappers), else
the registered id; ``--env`` with another id overrides it. ``summary.json`` names the spec under
``eval_env``.

Batches come from ``agent.make_sampler(dataset, device, seed).sample(batch_size)``: uniform
transitions held on the device by default, sequences for agents that ask for them. Normalised scores
use the dataset's ``ref_min_score`` / ``ref_max_score`` (Minari's metadata), else the env's suite
references (``gendm.envs.references``).
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from gendm.agents.base import OfflineAgent
from gendm.core.device import resolve_device
from gendm.core.errors import ConfigError, DataError
from gendm.core.methods import TaskInfo, accepting
from gendm.core.seeding import seed_everything
from gendm.data.dataset import OfflineDataset
from gendm.data.minari_io import load_dataset, recorded_env_spec
from gendm.data.validation import validate
from gendm.envs import check_env_id, make_env
from gendm.envs.references import reference
from gendm.train.evaluate import evaluation_point
from gendm.train.trainer import EVAL_SEED_OFFSET, Trainer, TrainSettings


def train_offline(settings: TrainSettings, dataset: OfflineDataset | None = None) -> dict[str, Any]:
    """Run (or resume) one offline run; write and return its ``summary.json`` contents. ``dataset``
    (in memory) replaces loading ``settings.dataset`` from disk."""
    return OfflineTrainer(settings, dataset).run()


def metadata_reference(metadata: dict[str, Any], env_id: str | None = None) -> dict[str, Any] | None:
    """``{"random", "expert", "source"}`` for normalised scores: the dataset's ``ref_min_score`` and
    ``ref_max_score`` (Minari's metadata keys), else the reference returns of ``env_id`` (default: the
    metadata's ``env_id``); None when neither is known."""
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if lo is not None and hi is not None and float(hi) != float(lo):
        return {
            "random": float(lo),
            "expert": float(hi),
            "source": "dataset metadata (ref_min_score, ref_max_score)",
        }
    ref = reference(env_id or metadata.get("env_id") or "")
    if ref is None:
        return None
    return {"random": ref.random_return, "expert": ref.expert_return, "source": "gendm.envs.references"}


def eval_env_spec(dataset: OfflineDataset, env_id: str | None = None) -> tuple[EnvSpec | str, dict[str, Any]]:
    """The environment to evaluate a policy learned from ``dataset`` in (for ``make_env``) and its
    description for ``summary.json``: id, max_episode_steps, kwargs, wrappers and where it came from.
    ``env_id`` (``--env``) naming another environment than the recorded one replaces the recorded spec."""
    recorded = recorded_env_spec(dataset.metadata)
    if recorded is not None and env_id in (None, "", recorded[0].id):
        spec, key = recorded
        wrappers = [w.name for w in spec.additional_wrappers]
        return spec, _describe_env(spec, wrappers, f"dataset metadata ({key})")
    env = env_id or dataset.env_id
    if not env:
        return "", {}
    check_env_id(env)
    source = "--env" if env_id else "gymnasium registry (the dataset records no env_spec)"
    return env, _describe_env(gym.spec(env), [], source)


def _describe_env(spec: EnvSpec, wrappers: list[str], source: str) -> dict[str, Any]:
    kwargs = json.loads(json.dumps(spec.kwargs, default=repr))  # summary.json holds JSON values only
    return {
        "id": spec.id,
        "max_episode_steps": spec.max_episode_steps,
        "kwargs": kwargs,
        "additional_wrappers": wrappers,
        "source": source,
    }


def dataset_reference(dataset: OfflineDataset, env_id: str | None = None) -> dict[str, Any] | None:
    """``metadata_reference`` of a dataset, falling back to ``env_id`` (default: the dataset's env)."""
    return metadata_reference(dataset.metadata, env_id or dataset.env_id)


class OfflineTrainer(Trainer):
    step_unit, step_name = "grad_steps", "gradient step"

    def __init__(self, s: TrainSettings, dataset: OfflineDataset | None = None) -> None:
        self._begin(s)
        if self.method.family != "offline":
            raise ConfigError(
                f"{s.algo} is an online ({self.method.family}) algorithm and cannot learn from a dataset. "
                f"Offline algorithms: {', '.join(accepting(TaskInfo('dataset', s.dataset or '')))}."
            )
        if dataset is None:
            if not s.dataset:
                raise ConfigError(
                    f"{s.algo} learns from a dataset: pass --dataset NAME_OR_PATH "
                    "(list local datasets with `gendm data list`, create one with `gendm data collect`)."
                )
            dataset = load_dataset(s.dataset)
        self.dataset = dataset
        self.dataset_name = str(dataset.metadata.get("dataset_id") or s.dataset or "in-memory")
        env, self.eval_env_info = eval_env_spec(dataset, s.env_id)
        self.env_id = env.id if isinstance(env, EnvSpec) else env
        if not self.env_id:
            raise ConfigError(
                f"Dataset {self.dataset_name!r} does not name its environment: pass --env ENV_ID to "
                "evaluate in."
            )
        check_env_id(self.env_id)
        self.config = self.method.make_config(s.overrides)
        self.device = resolve_device(s.device)
        seed_everything(s.seed)
        self.eval_env = make_env(env, 1, seed=s.seed + EVAL_SEED_OFFSET)
        obs_space, act_space = self.eval_env.single_observation_space, self.eval_env.single_action_space
        if not self.method.supports(act_space):
            fits = accepting(TaskInfo("dataset", self.dataset_name, lambda: (None, act_space)))
            raise ConfigError(
                f"{s.algo} needs a {' or '.join(self.method.action_spaces)} action space, but {self.env_id} "
                f"has {act_space}. "
                + (
                    f"Offline algorithms for it: {', '.join(fits)}."
                    if fits
                    else "No gendm offline algorithm learns this action space."
                )
            )
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(
                f"Offline algorithms read Box observations, but {self.env_id} has {obs_space}: wrap the env "
                "(e.g. gymnasium.wrappers.FlattenObservation one-hot encodes a Discrete space) and collect "
                "the dataset on the wrapped env."
            )
        self._check_shapes(obs_space.shape, act_space.shape)
        validate(dataset, obs_space, act_space)  # names the row of any NaN, bad flag or out-of-space value
        self.agent: OfflineAgent = self.method.builder(
            self.config, obs_space, act_space, self.device, total_steps=s.steps
        )
        self.agent.prepare(dataset)
        self.sampler = self.agent.make_sampler(dataset, self.device, s.seed)
        self.reference = dataset_reference(dataset, self.env_id)
        self._init_loop()

    def _check_shapes(self, obs_shape: tuple[int, ...], act_shape: tuple[int, ...]) -> None:
        have = (self.dataset.observations.shape[1:], self.dataset.actions.shape[1:])
        if have != (tuple(obs_shape), tuple(act_shape)):
            raise DataError(
                f"Dataset {self.dataset_name!r} holds observations {have[0]} and actions {have[1]}, but "
                f"{self.env_id} has observations {tuple(obs_shape)} and actions {tuple(act_shape)}: "
                "evaluate in the env the data was collected in (leave out --env)."
            )

    def _describe(self) -> str:
        return f"{self.s.algo} {self.dataset_name} seed {self.s.seed}"

    def _loop(self) -> None:
        agent, sampler, batch_size = self.agent, self.sampler, self.config.batch_size
        while self.grad_steps < self.s.steps:
            self.pending.append(agent.update(sampler.sample(batch_size)))
            self.grad_steps += 1
            self.bar.update(1)
            self._after_step()

    def _measure(self) -> dict[str, Any]:
        s = self.s
        return evaluation_point(
            self.agent, self.eval_env, s.eval_episodes, s.seed + EVAL_SEED_OFFSET, s.eval_deterministic
        )

    # ----------------------------------------------------------------------- checkpoints, summary
    def _extra_identity(self) -> dict[str, Any]:
        return {"dataset": self.dataset_name, "dataset_transitions": len(self.dataset)}

    def _extra_state(self) -> dict[str, Any]:
        if hasattr(self.sampler, "state_dict"):
            return {"sampler": self.sampler.state_dict()}
        generator = getattr(self.sampler, "generator", None)
        return {"sampler": {"generator": generator.get_state()}} if generator is not None else {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if "sampler" not in state:
            return
        if hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        elif getattr(self.sampler, "generator", None) is not None:
            self.sampler.generator.set_state(state["sampler"]["generator"].cpu())

    def _score(self, ret: float) -> float | None:
        if self.reference is None:
            return None
        return (ret - self.reference["random"]) / (self.reference["expert"] - self.reference["random"])

    def _extra_summary(self) -> dict[str, Any]:
        returns = self.dataset.episode_returns()
        return {
            "dataset": self.dataset_name,
            "dataset_env_id": self.dataset.env_id,
            "dataset_transitions": len(self.dataset),
            "dataset_episodes": self.dataset.num_episodes,
            "dataset_return_mean": float(np.mean(returns)) if len(returns) else None,
            "reference": self.reference,
            "eval_env": self.eval_env_info,
        }


__all__ = ["OfflineTrainer", "dataset_reference", "eval_env_spec", "metadata_reference", "train_offline"]

"""Tiny tasks for the contract suite (``test_contract.py``): one per method family, not per method.

A family's task builds any of its methods from the config class with the family's tiny overrides
(applied to the fields the config has), feeds it observations and a batch of the family's kind, and
gives the ``TrainSettings`` of a short ``gendm.train.train`` run. ``CHECKS`` says which contract checks
apply to a family; a method whose family has no task here fails every check, saying so.
"""

from __future__ import annotations

import dataclasses
import types
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

import gendm.envs  # noqa: F401  (registers gendm's own environments)

DEVICE = torch.device("cpu")

ALL_CHECKS = ("builds", "acts", "updates", "saves", "resumes", "rejects")
CHECKS: dict[str, tuple[str, ...]] = {
    "off_policy": ALL_CHECKS,
    "on_policy": ALL_CHECKS,
    "offline": ALL_CHECKS,
    # A language agent prompts a frozen model: it has no update, no trainable state to save and no
    # training run to interrupt (its run replays episodes), so updates / saves / resumes do not apply.
    "language_agent": ("builds", "acts", "rejects"),
    # A fine-tuner's "acting" is sampling completions, which its update already does (rollout).
    "lm_finetune": ("builds", "updates", "saves", "resumes", "rejects"),
}

# Tiny overrides per family: each is applied where the method's config has the field, so a new
# method of the family gets them by naming its fields like the others.
TINY: dict[str, dict[str, Any]] = {
    "off_policy": {"hidden": (16, 16), "batch_size": 16, "buffer_size": 256, "learning_starts": 10},
    "on_policy": {
        "hidden": (16, 16),
        "num_envs": 2,
        "num_steps": 8,
        "num_minibatches": 2,
        "update_epochs": 1,
    },
    "offline": {
        "batch_size": 16,
        "hidden": (16, 16),
        "critic_hidden": (16, 16),
        "num_candidates": 4,
        "num_components": 2,  # MDN mixture
        "num_bins": 4,  # discretised-action bins
        "kmeans_iters": 5,
        "diffusion_steps": 3,  # IDQL, Diffusion-QL
        "denoiser_hidden": 16,
        "denoiser_depth": 1,
        "num_backup_samples": 2,
        "num_train_steps": 4,  # Diffusion Policy
        "width": 8,
        "depth": 2,
        "obs_horizon": 2,
        "pred_horizon": 4,
        "action_horizon": 2,
        "lr_warmup_steps": 0,
        "num_diffusion_steps": 4,  # Diffuser
        "horizon": 8,
        "dims": (8, 16),
        "value_dims": (8, 16),
        "time_dim": 8,
        "num_plans": 2,
    },
    "language_agent": {
        "history": 1,
        "max_new_tokens": 8,
        "chat": False,
        "num_candidates": 2,
        "q_episodes": 2,
        "max_steps": 3,
    },
    "lm_finetune": {
        "group_size": 2,
        "prompts_per_iteration": 2,
        "max_new_tokens": 2,
        "minibatch_size": 4,
        "pretrain_steps": 10,
    },
}

# Fields a bad value is tried on first, by name (the first that matches and has a declared rule).
PREFERRED_FIELDS = ("learning_rate", "batch_size", "gamma")
# For configs that declare no rule (hand-written checks): a field by name and a value it refuses.
BAD_VALUES: tuple[tuple[str, Any], ...] = (("max_new_tokens", 0), ("history", -1))


def registered_methods() -> list[Any]:
    """Every registered method (``gendm.core.methods.METHODS``, filled by ``import gendm.train``),
    and the example methods of ``tests/example_methods`` (one file each, registered on import: they
    get the contract by registering, like any new method)."""
    import importlib
    import pkgutil

    import example_methods

    import gendm.train  # noqa: F401  (registers every method)
    from gendm.core.methods import METHODS

    for module in pkgutil.iter_modules(example_methods.__path__):
        importlib.import_module(f"example_methods.{module.name}")

    return [m for _, m in METHODS.items()]


def tiny_overrides(method: Any) -> dict[str, Any]:
    """The family's tiny overrides restricted to the fields the method's config has."""
    names = {f.name for f in dataclasses.fields(method.config_cls)}
    return {k: v for k, v in TINY.get(method.family, {}).items() if k in names}


def _matches(name: str, wanted: str) -> bool:
    return name == wanted or name.endswith("_" + wanted)


def _breaking(rule: Any, tp: Any) -> Any | None:
    """A value outside ``rule``'s range, of the field's number type; None for a rule without a range."""
    for bound, step in ((rule.gt, 0), (rule.ge, -1), (rule.lt, 0), (rule.le, 1)):
        if bound is not None:
            value = bound + step
            return int(value) if tp is int and float(value).is_integer() else float(value)
    return None


def bad_value(method: Any) -> tuple[str, Any]:
    """A field of the method's config with a numeric constraint, and a value that breaks it: from the
    constraints the config declares (``gendm.core.config.field_rules``), a learning-rate-like field,
    ``batch_size`` or ``gamma`` first; else one of ``BAD_VALUES``."""
    import typing

    from gendm.core.config import field_rules

    cls = method.config_cls
    names = [f.name for f in dataclasses.fields(cls)]
    hints = typing.get_type_hints(cls)
    candidates = []
    for name, rule in field_rules(cls).items():
        tp = hints[name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
        is_seq = typing.get_origin(tp) in (tuple, list)
        item = (typing.get_args(tp) or (Any,))[0] if is_seq else tp
        if item not in (int, float):
            continue
        value = _breaking(rule, item)
        if value is not None:
            rank = next(
                (i for i, w in enumerate(PREFERRED_FIELDS) if _matches(name, w)), len(PREFERRED_FIELDS)
            )
            candidates.append((rank, names.index(name), name, (value,) if is_seq else value))
    if candidates:
        _, _, name, value = min(candidates)
        return name, value
    for wanted, value in BAD_VALUES:
        for name in names:
            if _matches(name, wanted):
                return name, value
    raise AssertionError(
        f"{method.name}: {cls.__name__} declares no numeric field rule (gendm.core.config.field) and has "
        f"no field among {', '.join(w for w, _ in BAD_VALUES)}: declare one, or add a rule in "
        "tests/contract_tasks.py."
    )


def parameters(modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


TIMINGS = frozenset({"seconds", "wall_s", "eval_s"})
"""Keys of measured wall-clock times kept in some states (LOOP's metrics): not compared."""


def assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Nested state (dicts, lists, tensors, JSON values) equal bit for bit, timings aside."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in sorted(set(a) - TIMINGS, key=str):
            assert_same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}/{i}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


class TinyTask:
    """What every family's task offers the checks (``build``, ``weights``, ``update``, ``train``)."""

    family = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def overrides(self, method: Any) -> dict[str, Any]:
        return tiny_overrides(method)

    def config(self, method: Any) -> Any:
        return method.make_config(self.overrides(method))

    def build(self, method: Any, seed: int = 0) -> Any:
        raise NotImplementedError

    def weights(self, subject: Any) -> list[torch.Tensor]:
        """Copies of the trained parameters."""
        raise NotImplementedError

    def update(self, subject: Any, method: Any) -> dict[str, Any]:
        """One update on a tiny batch of the family's kind; its metrics."""
        raise NotImplementedError

    def train_settings(self, method: Any) -> dict[str, Any]:
        """``TrainSettings`` fields of a short run (task, ``steps``, ``eval_every``)."""
        raise NotImplementedError

    def train(self, method: Any, out_dir: Path, die_at: int | None = None) -> RunResult:
        """Run (or resume) the short run in ``out_dir`` through ``gendm.train``. With ``die_at``, the
        process "dies" (``Killed``) right after the first checkpoint at or past that step, as a
        killed run does, and the summary is None."""
        from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint
        from gendm.train import TrainSettings, make_trainer

        fields = self.train_settings(method)
        settings = TrainSettings(
            method.name,
            out_dir=out_dir,
            eval_episodes=1,
            log_every=max(fields["steps"] // 4, 1),
            overrides=self.overrides(method),
            progress=False,
            tensorboard=False,
            **fields,
        )
        trainer = make_trainer(settings)
        summary = None
        if die_at is None:
            summary = trainer.run()
        else:
            save = trainer._save

            def save_then_die() -> None:
                save()
                if trainer.progress >= die_at:
                    raise Killed(trainer.progress)

            trainer._save = save_then_die
            try:
                trainer.run()
            except Killed:
                pass
            else:
                raise AssertionError(f"the run ended without a checkpoint at step {die_at} or later")
        state, _ = load_checkpoint(find_checkpoint_dir(out_dir / "checkpoint"))
        return RunResult(summary, state, trainer.resumed_at, trainer.agent.state_dict())


class RunResult(NamedTuple):
    summary: dict[str, Any] | None
    checkpoint: dict[str, Any]
    """The state in the run's last checkpoint."""
    resumed_at: int | None
    """The step the run resumed at; None for a fresh run."""
    final: dict[str, Any]
    """The trained agent's (or fine-tuner's) state when the run returned."""


class Killed(Exception):
    """Stands for the training process dying right after it wrote a checkpoint."""


# ----------------------------------------------------------------------------------- agent families
class AgentTask(TinyTask):
    """Base of the agent families' tasks: agents built as ``builder(config, obs_space, act_space,
    device, total_steps=...)``, acting on a batch of observations, updated with one batch."""

    total_steps = 100

    def check_builds(self, method: Any) -> None:
        # from the config class's defaults (cheap for an agent: nothing runs), then tiny
        obs_space, act_space = self.spaces(method)
        required = {k: v for k, v in self.overrides(method).items() if k not in tiny_overrides(method)}
        default = method.make_config(required)
        for config in (default, self.config(method)):
            agent = method.builder(config, obs_space, act_space, DEVICE, total_steps=self.total_steps)
            assert agent.config == config and agent.modules(), f"{method.name} built no modules"
            assert agent.observation_space == obs_space and agent.action_space == act_space

    def weights(self, subject: Any) -> list[torch.Tensor]:
        return parameters(subject.modules())

    def update(self, subject: Any, method: Any) -> dict[str, Any]:
        return subject.update(self.batch(subject, method))

    def spaces(self, method: Any) -> tuple[gym.Space, gym.Space]:
        raise NotImplementedError

    def build(self, method: Any, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        obs_space, act_space = self.spaces(method)
        return method.builder(self.config(method), obs_space, act_space, DEVICE, total_steps=self.total_steps)

    def observations(self, method: Any) -> torch.Tensor:
        raise NotImplementedError

    def batch(self, agent: Any, method: Any) -> Any:
        raise NotImplementedError


class OnlineTask(AgentTask):
    """A Box and a Discrete classic-control env; a method runs on the first one it accepts."""

    env_ids = ("Pendulum-v1", "CartPole-v1")
    steps = 40  # env steps of the resume run (Pendulum's episodes are 200 long: it stops mid-episode)

    def env_id(self, method: Any) -> str:
        from gendm.core.methods import TaskInfo

        reasons = []
        for env_id in self.env_ids:
            env = gym.make(env_id)
            spaces = (env.observation_space, env.action_space)
            reason = method.accepts(TaskInfo("env", env_id, load_spaces=lambda s=spaces: s))
            if reason is None:
                return env_id
            reasons.append(f"{env_id}: {reason}")
        raise AssertionError(
            f"{method.name} accepts none of the {self.family} tiny envs ({'; '.join(reasons)})"
        )

    def spaces(self, method: Any) -> tuple[gym.Space, gym.Space]:
        env = gym.make(self.env_id(method))
        return env.observation_space, env.action_space

    def observations(self, method: Any) -> torch.Tensor:
        env = gym.make(self.env_id(method))
        return torch.as_tensor(np.stack([env.reset(seed=i)[0] for i in range(3)]), dtype=torch.float32)

    def train_settings(self, method: Any) -> dict[str, Any]:
        return {"env_id": self.env_id(method), "steps": self.steps, "eval_every": self.steps // 2}


class OffPolicyTask(OnlineTask):
    family = "off_policy"

    def batch(self, agent: Any, method: Any) -> Any:
        from gendm.data import ReplayBuffer

        env = gym.make(self.env_id(method))
        env.action_space.seed(0)
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
        buffer = ReplayBuffer(
            64,
            env.observation_space.shape,
            env.action_space.shape,
            DEVICE,
            action_dtype=torch.long if discrete else torch.float32,
            seed=0,
        )
        obs, _ = env.reset(seed=0)
        for _ in range(64):
            action = env.action_space.sample()
            next_obs, reward, term, trunc, _ = env.step(action)
            buffer.add(
                obs[None], np.asarray(action)[None], np.array([reward]), next_obs[None], [term], [trunc]
            )
            obs = env.reset()[0] if term or trunc else next_obs
        return buffer.sample(agent.config.batch_size)


class OnPolicyTask(OnlineTask):
    family = "on_policy"
    steps = 64  # 4 rollouts of 2 envs x 8 steps

    def batch(self, agent: Any, method: Any) -> Any:
        from gendm.data import RolloutBuffer
        from gendm.envs import make_env
        from gendm.train.evaluate import _to_env_action

        c = agent.config
        env = make_env(self.env_id(method), c.num_envs, seed=0)
        discrete = isinstance(env.single_action_space, gym.spaces.Discrete)
        rollout = RolloutBuffer(
            c.num_steps,
            c.num_envs,
            env.single_observation_space.shape,
            env.single_action_space.shape,
            DEVICE,
            torch.long if discrete else torch.float32,
        )
        obs, _ = env.reset(seed=0)
        for _ in range(c.num_steps):
            obs_t = torch.as_tensor(obs, dtype=torch.float32)
            action, log_prob, value = agent.act_with_value(obs_t)
            obs, reward, term, trunc, _ = env.step(_to_env_action(action, env.single_action_space))
            rollout.add(obs_t, action, log_prob, reward.astype(np.float32), term | trunc, value)
        rollout.compute_gae(agent.value(torch.as_tensor(obs, dtype=torch.float32)), c.gamma, c.gae_lambda)
        return rollout


class OfflineTask(AgentTask):
    """Expert episodes of the two-path reaching task (Box observations and actions), on disk."""

    family = "offline"
    env_id = "gendm/TwoPathReach-v0"
    steps = 10  # gradient steps of the resume run

    @cached_property
    def dataset(self) -> Any:
        from gendm.data.collect import collect

        return collect(self.env_id, "expert", episodes=6, seed=0, progress=False, command="pytest")

    @cached_property
    def dataset_path(self) -> str:
        from gendm.data import save_dataset

        return str(
            save_dataset(self.dataset, "gendm-contract/twopath/expert-v0", root=self.root / "datasets")
        )

    @cached_property
    def policy_run(self) -> str:
        """A finished ``bc`` run: V-GPS re-ranks the proposals of a trained policy (its ``policy``)."""
        from gendm.train import TrainSettings, train

        out = self.root / "vgps-policy"
        train(
            TrainSettings(
                "bc",
                dataset=self.dataset_path,
                steps=2,
                eval_every=2,
                eval_episodes=1,
                out_dir=out,
                overrides={"hidden": (16, 16), "batch_size": 16},
                progress=False,
                tensorboard=False,
            )
        )
        return str(out)

    def overrides(self, method: Any) -> dict[str, Any]:
        extra = {}
        # The one per-method override: V-GPS has no default proposal policy (its `policy` is a
        # run directory), so it is given a tiny trained BC run.
        if method.name == "vgps":
            extra["policy"] = self.policy_run
        return tiny_overrides(method) | extra

    def spaces(self, method: Any) -> tuple[gym.Space, gym.Space]:
        env = gym.make(self.env_id)
        return env.observation_space, env.action_space

    def build(self, method: Any, seed: int = 0) -> Any:
        agent = super().build(method, seed)
        agent.prepare(self.dataset)
        return agent

    def observations(self, method: Any) -> torch.Tensor:
        return torch.as_tensor(self.dataset.observations[[0, 7, 20]], dtype=torch.float32)

    def batch(self, agent: Any, method: Any) -> Any:
        return agent.make_sampler(self.dataset, DEVICE, 0).sample(agent.config.batch_size)

    def train_settings(self, method: Any) -> dict[str, Any]:
        return {"dataset": self.dataset_path, "steps": self.steps, "eval_every": self.steps // 2}


# -------------------------------------------------------------------------------- language families
class LanguageAgentTask(TinyTask):
    """A BabyAI text level played by a tiny, untrained GPT-2 (``gendm.lm.tiny``) behind the ``hf:``
    backend, one episode of a few steps."""

    family = "language_agent"
    level = "BabyAI-GoToRedBallNoDists-v0"

    @cached_property
    def backend(self) -> str:
        from gendm.lm.tiny import save_model_dir, tiny_gpt2, word_tokenizer

        words = "Thought Action Observation Task Mission Valid actions go to the red ball turn left right"
        tok = word_tokenizer([words + " forward pick up drop toggle done : , . \n"])
        model = tiny_gpt2(tok, n_layer=1, n_embd=16, n_positions=512, seed=0)
        return "hf:" + str(save_model_dir(model, tok, self.root / "tiny-gpt2"))

    def overrides(self, method: Any) -> dict[str, Any]:
        # An untrained model's answers are unreadable; the default fallback ("noop": "look", which
        # MiniGrid refuses by design) would make every action invalid, "random" keeps them valid.
        return tiny_overrides(method) | {"fallback": "random"}

    def play(self, method: Any, config: Any | None = None) -> tuple[dict[str, Any], Any]:
        from gendm.lm.guard import BackendOptions

        config = config if config is not None else self.config(method)
        return method.builder(
            config, self.level, self.backend, BackendOptions(), episodes=1, first_seed=0, q_seed=0
        )

    def check_builds(self, method: Any) -> None:
        stats, _ = self.play(method)
        assert stats["episodes"] == 1 and stats["mean_steps"] >= 1, stats

    def check_acts(self, method: Any) -> None:
        stats, _ = self.play(method)
        assert stats["lm_calls"] >= 1, "the agent never asked its model"
        assert stats["invalid_actions"] == 0, f"{stats['invalid_actions']} actions the env refused"
        again, _ = self.play(method)  # the same seeds and backend: the same episode
        timeless = ("wall_s",)
        assert {k: v for k, v in again.items() if k not in timeless} == {
            k: v for k, v in stats.items() if k not in timeless
        }


class FineTuneTask(TinyTask):
    """The addition text task with the tiny GPT-2 the fine-tuner builds itself (a few pretraining
    steps), a couple of iterations of two prompts."""

    family = "lm_finetune"
    task_id = "text:addition"

    def build(self, method: Any, seed: int = 0, config: Any | None = None) -> Any:
        config = config if config is not None else self.config(method)
        tuner = method.builder(config, self.task_id, seed=seed, model_dir=None, device=DEVICE)
        tuner.prepare()
        return tuner

    def check_builds(self, method: Any) -> None:
        tuner = method.builder(method.make_config(), self.task_id, seed=0, model_dir=None, device=DEVICE)
        assert tuner.state_dict(), f"{method.name} built nothing to train"
        self.build(method)

    def weights(self, subject: Any) -> list[torch.Tensor]:
        state = subject.state_dict()
        out: list[torch.Tensor] = []
        _tensors(state.get("model", state), out)  # the model's weights, not optimiser moments
        return [t.detach().clone() for t in out if t.is_floating_point()]

    def update(self, subject: Any, method: Any) -> dict[str, Any]:
        rewards = subject.train(1)
        return {"reward": torch.tensor(rewards[-1])}

    def train_settings(self, method: Any) -> dict[str, Any]:
        return {"text_task": self.task_id, "steps": 4, "eval_every": 2}


def _tensors(state: Any, out: list[torch.Tensor]) -> None:
    if isinstance(state, torch.Tensor):
        out.append(state)
    elif isinstance(state, dict):
        for v in state.values():
            _tensors(v, out)
    elif isinstance(state, list | tuple):
        for v in state:
            _tensors(v, out)


TASKS: dict[str, type] = {
    "off_policy": OffPolicyTask,
    "on_policy": OnPolicyTask,
    "offline": OfflineTask,
    "language_agent": LanguageAgentTask,
    "lm_finetune": FineTuneTask,
}

"""The method registry: every method of every family, by name.

A method is one file that ends with one ``register_method(Method(...))`` statement: its name, its
family (which trainer runs it, ``gendm.train``), its config dataclass, its builder, a one-line
summary and ``accepts(task) -> None | reason``. The CLI (``gendm list algos``, ``gendm train ALGO
--help``), the bench spec and the bench worker consult only this registry.

For the agent families (``off_policy``, ``on_policy``, ``offline``) the builder is the agent class,
called as ``builder(config, observation_space, action_space, device, total_steps=...)``; the other
families' trainers document what they call theirs with (``gendm.train``).

``import gendm.train`` (or ``gendm.train.all_methods()``) imports every method's module, so every
method is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gendm.core.registry import Registry

FAMILIES: dict[str, str] = {
    "off_policy": "online RL from a replay buffer of the agent's own interaction",
    "on_policy": "online RL from fresh rollouts of the current policy",
    "offline": "RL or imitation from a fixed dataset, evaluated in the dataset's environment",
    "language_agent": "a prompting agent over a frozen language model, evaluated on text environments",
    "lm_finetune": "RL fine-tuning of a language model on a text task",
}
"""Family name -> one-line description. Later families register with :func:`register_family`."""

TASK_KINDS = ("env", "dataset", "text_task")
BACKEND_USE = ("none", "optional", "required")


def register_family(name: str, text: str) -> None:
    """Add a method family (its trainer registers in ``gendm.train``)."""
    if name in FAMILIES:
        raise ValueError(f"method family {name!r} is registered twice")
    FAMILIES[name] = text


@dataclass(frozen=True)
class TaskInfo:
    """What ``Method.accepts`` sees of a task: its kind (``env``, ``dataset`` or ``text_task``), its id
    (a Gymnasium id or TextWorld game file, a dataset name, ``text:NAME``) and, made only when asked
    for, its observation and action spaces (None when unknown, and for a text task)."""

    kind: str
    id: str
    load_spaces: Callable[[], tuple[Any, Any]] | None = field(default=None, compare=False, repr=False)
    """Returns ``(observation_space, action_space)``; either may be None (unknown)."""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"TaskInfo.kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")

    @cached_property
    def _spaces(self) -> tuple[Any, Any]:
        return self.load_spaces() if self.load_spaces is not None else (None, None)

    @property
    def observation_space(self) -> Any:
        return self._spaces[0]

    @property
    def action_space(self) -> Any:
        return self._spaces[1]


def _no_defaults(backend: str | None) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """One registered method (module docstring)."""

    name: str
    family: str
    """A key of :data:`FAMILIES`."""
    config_cls: type
    """The method's config dataclass (its fields are ``--set`` / ``set = {...}`` keys)."""
    builder: Callable[..., Any]
    """Agent families: the agent class. Others: what the family's trainer calls (``gendm.train``)."""
    summary: str
    accepts: Callable[[TaskInfo], str | None]
    """None when the method can run on the task; else why not, a phrase that follows the method's name
    ("cannot act in CartPole-v1 (Discrete actions)"). Raises ``GendmError`` when the task itself is
    malformed (a missing game file)."""
    action_spaces: tuple[str, ...] = ()
    """Agent families: the action-space kinds it acts in (``box``, ``discrete``); () for others."""
    backend: str = "none"
    """Whether a run takes a language-model backend: ``none``, ``optional`` or ``required``."""
    backend_kinds: tuple[str, ...] = ()
    """Backend spec kinds it takes (``hf``: a local model directory, ``openai``: a served model)."""
    backend_options: bool = False
    """Takes ``gendm.lm.BackendOptions`` (timeouts, retries, failure threshold of its model calls)."""
    intrinsic: bool = False
    """Takes an intrinsic exploration reward (``gendm.rewards.factory``)."""
    config_defaults: Callable[[str | None], dict[str, Any]] = _no_defaults
    """Config field defaults that depend on the run's backend (LOOP's tiny model: a larger step)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(
                f"method {self.name!r}: unknown family {self.family!r}; families: {', '.join(FAMILIES)} "
                "(add one with gendm.core.methods.register_family)"
            )
        if self.backend not in BACKEND_USE:
            raise ValueError(f"method {self.name!r}: backend must be one of {', '.join(BACKEND_USE)}")

    def make_config(self, overrides: Mapping[str, Any] | list[str] = (), backend: str | None = None) -> Any:
        """The method's config with ``overrides`` applied; a bad field raises ``ConfigError`` naming it."""
        from gendm.core.config import apply_overrides

        return apply_overrides(self.config_cls(**self.config_defaults(backend)), overrides or {})

    def supports(self, action_space: Any) -> bool:
        """Whether ``action_space``'s kind (``space_kind``) is in ``action_spaces``."""
        return space_kind(action_space) in self.action_spaces


def space_kind(action_space: Any) -> str:
    """``discrete`` for a ``gymnasium.spaces.Discrete``, else ``box``."""
    import gymnasium as gym

    return "discrete" if isinstance(action_space, gym.spaces.Discrete) else "box"


METHODS: Registry[Method] = Registry("algorithm", hint="List them with `gendm list algos`.")


def register_method(m: Method) -> Method:
    """Register ``m`` under ``m.name`` (a name registered twice is an error)."""
    return METHODS.register(m.name, m)


def accepting(task: TaskInfo) -> list[str]:
    """Names of the registered methods that can run on ``task``, sorted."""
    from gendm.core.errors import GendmError

    out = []
    for name, m in METHODS.items():
        try:
            if m.accepts(task) is None:
                out.append(name)
        except GendmError:
            pass
    return out


BACKEND_FORMS = {
    "hf": '"hf:/path/to/model-dir" (a local model directory)',
    "openai": '"openai:http://host:port/v1#model" (a served model)',
}
"""The backend spec kinds and how each is written."""


def run_option_problem(
    m: Method, *, intrinsic: bool = False, backend: str | None = None, backend_options: bool = False
) -> tuple[str, str] | None:
    """``(field, what is wrong)`` for the first run option that ``m`` does not take (an exploration
    reward, a language-model backend, backend options) or lacks (a backend it requires), else None.
    The form of a backend spec is not checked here."""

    def takers(attr: str) -> str:
        return ", ".join(n for n, x in METHODS.items() if getattr(x, attr) not in (False, "none"))

    forms = " or ".join(BACKEND_FORMS[k] for k in m.backend_kinds if k in BACKEND_FORMS)
    if intrinsic and not m.intrinsic:
        return "intrinsic", (
            f"{m.name} ({m.family}: {FAMILIES[m.family]}) takes no intrinsic exploration reward; that only "
            f"applies to online algorithms ({takers('intrinsic')})."
        )
    if backend is None and m.backend == "required":
        return "backend", f"{m.name} prompts a language model: give a backend, {forms}."
    if backend is not None:
        if m.backend == "none":
            return "backend", (
                f"{m.name} is no language method; drop the backend (methods that take one: "
                f"{takers('backend')})."
            )
        kind = backend.partition(":")[0]
        if kind in BACKEND_FORMS and kind not in m.backend_kinds:
            return "backend", f"{m.name} takes {forms}, got {backend!r}."
    if backend_options and not m.backend_options:
        if m.backend != "none":
            return "backend_options", (
                f"{m.name} loads its model itself; only {takers('backend_options')} take backend options."
            )
        return "backend_options", (
            f"{m.name} is no language agent; drop them (only {takers('backend_options')} take backend "
            "options)."
        )
    return None


__all__ = [
    "FAMILIES",
    "METHODS",
    "Method",
    "TaskInfo",
    "accepting",
    "register_family",
    "register_method",
    "run_option_problem",
    "space_kind",
]

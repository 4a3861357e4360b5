"""Benchmark specs: a TOML file of methods x tasks (or suites) x seeds x budget, and its expansion
into runs. Every mistake is reported with the path of the offending field (``tasks[1].stepz``).

    name = "demo"
    seeds = 3                      # 3 -> seeds 0, 1, 2; or an explicit list [0, 7, 9]
    steps = 20000                  # default budget (env steps) per run
    eval_every = 2000              # evaluation cadence in env steps
    eval_episodes = 10
    eval_deterministic = true      # false: sampled actions (partially observed tasks, e.g. MiniGrid)
    budgets = [5000, 10000]        # optional: sample-efficiency table budgets

    [methods.sac]                  # a method: an algorithm plus config overrides
    algo = "sac"                   # defaults to the method's name
    set = { learning_rate = 1e-3 }
                                   # online methods may add an exploration reward (gendm.rewards.factory):
                                   # intrinsic = "rnd", or { kind = "lm", backend = "embed", coef = 0.1 }

    [[tasks]]
    env = "Pendulum-v1"            # or: suite = "classic"
    methods = ["sac"]              # optional: restrict to these methods
    steps = 10000                  # optional: per-task budget, cadence and seeds

    [[tasks]]                      # a dataset is a task for offline methods (iql, td3bc, bc):
    dataset = "gendm/pendulum/medium-v0"   # evaluated in the dataset's env; steps = gradient steps

    [methods.react]                # a language agent (react, stateact, react+q) over a model backend:
    backend = "openai:http://127.0.0.1:8000/v1#my-model"   # or "hf:/path/to/model-dir"
    set = { history = 2, chat = true }     # gendm.train.language.AgentRunConfig fields
    backend_options = { timeout_s = 10, max_retries = 1 }  # gendm.lm.BackendOptions (not in the run id)
                                   # plays eval_episodes episodes per seed on text environments:
    [[tasks]]                      # MiniGrid / BabyAI levels or TextWorld game files
    env = "BabyAI-GoToRedBallNoDists-v0"

    [methods.loop]                 # RL fine-tuning of a language model (LOOP); steps = iterations
    set = { group_size = 4 }       # backend = "hf:/path/to/model-dir" (default: a tiny GPT-2)
    [[tasks]]
    text_task = "addition"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym

from gendm.agents import ALGOS
from gendm.core.config import apply_overrides, to_dict
from gendm.core.errors import GendmError, SpecError, suggest
from gendm.core.seeding import MAX_SEED
from gendm.envs import check_env_id
from gendm.envs.references import SUITES
from gendm.envs.text_registry import is_game_file

TOP_KEYS = {
    "name": str,
    "description": str,
    "seeds": (int, list),
    "steps": int,
    "eval_every": int,
    "eval_episodes": int,
    "eval_deterministic": bool,
    "budgets": list,
    "methods": dict,
    "tasks": list,
}
METHOD_KEYS = {
    "algo": str,
    "set": dict,
    "description": str,
    "intrinsic": (str, dict),
    "backend": str,
    "backend_options": dict,
}
TASK_KEYS = {
    "env": str,
    "suite": str,
    "dataset": str,
    "text_task": str,
    "methods": list,
    "steps": int,
    "eval_every": int,
    "eval_episodes": int,
    "eval_deterministic": bool,
    "seeds": (int, list),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run: fully resolved, hashable into a stable ``run_id``."""

    method: str
    algo: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    task: str
    seed: int
    steps: int
    eval_every: int
    eval_episodes: int
    intrinsic: dict[str, Any] | None = None
    """An online method's exploration reward (``gendm.rewards.factory``), fields that differ from defaults."""
    eval_deterministic: bool = True
    """False: evaluation samples the policy's actions (``gendm.train.evaluate``)."""
    backend: str | None = None
    """A language method's model (``gendm.lm.make_backend`` spec); None for the tiny LOOP model."""
    backend_options: dict[str, Any] | None = None
    """A language agent's ``gendm.lm.BackendOptions`` (timeouts, retries, failure threshold)."""

    @property
    def run_id(self) -> str:
        # fields added later enter the identity only when not at their default, so older ids never change
        later = {"intrinsic": None, "eval_deterministic": True, "backend": None}
        # backend_options say how to talk to the server, not what is measured: never part of the identity
        key = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("overrides", "backend_options") and not (k in later and v == later[k])
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def config_hash(self) -> str:
        key = [self.algo, self.config] + ([self.backend] if self.backend is not None else [])
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass
class BenchSpec:
    name: str
    seeds: list[int]
    runs: list[RunSpec]
    budgets: list[int] | None = None
    skipped: list[str] = field(default_factory=list)
    """Method x task pairs left out because the method cannot act in the task (with the reason)."""
    source: str = ""


def builtin_specs() -> dict[str, Path]:
    folder = resources.files("gendm.bench") / "specs"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def load_spec(path_or_name: str | Path) -> BenchSpec:
    """Parse and validate a spec file, or a built-in spec by name (``demo``)."""
    path = Path(path_or_name)
    if not path.is_file():
        builtins = builtin_specs()
        if str(path_or_name) in builtins:
            path = builtins[str(path_or_name)]
        else:
            raise SpecError(
                f"No spec file {str(path_or_name)!r} and no built-in spec of that name."
                f"{suggest(str(path_or_name), builtins)} Built-in specs: {', '.join(sorted(builtins))}."
            )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path} is not valid TOML: {e}") from e
    spec = parse_spec(data)
    spec.source = str(path)
    return spec


def _check_keys(table: dict, allowed: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise SpecError(
                f"Unknown key {where}{key!r} in spec.{suggest(key, allowed)} Allowed: {', '.join(allowed)}."
            )
        expected = allowed[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            names = " or ".join(
                t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,))
            )
            raise SpecError(f"Spec field {where}{key} must be {names}, got {type(value).__name__} {value!r}.")


def _positive(value: int, where: str) -> int:
    if value < 1:
        raise SpecError(f"Spec field {where} must be >= 1, got {value}.")
    return value




def _seeds(value: Any, where: str) -> list[int]:
    """``3`` -> ``[0, 1, 2]``; a list of distinct integers in 0..MAX_SEED as given."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SpecError(
                f"Spec field {where} must be >= 1 (a number of seeds: 3 -> seeds 0, 1, 2), got {value}; "
                "or give a list of seeds such as [0, 7, 9]."
            )
        return list(range(value))
    if not value or not isinstance(value, list):
        raise SpecError(
            f"Spec field {where} must be a positive integer or a non-empty list of integers, got {value!r}."
        )
    seen: set[int] = set()
    for i, s in enumerate(value):
        if type(s) is not int:
            raise SpecError(
                f"Spec field {where}[{i}] must be an integer seed, got {type(s).__name__} {s!r} "
                f"(in {where} = {value!r})."
            )
        if not 0 <= s <= MAX_SEED:
            raise SpecError(
                f"Spec field {where}[{i}] must be a seed in 0..{MAX_SEED}, got {s} (in {where} = {value!r})."
            )
        if s in seen:
            raise SpecError(
                f"Spec field {where}[{i}] repeats seed {s} (in {where} = {value!r}): a repeated seed would "
                "run the same runs twice; list each seed once."
            )
        seen.add(s)
    return value


def parse_spec(data: dict[str, Any]) -> BenchSpec:
    _check_keys(data, TOP_KEYS, "")
    for required in ("methods", "tasks"):
        if required not in data:
            raise SpecError(f"Spec is missing {required!r} (see `gendm bench --help` for the format).")
    seeds = _seeds(data.get("seeds", 5), "seeds")
    defaults = {
        k: _positive(data.get(k, d), k)
        for k, d in (("steps", 100_000), ("eval_every", 5_000), ("eval_episodes", 10))
    }
    budgets = data.get("budgets")
    if budgets is not None and not all(isinstance(b, int) and b > 0 for b in budgets):
        raise SpecError(f"Spec field budgets must be a list of positive integers, got {budgets!r}.")

    methods: dict[str, _Method] = {}
    for name, table in data["methods"].items():
        where = f"methods.{name}."
        if not isinstance(table, dict):
            raise SpecError(f"Spec field methods.{name} must be a table, got {table!r}.")
        _check_keys(table, METHOD_KEYS, where)
        methods[name] = _parse_method(name, table, where)
    if not methods:
        raise SpecError("Spec field methods is empty: define at least one [methods.NAME] table.")

    runs: list[RunSpec] = []
    skipped: list[str] = []
    for i, task in enumerate(data["tasks"]):
        where = f"tasks[{i}]."
        if isinstance(task, str):
            task = {"env": task}
        if not isinstance(task, dict):
            raise SpecError(f"Spec field tasks[{i}] must be a table or an env id, got {task!r}.")
        _check_keys(task, TASK_KEYS, where)
        if sum(k in task for k in TASK_KINDS) != 1:
            raise SpecError(f"Spec field tasks[{i}] needs exactly one of {', '.join(map(repr, TASK_KINDS))}.")
        kind = next(k for k in TASK_KINDS if k in task)
        if kind == "suite":
            if task["suite"] not in SUITES:
                raise SpecError(
                    f"Spec field {where}suite: unknown suite {task['suite']!r}."
                    f"{suggest(task['suite'], SUITES)} Suites: {', '.join(SUITES)}."
                )
            env_ids, kind = list(SUITES[task["suite"]]), "env"
        elif kind == "text_task":
            env_ids = [_text_task(task["text_task"], where)]
        else:
            env_ids = [task[kind]]
        explicit = task.get("methods")
        for m in explicit or []:
            if m not in methods:
                raise SpecError(
                    f"Spec field {where}methods names {m!r}, which is not defined."
                    f"{suggest(m, methods)} Defined: {', '.join(methods)}."
                )
        budget = {k: _positive(task.get(k, defaults[k]), where + k) for k in defaults}
        budget["eval_deterministic"] = task.get("eval_deterministic", data.get("eval_deterministic", True))
        task_seeds = _seeds(task["seeds"], where + "seeds") if "seeds" in task else seeds
        for env_id in env_ids:
            target = _Task(kind, env_id, where)
            for name in explicit or list(methods):
                method = methods[name]
                reason = target.refuses(name, method)
                if reason is not None:
                    if explicit:
                        raise SpecError(f"Spec field {where}methods: {reason}.")
                    skipped.append(reason)
                    continue
                runs += [
                    RunSpec(
                        name,
                        method.algo,
                        method.overrides,
                        method.config,
                        env_id,
                        seed,
                        **budget,
                        intrinsic=method.intrinsic,
                        backend=method.backend,
                        backend_options=method.backend_options,
                    )
                    for seed in task_seeds
                ]
    if not runs:
        raise SpecError(f"Spec {no_runs_reason(skipped)}")
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SpecError(
            "Spec lists the same (method, task, seed) more than once; remove the duplicate task entry."
        )
    return BenchSpec(str(data.get("name", "bench")), seeds, runs, budgets, skipped)


TASK_KINDS = ("env", "suite", "dataset", "text_task")


def no_runs_reason(skipped: list[str]) -> str:
    """Why a spec expands to no runs, from its skip reasons (none: it lists no tasks)."""
    if not skipped:
        return (
            'has no runs: its tasks list is empty. Add a task, e.g. [[tasks]] with env = "Pendulum-v1" '
            "(or suite, dataset or text_task)."
        )
    return (
        f"has no runs: every method was skipped on every task ({'; '.join(skipped)}). Add a task that "
        "these methods can run on, or a method that fits the tasks (`gendm list algos`)."
    )


@dataclass(frozen=True)
class _Method:
    algo: str
    family: str
    """online, offline, agent (a language agent) or finetune (RL fine-tuning of a language model)."""
    overrides: dict[str, Any]
    config: dict[str, Any]
    intrinsic: dict[str, Any] | None = None
    backend: str | None = None
    backend_options: dict[str, Any] | None = None


def _parse_method(name: str, table: dict[str, Any], where: str) -> _Method:
    from gendm.train.language import AGENT_METHODS, LANGUAGE_METHODS, language_config, parse_backend_options

    algo = table.get("algo", name)
    overrides = table.get("set", {})
    backend = table.get("backend")
    if algo in LANGUAGE_METHODS:
        family = "agent" if algo in AGENT_METHODS else "finetune"
        if "intrinsic" in table:
            raise SpecError(f"Spec field {where}intrinsic: {algo} is a language method; it takes none.")
        if backend is None and family == "agent":
            raise SpecError(
                f"Spec field {where}backend is missing: {algo} prompts a language model "
                '(backend = "hf:/path/to/model-dir" or "openai:http://host:port/v1#model").'
            )
        if backend is not None:
            _check_backend(backend, where + "backend", fine_tuned=family == "finetune")
        try:
            config = to_dict(language_config(algo, overrides, backend))
        except GendmError as e:
            raise SpecError(f"Spec field {where}set: {e}") from None
        options = table.get("backend_options")
        if options is not None:
            if family != "agent":
                raise SpecError(
                    f"Spec field {where}backend_options: {algo} loads its model itself; only language "
                    f"agents ({', '.join(AGENT_METHODS)}) take backend options."
                )
            try:
                options = to_dict(parse_backend_options(options, backend))
            except GendmError as e:
                raise SpecError(f"Spec field {where}backend_options: {e}") from None
        return _Method(algo, family, overrides, config, backend=backend, backend_options=options)
    if algo not in ALGOS:
        names = [*ALGOS, *LANGUAGE_METHODS]
        raise SpecError(
            f"Spec field {where}algo: unknown algorithm {algo!r}.{suggest(algo, names)} "
            f"Algorithms: {', '.join(names)}."
        )
    spec = ALGOS.get(algo)
    if backend is not None:
        raise SpecError(f"Spec field {where}backend: {algo} is no language method; drop the backend.")
    if "backend_options" in table:
        raise SpecError(f"Spec field {where}backend_options: {algo} is no language agent; drop them.")
    try:
        config = to_dict(apply_overrides(spec.config_cls(), overrides))
    except GendmError as e:
        raise SpecError(f"Spec field {where}set: {e}") from None
    intrinsic = None
    if "intrinsic" in table:
        if spec.kind == "offline":
            raise SpecError(
                f"Spec field {where}intrinsic: {algo} is offline; exploration rewards are online only."
            )
        from gendm.rewards.factory import parse_intrinsic  # the rewards layer only when asked for

        try:
            intrinsic = parse_intrinsic(table["intrinsic"]).to_dict()
        except GendmError as e:
            raise SpecError(f"Spec field {where}intrinsic: {e}") from None
    family = "offline" if spec.kind == "offline" else "online"
    return _Method(algo, family, overrides, config, intrinsic)


def _check_backend(value: str, where: str, fine_tuned: bool) -> None:
    """The form of a backend spec (nothing is loaded or contacted here: workers may run elsewhere)."""
    kind, _, rest = value.partition(":")
    if fine_tuned and kind != "hf":
        raise SpecError(
            f"Spec field {where}: fine-tuning changes the weights, so it needs a local model directory "
            f'("hf:/path/to/model-dir"), got {value!r}.'
        )
    if (kind == "hf" and rest) or (kind == "openai" and "#" in rest):
        return
    raise SpecError(
        f'Spec field {where}: {value!r} is no backend; use "hf:/path/to/model-dir" or '
        '"openai:http://host:port/v1#model".'
    )


def _text_task(name: str, where: str) -> str:
    from gendm.train.language import TEXT_TASKS

    task = f"text:{name}"
    if task not in TEXT_TASKS:
        names = [t.removeprefix("text:") for t in TEXT_TASKS]
        raise SpecError(
            f"Spec field {where}text_task: unknown text task {name!r}.{suggest(name, names)} "
            f"Text tasks: {', '.join(names)}."
        )
    return task


class _Task:
    """One task of the spec and which methods can run on it (an action space is made only if asked)."""

    def __init__(self, kind: str, env_id: str, where: str) -> None:
        self.kind, self.env_id, self.where = kind, env_id, where
        self._space: tuple[gym.Space | None, gym.Space] | None = None
        self._text: str | None = None  # why env_id is no text environment ("" if it is one)
        if kind == "env" and not is_game_file(env_id):
            _check_env(env_id, where)

    def refuses(self, name: str, m: _Method) -> str | None:
        """Why method ``name`` cannot run on this task, or None."""
        env_id, label = self.env_id, f"{name} ({m.algo})"
        if m.family == "agent":
            if self.kind != "env":
                return f"{label} is a language agent, and {env_id} is not a text environment"
            why = self._text_env()
            return f"{label} is a language agent, and {why}" if why else None
        if m.family == "finetune":
            if self.kind == "text_task":
                return None
            return f"{label} fine-tunes a language model on a text task, and {env_id} is not one"
        if self.kind == "text_task":
            return f'{label} cannot learn text task {env_id}: only LOOP (algo = "loop") fine-tunes there'
        if m.family == "offline" and self.kind != "dataset":
            return f"{label} learns from a dataset, and {env_id} is an environment"
        if self.kind == "dataset" and m.family != "offline":
            return f"{label} is an online algorithm, and {env_id} is a dataset"
        if is_game_file(env_id):
            return f"{label} cannot play TextWorld game file {env_id}: language agents only"
        observations, space = self._spaces()
        if not ALGOS.get(m.algo).supports(space):
            return f"{label} cannot act in {env_id} ({type(space).__name__} actions)"
        if observations is not None and not isinstance(observations, gym.spaces.Box):
            return f"{label} needs vector observations, and {env_id} has {type(observations).__name__} ones"
        return None

    def _spaces(self) -> tuple[gym.Space | None, gym.Space]:
        """(observation space or None for a dataset, action space)."""
        if self._space is None:
            if self.kind == "dataset":
                self._space = (None, _dataset_action_space(self.env_id, self.where))
            else:
                _check_env(self.env_id, self.where)
                env = gym.make(self.env_id)
                self._space = (env.observation_space, env.action_space)
                env.close()
        return self._space

    def _text_env(self) -> str:
        if self._text is None:
            from gendm.language_agents.play import check_text_env

            try:
                check_text_env(self.env_id)
                self._text = ""
            except GendmError as e:
                if is_game_file(self.env_id):  # a missing game file is a mistake, not a mismatch
                    raise SpecError(f"Spec field {self.where}env: {e}") from None
                self._text = str(e).rstrip(".")
        return self._text


def _check_env(env_id: str, where: str) -> None:
    try:
        check_env_id(env_id)
    except GendmError as e:
        raise SpecError(f"Spec field {where}env: {e}") from None


def _dataset_action_space(name: str, where: str) -> gym.Space:
    """The action space stored in a local dataset's metadata (its arrays are not read)."""
    from minari.serialization import deserialize_space

    from gendm.data.dataset import read_metadata

    try:
        meta = read_metadata(name)
    except GendmError as e:
        raise SpecError(f"Spec field {where}dataset: {e}") from None
    try:
        return deserialize_space(meta["action_space"])
    except (KeyError, ValueError, TypeError, NotImplementedError) as e:
        raise SpecError(
            f"Spec field {where}dataset: the metadata of {name!r} lacks a readable action space ({e}); "
            "create the dataset again with `gendm data collect`."
        ) from None

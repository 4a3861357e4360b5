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
    set = { history = 2, chat = true }     # gendm.language_agents.methods.AgentRunConfig fields
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

from gendm.core.config import to_dict
from gendm.core.errors import GendmError, SpecError, suggest
from gendm.core.methods import Method, TaskInfo, run_option_problem
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
    method: Method
    """The registered method (``gendm.core.methods``)."""
    overrides: dict[str, Any]
    config: dict[str, Any]
    intrinsic: dict[str, Any] | None = None
    backend: str | None = None
    backend_options: dict[str, Any] | None = None


def _parse_method(name: str, table: dict[str, Any], where: str) -> _Method:
    from gendm.train import all_methods
    from gendm.train.language import parse_backend_options

    methods = all_methods()
    algo = table.get("algo", name)
    if algo not in methods:
        raise SpecError(
            f"Spec field {where}algo: unknown algorithm {algo!r}.{suggest(algo, methods)} "
            f"Algorithms: {', '.join(methods)}."
        )
    method = methods.get(algo)
    overrides = table.get("set", {})
    backend = table.get("backend")
    problem = run_option_problem(
        method,
        intrinsic="intrinsic" in table,
        backend=backend,
        backend_options="backend_options" in table,
    )
    if problem is not None:
        key, what = problem
        if key == "backend" and backend is None:
            raise SpecError(f"Spec field {where}backend is missing: {what}")
        raise SpecError(f"Spec field {where}{key}: {what}")
    if backend is not None:
        _check_backend(backend, where + "backend")
    try:
        config = to_dict(method.make_config(overrides, backend))
    except GendmError as e:
        raise SpecError(f"Spec field {where}set: {e}") from None
    options = table.get("backend_options")
    if options is not None:
        try:
            options = to_dict(parse_backend_options(options, backend))
        except GendmError as e:
            raise SpecError(f"Spec field {where}backend_options: {e}") from None
    intrinsic = None
    if "intrinsic" in table:
        from gendm.rewards.factory import parse_intrinsic  # the rewards layer only when asked for

        try:
            intrinsic = parse_intrinsic(table["intrinsic"]).to_dict()
        except GendmError as e:
            raise SpecError(f"Spec field {where}intrinsic: {e}") from None
    return _Method(algo, method, overrides, config, intrinsic, backend, options)


def _check_backend(value: str, where: str) -> None:
    """The form of a backend spec (nothing is loaded or contacted here: workers may run elsewhere)."""
    kind, _, rest = value.partition(":")
    if (kind == "hf" and rest) or (kind == "openai" and "#" in rest):
        return
    raise SpecError(
        f'Spec field {where}: {value!r} is no backend; use "hf:/path/to/model-dir" or '
        '"openai:http://host:port/v1#model".'
    )


def _text_task(name: str, where: str) -> str:
    from gendm.finetune.text_tasks import TEXT_TASKS

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
        if kind == "env" and not is_game_file(env_id):
            _check_env(env_id, where)
        self.info = TaskInfo(kind, env_id, self._spaces)

    def refuses(self, name: str, m: _Method) -> str | None:
        """Why method ``name`` cannot run on this task (``Method.accepts``), or None."""
        try:
            why = m.method.accepts(self.info)
        except SpecError:
            raise
        except GendmError as e:  # the task itself is malformed (a missing game file)
            raise SpecError(f"Spec field {self.where}{self.kind}: {e}") from None
        return None if why is None else f"{name} ({m.algo}) {why}"

    def _spaces(self) -> tuple[gym.Space | None, gym.Space | None]:
        """(observation space or None for a dataset, action space)."""
        if self.kind == "dataset":
            return None, _dataset_action_space(self.env_id, self.where)
        if self.kind == "text_task":
            return None, None
        _check_env(self.env_id, self.where)
        env = gym.make(self.env_id)
        spaces = (env.observation_space, env.action_space)
        env.close()
        return spaces


def _check_env(env_id: str, where: str) -> None:
    try:
        check_env_id(env_id)
    except GendmError as e:
        raise SpecError(f"Spec field {where}env: {e}") from None


def _dataset_action_space(name: str, where: str) -> gym.Space:
    """The action space stored in a local dataset's metadata (its arrays are not read)."""
    from minari.serialization import deserialize_space

    from gendm.data.minari_io import read_metadata

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

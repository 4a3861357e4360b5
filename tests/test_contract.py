"""The contract every registered method keeps, on a tiny task of its family (``contract_tasks.py``):
it builds, acts, updates, saves and loads bit-exactly, resumes to exactly the uninterrupted result,
and rejects a bad config value naming the field. A new method gets these tests by registering.

Which checks apply to a family is ``contract_tasks.CHECKS`` (language agents learn nothing, so they
only build, act and reject; a fine-tuner's acting is its update's sampling). A method of a family
without a tiny task fails every check, saying so.
"""

from __future__ import annotations

import copy
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from contract_tasks import (
    ALL_CHECKS,
    CHECKS,
    TASKS,
    AgentTask,
    assert_same_state,
    bad_value,
    registered_methods,
)

from gendm.core.checkpoint import load_checkpoint, save_checkpoint
from gendm.core.config import apply_overrides
from gendm.core.errors import ConfigError

METHODS = registered_methods()

# Methods whose acting samples even when asked for a deterministic action: the method's own
# evaluation rule draws candidates or plans (documented in each file, "deterministic changes
# nothing"). For them the contract is reproducibility under the same random state; every other
# method's deterministic action must not depend on the random state at all.
SAMPLES_WHEN_DETERMINISTIC = {"idql", "diffusion_ql", "diffuser", "vgps"}


def _methods(check: str) -> list:
    return [pytest.param(m, id=m.name) for m in METHODS if check in CHECKS.get(m.family, ALL_CHECKS)]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    made: dict[str, object] = {}

    def task_of(method):
        if method.family not in TASKS:
            pytest.fail(
                f"{method.name}: family {method.family!r} has no tiny task: add one to "
                "tests/contract_tasks.py (TASKS, CHECKS and TINY)."
            )
        if method.family not in made:
            made[method.family] = TASKS[method.family](root / method.family)
        return made[method.family]

    return task_of


def test_every_family_with_a_method_has_a_tiny_task():
    missing = sorted({m.family for m in METHODS} - set(TASKS))
    assert not missing, f"families without a tiny task in tests/contract_tasks.py: {missing}"
    assert set(CHECKS) >= set(TASKS), "every tiny task says which checks apply (CHECKS)"


# ------------------------------------------------------------------------------------------ builds
@pytest.mark.parametrize("method", _methods("builds"))
def test_builds(method, tasks):
    task = tasks(method)
    task.check_builds(method)


# -------------------------------------------------------------------------------------------- acts
def assert_actions_in(space: gym.Space, actions: torch.Tensor, n: int) -> None:
    assert isinstance(actions, torch.Tensor), type(actions)
    if isinstance(space, gym.spaces.Discrete):
        assert actions.shape == (n,) and not actions.is_floating_point(), (actions.shape, actions.dtype)
        assert ((actions >= space.start) & (actions < space.start + space.n)).all(), actions
    else:
        assert actions.shape == (n, *space.shape), actions.shape
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        assert torch.isfinite(actions).all() and ((actions >= low) & (actions <= high)).all(), actions


@pytest.mark.parametrize("method", _methods("acts"))
def test_acts(method, tasks):
    task = tasks(method)
    if not isinstance(task, AgentTask):
        task.check_acts(method)
        return
    agent = task.build(method)
    obs = task.observations(method)
    n = len(obs)
    for deterministic in (True, False):
        agent.reset_episodes(np.ones(n, bool))
        assert_actions_in(agent.action_space, agent.act(obs, deterministic=deterministic), n)
    # a deterministic action depends on the agent's state and the observation only (for the
    # methods that sample when acting: on the random state too, which then reproduces it)
    state = copy.deepcopy(agent.state_dict())
    seeds = (1, 1) if method.name in SAMPLES_WHEN_DETERMINISTIC else (1, 2)
    actions = []
    for seed in seeds:
        agent.load_state_dict(copy.deepcopy(state))
        agent.reset_episodes(np.ones(n, bool))
        torch.manual_seed(seed)
        actions.append(agent.act(obs, deterministic=True))
    assert torch.equal(*actions), actions


# ----------------------------------------------------------------------------------------- updates
@pytest.mark.parametrize("method", _methods("updates"))
def test_updates(method, tasks):
    task = tasks(method)
    subject = task.build(method)
    before = task.weights(subject)
    metrics = task.update(subject, method)
    assert metrics, "an update returns its metrics"
    bad = {k: v for k, v in metrics.items() if not torch.isfinite(torch.as_tensor(v)).all()}
    assert not bad, f"non-finite metrics: {bad}"
    after = task.weights(subject)
    assert len(before) == len(after) and any(not torch.equal(b, a) for b, a in zip(before, after)), (
        "one update changed no parameter"
    )


# ------------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("method", _methods("saves"))
def test_saves_and_loads_bit_exactly(method, tasks, tmp_path):
    task = tasks(method)
    subject = task.build(method, seed=0)
    task.update(subject, method)  # optimiser moments, counters and targets are part of the state
    save_checkpoint(tmp_path / "ck", subject.state_dict())
    state, _ = load_checkpoint(tmp_path / "ck")
    fresh = task.build(method, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(task.weights(subject), task.weights(fresh))), (
        "the fresh build equals the updated one: the check could not tell a load from none"
    )
    fresh.load_state_dict(state)
    assert_same_state(subject.state_dict(), fresh.state_dict())
    if isinstance(task, AgentTask):
        obs = task.observations(method)
        actions = []
        for agent in (subject, fresh):
            agent.reset_episodes(np.ones(len(obs), bool))
            torch.manual_seed(3)
            actions.append(agent.act(obs, deterministic=True))
        assert torch.equal(*actions), actions
    for one in (subject, fresh):  # the next update, from the same random state
        torch.manual_seed(4)
        task.update(one, method)
    assert_same_state(subject.state_dict(), fresh.state_dict())


# ------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("method", _methods("resumes"))
def test_resumes_to_exactly_the_uninterrupted_result(method, tasks, tmp_path):
    """N steps with evaluations every N/2 in one go, against the same run killed right after its
    checkpoint at N/2 and rerun: the same final return, curve and final weights."""
    task = tasks(method)
    half = task.train_settings(method)["steps"] // 2
    whole = task.train(method, tmp_path / "whole")
    assert_same_state(
        whole.final, whole.checkpoint["agent"], "the agent the run ended with vs its last checkpoint"
    )
    killed = task.train(method, tmp_path / "cut", die_at=half)
    rest = task.train(method, tmp_path / "cut")
    assert rest.resumed_at == half, "the rerun did not resume from the killed run's checkpoint"
    got, want = rest.summary, whole.summary
    assert got["final_return"] == want["final_return"], (got["curve"], want["curve"])
    assert _timeless(got["curve"]) == _timeless(want["curve"])
    kept = killed.checkpoint["loop"]["curve"]
    assert got["curve"][: len(kept)] == kept  # the first session's points, as checkpointed
    assert_same_state(whole.checkpoint["agent"], rest.checkpoint["agent"], "final weights")


def _timeless(curve: list[dict]) -> list[dict]:
    return [{k: v for k, v in point.items() if k != "wall_s"} for point in curve]


# ----------------------------------------------------------------------------------- bad config
def _names(field: str):
    return re.compile(rf"(?<![\w]){re.escape(field)}(?![\w])")


@pytest.mark.parametrize("method", _methods("rejects"))
def test_rejects_a_bad_config_value_naming_the_field(method, tasks):
    field, value = bad_value(method)
    with pytest.raises(ConfigError) as err:
        apply_overrides(method.config_cls(), {field: value})
    assert _names(field).search(str(err.value)), f"{field}={value!r}: {err.value}"

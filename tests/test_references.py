"""Tests for named benchmark suites and per-task reference returns."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest

from gendm.envs.references import (
    REFERENCES,
    SUITES,
    TaskReference,
    measure_random_return,
    normalised_score,
    reference,
    suite_tasks,
)

ALL_TASKS = sorted({t for tasks in SUITES.values() for t in tasks})


def test_required_suites_present() -> None:
    assert set(SUITES["classic"]) >= {"CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0"}
    mujoco = {"InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"}
    assert set(SUITES["mujoco"]) >= mujoco
    assert suite_tasks("classic") == SUITES["classic"]


@pytest.mark.parametrize("env_id", ALL_TASKS)
def test_suite_task_is_registered_and_referenced(env_id: str) -> None:
    assert gym.spec(env_id).id == env_id
    ref = reference(env_id)
    assert isinstance(ref, TaskReference)
    assert ref.env_id == env_id
    assert math.isfinite(ref.random_return) and math.isfinite(ref.expert_return)
    assert ref.expert_return > ref.random_return
    assert ref.random_source.startswith("measured by gendm")
    assert ref.expert_source


def test_references_keys_match_env_ids() -> None:
    assert all(key == ref.env_id for key, ref in REFERENCES.items())


def test_normalised_score() -> None:
    ref = REFERENCES["Hopper-v5"]
    assert normalised_score("Hopper-v5", ref.random_return) == pytest.approx(0.0)
    assert normalised_score("Hopper-v5", ref.expert_return) == pytest.approx(1.0)
    mid = (ref.random_return + ref.expert_return) / 2
    assert normalised_score("Hopper-v5", mid) == pytest.approx(0.5)
    assert normalised_score("NoSuchEnv-v0", 1.0) is None
    assert reference("NoSuchEnv-v0") is None


def test_unknown_suite_suggests_close_match() -> None:
    with pytest.raises(KeyError, match=r"Did you mean 'mujoco'\?.*classic, imitation, mujoco"):
        suite_tasks("mujuco")
    with pytest.raises(KeyError, match="Available suites"):
        suite_tasks("zzz")


def test_cartpole_random_return_matches_recorded() -> None:
    episodes = 20
    mean, std = measure_random_return("CartPole-v1", episodes=episodes, seed=0)
    recorded = REFERENCES["CartPole-v1"].random_return
    assert 15.0 < recorded < 30.0  # a uniform random CartPole policy lasts ~22 steps
    # 4 standard errors of the mean; the random-policy return std on CartPole is ~11-15.
    assert abs(mean - recorded) < 4 * max(std, 10.0) / math.sqrt(episodes)
    assert measure_random_return("CartPole-v1", episodes=episodes, seed=0) == (mean, std)  # seeded


def test_measure_rejects_zero_episodes() -> None:
    with pytest.raises(ValueError):
        measure_random_return("CartPole-v1", episodes=0)

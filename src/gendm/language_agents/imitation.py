"""Demonstrations in a language agent's own prompt and answer format, for supervised fine-tuning.

A small model cannot follow ReAct's or StateAct's instructions zero-shot, but it can learn them from
examples: :func:`demonstration_pairs` plays an expert (the BabyAI bot, a TextWorld walkthrough) in the
environment while the *agent* builds each turn's prompt exactly as it will at evaluation (task,
history window, StateAct's carried state, valid actions), and pairs it with the answer the agent's
parser reads as the expert's action. :func:`gendm.finetune.sft.supervised_finetune` then trains a
language policy on the pairs.

The expert's thoughts are a fixed sentence ("I will <action>."), and StateAct's state lines are
filled by a rule: the goal is the task text, the inventory is read from "You are carrying ..." and
the location from TextWorld's "-= Room =-" header when the observation has them. The demonstrations
teach the *format* and the action; they carry no reasoning the expert did not write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from gendm.language_agents.base import valid_actions
from gendm.language_agents.react import ReActAgent
from gendm.language_agents.stateact import StateActAgent
from gendm.lm import UNKNOWN

Expert = Callable[[str, dict[str, Any]], str | None]
"""``expert(observation, info) -> action`` (None: the expert has nothing more to say)."""
ExpertFactory = Callable[[gym.Env, dict[str, Any]], Expert]
"""Called right after each ``env.reset``: ``factory(env, info) -> expert`` for that episode."""

_CARRYING = re.compile(r"You are carrying ([^.\n]*)")
_ROOM = re.compile(r"-=\s*(.*?)\s*=-")


def babyai_expert(env: gym.Env, info: dict[str, Any]) -> Expert:
    """The BabyAI bot of a :class:`~gendm.envs.text_minigrid.MiniGridText` env."""
    from gendm.envs.babyai_expert import BabyAIExpert

    bot = BabyAIExpert(env)
    return lambda obs, info: bot()


def walkthrough_expert(env: gym.Env, info: dict[str, Any]) -> Expert:
    """A TextWorld game's walkthrough, one command per step."""
    commands = iter(list(info["walkthrough"]))
    return lambda obs, info: next(commands, None)


def expert_answer(agent: ReActAgent, observation: str, action: str) -> str:
    """The answer ``agent``'s parser reads as ``action``, in the agent's format (module docstring)."""
    thought = f"Thought: I will {action}.\nAction: {action}"
    if not isinstance(agent, StateActAgent):
        return thought
    state = dict(agent.state)
    if m := _CARRYING.search(observation):
        state["inventory"] = m.group(1).strip()
    if m := _ROOM.search(observation):
        state["current location"] = m.group(1).strip()
    return f"{agent.render_state(state)}\n{thought}"


def demonstration_pairs(
    agent: ReActAgent, env: gym.Env, expert: ExpertFactory, episodes: int, seed: int = 0
) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of ``episodes`` expert episodes (reset seeds ``seed, seed+1, ...``)."""
    pairs = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        agent.reset(obs, info, seed=seed + i)
        policy, done = expert(env, info), False
        while not done:
            action = policy(obs, info)
            if action is None:
                break
            valid = valid_actions(env, info)
            answer = expert_answer(agent, obs, action)
            pairs.append((agent.prompt(obs, valid), answer))
            step = agent.parser(valid)(answer)
            if step is UNKNOWN:
                raise ValueError(f"the expert's action {action!r} is not among the valid actions {valid}")
            agent.history.append(agent.turn_from(obs, step))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    return pairs

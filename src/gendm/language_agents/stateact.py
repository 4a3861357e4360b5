"""StateAct (Rozanov & Rei, 2024): ReAct plus an explicit state the model writes and carries.

Each answer has five lines: "Goal:", "Current location:", "Inventory:", "Thought:", "Action:". The
state lines are parsed and fed back: every history turn shows the state written at that turn, and the
prompt ends with "Your state after the last turn:" holding the latest state, so the goal and the
inventory survive even when the turns that established them have left the history window (the
paper's point: self-prompted state tracking keeps long episodes on track without a larger context).
A state line the model omits keeps its previous value; only the action is required.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gendm.language_agents.base import Turn
from gendm.language_agents.react import ReActAgent, ReActParser, ReActStep

STATE_KEYS = ("goal", "current location", "inventory")
_LINE = re.compile(
    r"^\s*[*#>-]*\s*(goal|current location|location|inventory|thought|action)\s*[*]*\s*:\s*(.*?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class StateActStep(ReActStep):
    state: dict[str, str] = field(default_factory=dict)


class StateActParser(ReActParser):
    """A ReAct parser that also reads the state lines ("location:" is read as "current location")."""

    def __init__(self, valid: Sequence[str]) -> None:
        super().__init__(valid)
        self.format_hint = (
            'Reply with five lines: "Goal: ...", "Current location: ...", "Inventory: ...", '
            f'"Thought: ...", "Action: <action>", where <action> is exactly one of: {", ".join(valid)}.'
        )

    def fields(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for m in _LINE.finditer(text):
            key = m.group(1).lower()
            found.setdefault("current location" if key == "location" else key, m.group(2))
        return found

    def step(self, fields: dict[str, str], action: str) -> StateActStep:
        state = {k: fields[k] for k in STATE_KEYS if fields.get(k)}
        return StateActStep(fields.get("thought", ""), action, state)


class StateActAgent(ReActAgent):
    """ReAct with an explicit, carried state (module docstring)."""

    name = "stateact"
    answer_format = (
        "Each turn, first update your state, then think, then act. Answer with exactly five lines:\n"
        "Goal: <the goal, in your words>\n"
        "Current location: <where you are>\n"
        "Inventory: <what you carry>\n"
        "Thought: <one sentence of reasoning about what to do next>\n"
        "Action: <exactly one of the valid actions>"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: dict[str, str] = {}

    def reset(self, observation: str, info: dict[str, Any] | None = None, seed: int | None = None) -> None:
        super().reset(observation, info, seed)
        self.state = {"goal": self.task, "current location": "unknown", "inventory": "unknown"}

    def parser(self, valid: Sequence[str]) -> StateActParser:
        return StateActParser(valid)

    def turn_from(self, observation: str, step: ReActStep) -> Turn:
        if isinstance(step, StateActStep):
            self.state = {**self.state, **step.state}
        return Turn(observation, step.action, thought=step.thought, state=dict(self.state))

    def render_state(self, state: dict[str, str]) -> str:
        return "\n".join(f"{k.capitalize()}: {state.get(k, 'unknown')}" for k in STATE_KEYS)

    def render_turn(self, turn: Turn) -> str:
        state = self.render_state(turn.state) + "\n" if turn.state else ""
        return f"Observation: {turn.observation}\n{state}Thought: {turn.thought}\nAction: {turn.action}"

    def preamble(self) -> list[str]:
        return [f"Your state after the last turn:\n{self.render_state(self.state)}"]

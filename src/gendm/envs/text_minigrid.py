"""A text view of MiniGrid / BabyAI: sentences in, sentences out, for language-model agents.

``MiniGridText(env)`` wraps any MiniGrid or BabyAI environment. Its observation is a string built from
the agent's egocentric partial view (the same 7x7 view a pixel agent gets), so a text agent knows no
more than an image agent would::

    Mission: go to the red ball.
    You see a red ball 2 steps ahead and 1 to the left, a closed yellow door 3 steps ahead.
    In front of you: the way is clear for 2 steps.
    You are carrying nothing.

Positions are relative to the agent: "ahead" is the facing direction, "to the left" / "to the right"
are sideways offsets. Objects are listed nearest first (then left to right), so the text is a
deterministic function of the state.

**Action space.** ``gym.spaces.Text``: the agent sends free text, as a language model does. The valid
commands are :data:`ACTION_TEXTS` (``env.action_texts``), one per MiniGrid action; short aliases
("left", "forward", "pickup", "open", ...) are accepted, and otherwise gendm's
:class:`~gendm.core.parsing.ActionParser` reads a longer answer ("I will turn left.") when it names
exactly one command. A Discrete space was not chosen because the point of these environments is that
the *parsing* is part of the task: a language agent can say something that is no action at all.

**Invalid actions.** Text that does not resolve to one command takes *no* environment step: the state
is unchanged, the observation starts with ``invalid action '<text>': ...`` followed by the unchanged
description, the reward is ``-invalid_penalty`` (0 by default, so returns stay MiniGrid's [0, 1]),
``info["invalid_action"]`` is True, and the attempt still counts toward the step limit (the wrapper
truncates after ``max_steps`` attempts, valid or not; by default the wrapped env's own ``max_steps``),
so an agent cannot babble forever. MiniGrid's success reward ``1 - 0.9 * steps / max_steps`` counts
only real steps.

**Captions.** ``info["caption"]`` is a short, deterministic sentence about what this step did:
"you picked up the blue key", "you opened the red door", "you bumped into the wall", "you see a green
ball" (objects seen for the first time this episode, by colour and type), "you completed the mission",
"you stepped into lava".
Several events are joined with "; ". They are the event stream that a language-model feedback reward
(ELLM / ONI / Motif style) annotates, which is why they name things the same way every time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid and BabyAI ids with Gymnasium)
import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT
from minigrid.core.world_object import Box, Door, WorldObj

from gendm.core.errors import ConfigError
from gendm.core.parsing import UNKNOWN, ActionParser

ACTION_TEXTS: tuple[str, ...] = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
"""The text command for each MiniGrid action, in MiniGrid's action order (index = ``Actions`` value)."""

ALIASES: dict[str, str] = {
    "left": "turn left",
    "right": "turn right",
    "forward": "go forward",
    "move forward": "go forward",
    "go ahead": "go forward",
    "pickup": "pick up",
    "pick": "pick up",
    "take": "pick up",
    "put down": "drop",
    "open": "toggle",
    "use": "toggle",
}
"""Short forms accepted exactly (after lower-casing and stripping punctuation)."""

TEXT_CHARSET = string.printable
_OBJECTS = ("door", "key", "ball", "box", "goal", "lava")
"""Cell types that are described; walls are only mentioned when they are right in front."""
_DOOR_STATES = {0: "open", 1: "closed", 2: "locked"}


class TextStep(NamedTuple):
    """One step of a text episode: what the agent read, what it said, and what came of it."""

    observation: str
    action: str
    reward: float
    done: bool
    caption: str


def _plural(n: int, word: str = "step") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _with_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _noun(type_idx: int, color_idx: int, state: int) -> str:
    """'red key', 'locked yellow door', 'goal square', 'lava' (no article)."""
    kind, color = IDX_TO_OBJECT[type_idx], IDX_TO_COLOR[color_idx]
    if kind == "goal":
        return "goal square"
    if kind == "lava":
        return "patch of lava"
    if kind == "door":
        return f"{_DOOR_STATES.get(state, 'closed')} {color} door"
    return f"{color} {kind}"


def _obj_noun(obj: WorldObj) -> str:
    """The noun of a world object (as held or in the grid), without the door's state."""
    if obj.type == "wall":
        return "wall"
    if obj.type in ("goal", "lava"):
        return _noun(obj.encode()[0], obj.encode()[1], 0)
    return f"{obj.color} {obj.type}"


def _where(ahead: int, right: int) -> str:
    """'2 steps ahead and 1 to the left', '1 step to the right', ... relative to the agent."""
    side = f"{abs(right)} to the {'left' if right < 0 else 'right'}" if right else ""
    if ahead and side:
        return f"{_plural(ahead)} ahead and {side}"
    if ahead:
        return f"{_plural(ahead)} ahead"
    return f"{_plural(abs(right))} to the {'left' if right < 0 else 'right'}"


def visible_objects(image: np.ndarray) -> list[tuple[str, int, int]]:
    """(noun, steps ahead, steps right) of each object in an egocentric MiniGrid view, nearest first.

    ``image`` is MiniGrid's encoded view, shape (V, V, 3), indexed [column, row]; the agent stands at
    column V // 2 of the last row, facing row 0.
    """
    view = image.shape[0]
    ax, ay = view // 2, view - 1
    found = []
    for x in range(view):
        for y in range(view):
            type_idx, color_idx, state = (int(v) for v in image[x, y])
            if (x, y) == (ax, ay) or IDX_TO_OBJECT[type_idx] not in _OBJECTS:
                continue
            found.append((_noun(type_idx, color_idx, state), ay - y, x - ax))
    return sorted(found, key=lambda o: (o[1] + abs(o[2]), o[1], o[2]))


def _front(image: np.ndarray) -> str:
    """What is directly ahead: a blocking cell, or how many free steps the view shows."""
    view = image.shape[0]
    ax, ay = view // 2, view - 1
    free = 0
    for y in range(ay - 1, -1, -1):
        type_idx, color_idx, state = (int(v) for v in image[ax, y])
        kind = IDX_TO_OBJECT[type_idx]
        if kind in ("empty", "floor") or (kind == "door" and state == 0 and y < ay - 1):
            free += 1
            continue
        if y == ay - 1:
            if kind == "wall":
                return "a wall"
            if kind == "unseen":
                return "something you cannot see"
            return f"{_with_article(_noun(type_idx, color_idx, state))}"
        break
    return f"the way is clear for {_plural(free)}"


def describe(image: np.ndarray, mission: str, carrying: WorldObj | None) -> str:
    """The text observation for one egocentric view: mission, visible objects, what is ahead, what is held."""
    objects = visible_objects(image)
    seen = ", ".join(f"{_with_article(noun)} {_where(ahead, right)}" for noun, ahead, right in objects)
    held = _with_article(_obj_noun(carrying)) if carrying is not None else "nothing"
    return "\n".join(
        [
            f"Mission: {mission}.",
            f"You see {seen}." if seen else "You see no objects.",
            f"In front of you: {_front(image)}.",
            f"You are carrying {held}.",
        ]
    )


class MiniGridText(gym.Wrapper):
    """Text observations and text actions for a MiniGrid / BabyAI env; see the module docstring.

    ``invalid_penalty`` is subtracted from the reward of an unparseable action; ``max_steps`` (default:
    the wrapped env's ``max_steps``, read at each reset) bounds the number of attempts, valid or not.
    """

    def __init__(self, env: gym.Env, invalid_penalty: float = 0.0, max_steps: int | None = None) -> None:
        super().__init__(env)
        if not hasattr(env.unwrapped, "gen_obs"):
            raise ConfigError(f"MiniGridText needs a MiniGrid/BabyAI env, got {env.unwrapped!r}.")
        self.invalid_penalty = float(invalid_penalty)
        self._max_steps = max_steps
        self.max_steps = 0
        """The attempt limit of the current episode (BabyAI levels set theirs at reset)."""
        self.action_texts = ACTION_TEXTS
        self.action_space = gym.spaces.Text(max_length=256, charset=TEXT_CHARSET)
        self.observation_space = gym.spaces.Text(max_length=8192, charset=TEXT_CHARSET)
        self._parser = ActionParser(list(ACTION_TEXTS))
        self._steps = 0
        self._seen: set[str] = set()
        self._last_text = ""

    # -- parsing ---------------------------------------------------------------------------------
    def parse_action(self, text: Any) -> int | None:
        """The MiniGrid action index for ``text``, or None when it names no single command."""
        if not isinstance(text, str):
            return None
        key = re.sub(r"\s+", " ", text.strip().strip(".!\"'`*").strip().lower())
        key = ALIASES.get(key, key)
        if key in ACTION_TEXTS:
            return ACTION_TEXTS.index(key)
        parsed = self._parser(text)
        return None if parsed is UNKNOWN else ACTION_TEXTS.index(parsed)

    # -- gym API ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        _, info = self.env.reset(seed=seed, options=options)
        self.max_steps = int(self._max_steps if self._max_steps is not None else self.env.unwrapped.max_steps)
        self._steps = 0
        self._seen = set()
        text, new = self._observe()
        info = dict(info, caption=self._see_caption(new), invalid_action=False)
        return text, info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict]:
        self._steps += 1
        truncated_by_limit = self._steps >= self.max_steps
        index = self.parse_action(action)
        if index is None:
            shown = action if isinstance(action, str) else repr(action)
            text = f"invalid action {shown[:80]!r}: say one of {', '.join(ACTION_TEXTS)}.\n{self._last_text}"
            info = {"invalid_action": True, "caption": "invalid action"}
            penalty = -self.invalid_penalty if self.invalid_penalty else 0.0
            return text, penalty, False, truncated_by_limit, info
        caption_result = self._watch(index)
        _, reward, terminated, truncated, info = self.env.step(index)
        event = caption_result()
        text, new = self._observe()
        events = [event, self._see_caption(new)]
        if terminated:
            events.append(self._end_caption(float(reward)))
        info = dict(info, invalid_action=False, caption="; ".join(e for e in events if e))
        return text, float(reward), bool(terminated), bool(truncated or truncated_by_limit), info

    # -- internals -------------------------------------------------------------------------------
    def _observe(self) -> tuple[str, list[str]]:
        """Describe the current view; also return the objects (colour + type) seen for the first time."""
        u = self.env.unwrapped
        obs = u.gen_obs()
        objects = visible_objects(obs["image"])
        new = []
        for noun, _, _ in objects:
            ident = noun.split(" ", 1)[1] if noun.endswith(" door") else noun  # a door's state may change
            if ident not in self._seen:
                self._seen.add(ident)
                new.append(ident)
        self._last_text = describe(obs["image"], obs["mission"], u.carrying)
        return self._last_text, new

    def _end_caption(self, reward: float) -> str:
        if reward > 0:
            return "you completed the mission"
        u = self.env.unwrapped
        cell = u.grid.get(*u.agent_pos)
        in_lava = cell is not None and cell.type == "lava"
        return "you stepped into lava" if in_lava else "you failed the mission"

    @staticmethod
    def _see_caption(new: list[str]) -> str:
        if not new:
            return ""
        names = [_with_article(n) for n in new]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"you see {listed}"

    def _watch(self, index: int) -> Callable[[], str]:
        """Record the state that ``index`` acts on; the returned function captions the result."""
        u = self.env.unwrapped
        pos, carrying = tuple(int(v) for v in u.agent_pos), u.carrying
        fx, fy = (int(v) for v in u.front_pos)
        front = u.grid.get(fx, fy)
        door_state = (front.is_open, front.is_locked) if isinstance(front, Door) else None
        name = ACTION_TEXTS[index]

        def caption() -> str:
            if name in ("turn left", "turn right"):
                return f"you turned {name.split()[1]}"
            if name == "go forward":
                if tuple(int(v) for v in u.agent_pos) != pos:
                    return "you moved forward"
                return f"you bumped into the {_obj_noun(front) if front is not None else 'edge'}"
            if name == "pick up":
                if carrying is None and u.carrying is not None:
                    return f"you picked up the {_obj_noun(u.carrying)}"
                return "you are already carrying something" if carrying is not None else "nothing to pick up"
            if name == "drop":
                if carrying is not None and u.carrying is None:
                    return f"you dropped the {_obj_noun(carrying)}"
                return "you cannot drop anything here" if carrying is not None else "you have nothing to drop"
            if name == "toggle":
                return self._toggle_caption(front, door_state, u.grid.get(fx, fy))
            return "you said you are done"

        return caption

    @staticmethod
    def _toggle_caption(front: WorldObj | None, before: tuple[bool, bool] | None, after: Any) -> str:
        if isinstance(front, Door) and before is not None:
            was_open, was_locked = before
            door = f"{front.color} door"
            if was_locked and front.is_open:
                return f"you unlocked and opened the {door}"
            if was_locked:
                return f"the {door} is locked"
            if not was_open and front.is_open:
                return f"you opened the {door}"
            if was_open and not front.is_open:
                return f"you closed the {door}"
        if isinstance(front, Box) and after is not front:
            inside = f", it held {_with_article(_obj_noun(after))}" if after is not None else ", it was empty"
            return f"you opened the {front.color} box{inside}"
        return "nothing happened"


def make_text_minigrid(
    env_id: str, invalid_penalty: float = 0.0, max_steps: int | None = None, **kwargs: Any
) -> MiniGridText:
    """``MiniGridText(gym.make(env_id, **kwargs))`` for any MiniGrid / BabyAI id (the entry point of
    the ``gendm/...-Text-v0`` ids)."""
    from gendm.envs.make import check_env_id

    check_env_id(env_id)
    return MiniGridText(gym.make(env_id, **kwargs), invalid_penalty=invalid_penalty, max_steps=max_steps)

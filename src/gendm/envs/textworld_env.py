"""TextWorld games as Gymnasium environments: generated locally, played with text commands.

:func:`make_textworld_game` runs TextWorld's own generator (``tw-make custom``, which bundles its
Inform 7 compiler, so no network is needed) and caches the compiled game under ``out_dir`` by its
parameters: the same (seed, world_size, nb_objects, quest_length) gives the same game, built once.

:class:`TextWorldEnv` plays one game file:

- observation: the game's answer to the last command (at reset: the objective and the room
  description, without TextWorld's ASCII banner), whitespace-normalised;
- action: any text command (``gym.spaces.Text``). Commands outside the admissible list are still sent
  to the game, which answers them ("That's not a verb I recognise."), and are flagged with
  ``info["invalid_action"] = True`` (the check is case-insensitive, against the list of the state the
  command was given in);
- reward: the change in the game's score; terminated when the game is won or lost; truncated after
  ``max_steps`` commands;
- info: ``caption`` (the answer text, the event description that a language-model feedback reward
  annotates), ``admissible_commands`` (sorted), ``won``, ``lost``, ``score``, ``max_score``, and
  ``walkthrough``: the commands of TextWorld's winning policy from the start state (at reset), the
  expert demonstration for that game.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import textworld

from gendm.core.errors import ConfigError

TEXT_CHARSET = string.printable
_INFOS = dict(
    admissible_commands=True,
    won=True,
    lost=True,
    score=True,
    max_score=True,
    description=True,
    objective=True,
)


def _tw_make() -> str:
    """Path of the ``tw-make`` script of the running interpreter's environment (or on PATH)."""
    beside = Path(sys.executable).parent / "tw-make"
    found = str(beside) if beside.is_file() else shutil.which("tw-make")
    if found is None:
        raise ConfigError("tw-make was not found: install the text extra (pip install 'gendm[text]').")
    return found


def make_textworld_game(
    out_dir: str | os.PathLike, seed: int, world_size: int = 3, nb_objects: int = 5, quest_length: int = 3
) -> Path:
    """Generate (or reuse) a TextWorld game with ``tw-make custom``; returns the ``.z8`` path.

    The game is built in a temporary folder inside ``out_dir`` and moved into place (metadata
    ``.json`` first, the ``.z8`` last), so a present ``.z8`` is always complete and concurrent callers
    never read a half-written game. Generation takes a few seconds.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"tw-w{world_size}-o{nb_objects}-q{quest_length}-s{seed}"
    game = out / f"{name}.z8"
    if game.is_file() and game.with_suffix(".json").is_file():
        return game
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}-") as tmp:
        cmd = [
            sys.executable, _tw_make(), "custom", "--world-size", str(world_size), "--nb-objects",
            str(nb_objects), "--quest-length", str(quest_length), "--seed", str(seed),
            "--output", str(Path(tmp) / f"{name}.z8"), "-f", "--silent",
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        built = Path(tmp) / f"{name}.z8"
        if run.returncode != 0 or not built.is_file():
            raise ConfigError(
                f"tw-make failed (exit {run.returncode}) for {name}: {(run.stderr or run.stdout)[-2000:]}"
            )
        for suffix in (".json", ".ni", ".z8"):
            if built.with_suffix(suffix).is_file():
                os.replace(built.with_suffix(suffix), game.with_suffix(suffix))
    return game


def _clean(text: str) -> str:
    """Drop the trailing '>' prompt and blank-line runs; keep only printable ASCII."""
    text = re.sub(r"\n\s*>\s*$", "", text.rstrip())
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return "".join(c if c in TEXT_CHARSET else "?" for c in text)


@contextmanager
def _quiet_jericho() -> Iterator[None]:
    """Silence jericho's warnings that a generated game has no walkthrough / valid-action table of its
    own: TextWorld supplies both from the game's metadata, so they say nothing useful here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Unable to (retrieve walkthrough|find valid actions)")
        yield


class TextWorldEnv(gym.Env):
    """One TextWorld game as a Gymnasium env with text observations and actions (module docstring)."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, game_file: str | os.PathLike, max_steps: int = 100) -> None:
        if not Path(game_file).is_file():
            raise ConfigError(
                f"TextWorld game file {str(game_file)!r} does not exist (see make_textworld_game)."
            )
        self.game_file, self.max_steps = str(game_file), int(max_steps)
        self.observation_space = gym.spaces.Text(max_length=16384, min_length=0, charset=TEXT_CHARSET)
        self.action_space = gym.spaces.Text(max_length=256, charset=TEXT_CHARSET)
        infos = textworld.EnvInfos(**_INFOS, extras=["walkthrough"])
        self._env = textworld.start(self.game_file, request_infos=infos)
        self._steps, self._score, self._admissible = 0, 0.0, []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)  # the game is deterministic; the seed only seeds np_random
        with _quiet_jericho():
            state = self._env.reset()
        self._steps, self._score = 0, float(state["score"] or 0)
        text = _clean(f"{state['objective']}\n\n{state['description']}")
        info = self._info(state, text, invalid=False)
        info["walkthrough"] = list(state.get("extra.walkthrough") or [])
        return text, info

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict]:
        command = str(action)
        invalid = command.strip().lower() not in {c.lower() for c in self._admissible}
        with _quiet_jericho():
            state, score, done = self._env.step(command)
        self._steps += 1
        reward, self._score = float(score) - self._score, float(score)
        text = _clean(state["feedback"] or "")
        terminated = bool(state["won"] or state["lost"] or done)
        truncated = not terminated and self._steps >= self.max_steps
        return text, reward, terminated, truncated, self._info(state, text, invalid)

    def _info(self, state: Any, text: str, invalid: bool) -> dict:
        self._admissible = sorted(state["admissible_commands"] or [])
        return {
            "caption": text,
            "admissible_commands": list(self._admissible),
            "invalid_action": invalid,
            "won": bool(state["won"]),
            "lost": bool(state["lost"]),
            "score": float(state["score"] or 0),
            "max_score": float(state["max_score"] or 0),
        }

    def close(self) -> None:
        self._env.close()

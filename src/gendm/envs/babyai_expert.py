"""Expert text demonstrations for BabyAI: the BabyAI bot, speaking :class:`MiniGridText` commands.

The bot (``minigrid.utils.baby_ai_bot.BabyAIBot``) plans from the *environment state* and the
mission's parsed instructions, not from an observation array, so it does not fit gendm's
``EXPERTS`` registry (``policy(obs, rng) -> actions`` on a vector env), and text observations do not
fit the numeric Minari writer either. Demonstrations are therefore plain Python lists of
:class:`~gendm.envs.text_minigrid.TextStep` (observation text, action text, reward, done, caption),
ready for supervised fine-tuning of a language agent or for annotating captions.

The bot solves every level of the BabyAI paper (not the ``PutNext*Carrying`` and ``KeyInBox`` bonus
levels); it only works on BabyAI ids (``BabyAI-*``), whose missions carry instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minigrid.utils.baby_ai_bot import BabyAIBot

from gendm.core.errors import ConfigError
from gendm.envs.text_minigrid import ACTION_TEXTS, MiniGridText, TextStep, make_text_minigrid


class BabyAIExpert:
    """The bot's next command for a :class:`MiniGridText` env, as text: ``expert() -> "turn left"``.

    Build it right after ``env.reset()``; call it once per step and step the env with its answer (it
    assumes its own suggestion was taken).
    """

    def __init__(self, env: MiniGridText) -> None:
        if not hasattr(env.unwrapped, "instrs"):
            raise ConfigError(
                f"The BabyAI bot needs a BabyAI level (an id starting with 'BabyAI-'), got {env.unwrapped!r}."
            )
        self._bot = BabyAIBot(env.unwrapped)

    def __call__(self) -> str:
        return ACTION_TEXTS[int(self._bot.replan())]


def babyai_expert_text_actions(env: MiniGridText) -> BabyAIExpert:
    """A fresh bot for the episode ``env`` has just been reset to (see :class:`BabyAIExpert`)."""
    return BabyAIExpert(env)


@dataclass
class TextEpisode:
    """One demonstration: its steps and whether the mission was completed (positive final reward)."""

    steps: list[TextStep] = field(default_factory=list)
    success: bool = False
    seed: int | None = None


def babyai_expert_rollouts(env_id: str, episodes: int, seed: int = 0, **kwargs) -> list[TextEpisode]:
    """Roll out the BabyAI bot for ``episodes`` episodes of ``env_id`` (reset seeds ``seed, seed+1, ...``).

    ``env_id`` is a BabyAI id (``"BabyAI-GoToRedBall-v0"``) or its text id (``"gendm/...-Text-v0"``);
    ``kwargs`` go to :func:`make_text_minigrid`.
    """
    base = env_id.removeprefix("gendm/").replace("-Text-", "-")
    env = make_text_minigrid(base, **kwargs)
    out = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            expert, episode = BabyAIExpert(env), TextEpisode(seed=seed + i)
            done = False
            while not done:
                action = expert()
                next_obs, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                episode.steps.append(TextStep(obs, action, float(reward), done, info["caption"]))
                episode.success = bool(terminated and reward > 0)
                obs = next_obs
            out.append(episode)
    finally:
        env.close()
    return out

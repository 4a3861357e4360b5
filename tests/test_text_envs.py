"""Text environments: MiniGrid/BabyAI with text observations and actions, the BabyAI bot, TextWorld."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest


def test_importing_gendm_envs_needs_no_text_extra():
    code = (
        "import sys, gymnasium as gym, gendm.envs; "
        "assert 'minigrid' not in sys.modules and 'textworld' not in sys.modules; "
        "assert 'gendm/BabyAI-GoToRedBall-Text-v0' in gym.registry and 'gendm/TextWorld-v0' in gym.registry"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_text_env_reads_actions_without_the_lm_package():
    # envs sit below lm: the action parser comes from gendm.core.parsing, so no language-model code loads
    pytest.importorskip("minigrid")
    code = (
        "import sys, gendm.envs.text_minigrid as t; "
        "assert t.MiniGridText.parse_action; "
        "assert 'gendm.lm' not in sys.modules, sorted(m for m in sys.modules if m.startswith('gendm.'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- MiniGrid / BabyAI as text ----------------------------------------------------------------------


@pytest.fixture
def text_env():
    pytest.importorskip("minigrid")
    from gendm.envs.text_minigrid import make_text_minigrid

    env = make_text_minigrid("BabyAI-GoToRedBall-v0", invalid_penalty=0.1)
    yield env
    env.close()


def test_description_after_known_reset(text_env):
    obs, info = text_env.reset(seed=0)
    u = text_env.unwrapped
    # The layout this test was written against (checked with pprint_grid): agent at (6, 5) facing
    # west, the yellow key south-west of it, the red ball at (2, 2).
    assert (tuple(int(v) for v in u.agent_pos), int(u.agent_dir)) == ((6, 5), 2)
    assert (u.grid.get(5, 6).type, u.grid.get(5, 6).color) == ("key", "yellow")
    assert (u.grid.get(2, 2).type, u.grid.get(2, 2).color) == ("ball", "red")
    lines = obs.splitlines()
    assert lines[0] == "Mission: go to the red ball."
    assert lines[1].startswith(
        "You see a yellow key 1 step ahead and 1 to the left, a grey ball 1 step ahead"
    )
    assert "a red ball 4 steps ahead and 3 to the right" in lines[1]
    assert lines[2:] == ["In front of you: the way is clear for 5 steps.", "You are carrying nothing."]
    assert info["caption"].startswith("you see a yellow key, a grey ball")
    assert text_env.observation_space.contains(obs)

    for action in ("turn left", "go forward", "I will turn right."):  # free text through ActionParser
        obs, *_ = text_env.step(action)
    assert "In front of you: a yellow key." in obs
    assert "You see a yellow key 1 step ahead," in obs


def test_text_actions_move_like_discrete_actions(text_env):
    pytest.importorskip("minigrid")
    from gendm.envs.text_minigrid import ACTION_TEXTS

    raw = gym.make("BabyAI-GoToRedBall-v0")
    spellings = {
        0: ["turn left", "left", "Turn LEFT."],
        1: ["turn right", "right"],
        2: ["go forward", "forward", "move forward"],
        3: ["pick up", "pickup"],
        4: ["drop"],
        5: ["toggle", "open"],
    }
    rng = np.random.default_rng(0)
    text_env.reset(seed=3)
    raw.reset(seed=3)
    for _ in range(40):
        a = int(rng.integers(6))
        text = spellings[a][int(rng.integers(len(spellings[a])))]
        assert text_env.unwrapped is not raw.unwrapped
        _, r1, t1, _, info = text_env.step(text)
        _, r2, t2, _, _ = raw.step(a)
        assert not info["invalid_action"], text
        assert np.array_equal(text_env.unwrapped.agent_pos, raw.unwrapped.agent_pos)
        assert text_env.unwrapped.agent_dir == raw.unwrapped.agent_dir
        assert (r1, t1) == (r2, t2)
        if t1:
            break
    assert len(ACTION_TEXTS) == 7 and ACTION_TEXTS[6] == "done"
    raw.close()


def test_invalid_action_takes_no_step_but_counts(text_env):
    before, _ = text_env.reset(seed=0)
    u = text_env.unwrapped
    pos, direction, steps = tuple(u.agent_pos), u.agent_dir, u.step_count
    for nonsense in ("fly to the moon", "turn left and turn right", "", 3):
        obs, reward, terminated, truncated, info = text_env.step(nonsense)
        assert info["invalid_action"] is True and info["caption"] == "invalid action"
        assert reward == pytest.approx(-0.1) and not terminated and not truncated
        assert obs.startswith("invalid action ") and obs.endswith(before)
        assert (tuple(u.agent_pos), u.agent_dir, u.step_count) == (pos, direction, steps)

    from gendm.envs.text_minigrid import MiniGridText

    limited = MiniGridText(gym.make("BabyAI-GoToRedBall-v0"), max_steps=3)
    limited.reset(seed=0)
    outcomes = [limited.step(a)[3] for a in ("nonsense", "turn left", "nonsense")]
    assert outcomes == [False, False, True]  # invalid attempts count toward the limit
    assert limited.unwrapped.step_count == 1


def test_captions_for_pickup_drop_and_toggle(text_env):
    text_env.reset(seed=0)
    for action in ("turn left", "go forward", "turn right"):
        text_env.step(action)
    obs, _, _, _, info = text_env.step("pick up")
    assert info["caption"] == "you picked up the yellow key"
    assert "You are carrying a yellow key." in obs
    assert text_env.step("pick up")[4]["caption"] == "you are already carrying something"
    assert text_env.step("drop")[4]["caption"] == "you dropped the yellow key"
    assert text_env.step("toggle")[4]["caption"] == "nothing happened"

    from gendm.envs.babyai_expert import babyai_expert_rollouts

    (episode,) = babyai_expert_rollouts("gendm/BabyAI-UnlockLocal-Text-v0", 1, seed=0)
    captions = [s.caption for s in episode.steps]
    assert "you picked up the purple key" in captions
    assert captions[-1] == "you unlocked and opened the purple door; you completed the mission"
    (episode,) = babyai_expert_rollouts("BabyAI-OpenDoor-v0", 1, seed=0)
    assert episode.steps[-1].caption == "you opened the yellow door; you completed the mission"
    assert episode.success and episode.steps[-1].done and episode.steps[-1].reward > 0

    from gendm.envs.text_minigrid import make_text_minigrid

    lava = make_text_minigrid("MiniGrid-LavaGapS5-v0")
    obs, info = lava.reset(seed=0)
    assert "In front of you: a patch of lava." in obs
    assert info["caption"].startswith("you see a patch of lava")
    *_, terminated, _, info = lava.step("go forward")
    assert terminated and info["caption"] == "you moved forward; you stepped into lava"


def test_registered_text_id_makes_the_wrapper():
    pytest.importorskip("minigrid")
    import gendm.envs  # noqa: F401
    from gendm.envs.text_minigrid import ACTION_TEXTS

    env = gym.make("gendm/BabyAI-GoToRedBall-Text-v0", invalid_penalty=0.5)
    obs, _ = env.reset(seed=0)
    assert env.get_wrapper_attr("action_texts") == ACTION_TEXTS
    assert obs.startswith("Mission: go to the red ball.")
    assert env.step("nonsense")[1] == -0.5
    env.close()


@pytest.mark.parametrize("env_id", ["BabyAI-GoToRedBall-v0", "BabyAI-GoToObj-v0"])
def test_babyai_bot_solves_simple_levels(env_id):
    pytest.importorskip("minigrid")
    from gendm.envs.babyai_expert import babyai_expert_rollouts
    from gendm.envs.text_minigrid import ACTION_TEXTS

    episodes = babyai_expert_rollouts(env_id, 20, seed=100)
    assert sum(e.success for e in episodes) >= 18
    for e in episodes:
        obs, action, reward, done, caption = e.steps[0]  # a TextStep unpacks like a tuple
        assert obs.startswith("Mission: ") and action in ACTION_TEXTS and isinstance(caption, str)
        assert isinstance(reward, float) and isinstance(done, bool)
        assert [s.done for s in e.steps] == [False] * (len(e.steps) - 1) + [True]


# -- TextWorld ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tw_game(tmp_path_factory):
    pytest.importorskip("textworld")
    from gendm.envs.textworld_env import make_textworld_game

    out = tmp_path_factory.mktemp("tw")
    game = make_textworld_game(out, seed=7, world_size=3, nb_objects=5, quest_length=3)
    return game


def test_textworld_game_is_cached(tw_game):
    from gendm.envs.textworld_env import make_textworld_game

    mtime = tw_game.stat().st_mtime_ns
    again = make_textworld_game(tw_game.parent, seed=7, world_size=3, nb_objects=5, quest_length=3)
    assert again == tw_game and again.stat().st_mtime_ns == mtime
    assert tw_game.with_suffix(".json").is_file()
    assert not [p for p in tw_game.parent.iterdir() if p.name.startswith(".")]  # no leftover temp dirs


def test_textworld_walkthrough_wins_and_nonsense_is_flagged(tw_game):
    import gendm.envs  # noqa: F401

    env = gym.make("gendm/TextWorld-v0", game_file=str(tw_game), max_steps=20)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "-= " in obs  # the room title
    assert info["walkthrough"] and info["max_score"] > 0 and "look" in info["admissible_commands"]

    obs, reward, terminated, truncated, info = env.step("dance with the moon")
    assert info["invalid_action"] and reward == 0 and not (terminated or truncated)
    assert obs == info["caption"] and "not a verb" in obs

    total = 0.0
    walkthrough = env.reset()[1]["walkthrough"]
    for i, command in enumerate(walkthrough):
        obs, reward, terminated, truncated, info = env.step(command)
        total += reward
        assert not info["invalid_action"], command
        assert terminated == (i == len(walkthrough) - 1)
    assert info["won"] and not info["lost"] and total == info["max_score"]
    env.close()

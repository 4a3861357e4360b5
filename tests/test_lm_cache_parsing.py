"""The persistent response cache (against the loopback server) and the output parsers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.core.errors import ConfigError
from gendm.lm import (
    UNKNOWN,
    ActionParser,
    CacheCorruptedWarning,
    CachedBackend,
    ChoiceParser,
    Completion,
    GenerationSettings,
    LabelParser,
    OpenAICompatibleBackend,
    parse_many_with_retry,
    parse_with_retry,
)


@pytest.fixture
def server():
    s = FakeOpenAIServer()
    yield s
    s.close()


def remote(server: FakeOpenAIServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(server.url, "tiny", timeout_s=2, max_retries=1, backoff_s=0.01)


# -- cache --------------------------------------------------------------------------------------------
def test_second_identical_call_does_not_reach_the_server(server, tmp_path):
    cached = CachedBackend(remote(server), tmp_path / "lm.sqlite")
    first = cached.complete(["a", "b"])
    assert server.total == 2 and cached.stats() == {"hits": 0, "misses": 2, "entries": 2}
    again = cached.complete(["a", "b", "c"], temperature=0.0)  # same settings, other spelling
    assert server.total == 3
    assert [c.text for c in again[:2]] == [c.text for c in first] == ["echo:a", "echo:b"]
    assert again[0].meta == {"cached": True} and again[2].text == "echo:c"
    assert (cached.hits, cached.misses) == (2, 3)
    cached.complete(["a"], max_new_tokens=7)  # other settings: another entry
    assert server.total == 4


def test_cache_survives_reopening(server, tmp_path):
    path = tmp_path / "lm.sqlite"
    with CachedBackend(remote(server), path) as cached:
        cached.complete(["a"])
        cached.chat([[{"role": "user", "content": "hi"}]])
    reopened = CachedBackend(remote(server), path)
    assert reopened.complete(["a"])[0].text == "echo:a"
    assert reopened.chat([[{"role": "user", "content": "hi"}]])[0].text == "chat:hi"
    assert server.total == 2 and reopened.hits == 2
    other_model = CachedBackend(OpenAICompatibleBackend(server.url, "other"), path)
    other_model.complete(["a"])
    assert server.total == 3  # the model id is part of the key


def test_cache_policy_deterministic_only(server, tmp_path):
    cached = CachedBackend(remote(server), tmp_path / "lm.sqlite")
    cached.complete(["s"], temperature=0.8)
    cached.complete(["s"], temperature=0.8)
    assert server.calls["s"] == 2 and cached.stats()["entries"] == 0  # sampled, unseeded: never cached
    cached.complete(["s"], temperature=0.8, seed=1)
    cached.complete(["s"], temperature=0.8, seed=1)
    assert server.calls["s"] == 3  # seeded: cached


def test_failed_answers_are_not_cached(server, tmp_path):
    cached = CachedBackend(remote(server), tmp_path / "lm.sqlite")
    assert not cached.complete(["BAD"])[0].ok
    assert not cached.complete(["BAD"])[0].ok
    assert server.calls["BAD"] == 2 and cached.stats()["entries"] == 0


def test_logprobs_and_embeddings_are_cached(server, tmp_path):
    cached = CachedBackend(remote(server), tmp_path / "lm.sqlite")
    assert cached.logprobs(["the cat"], [" sat down"]) == [-3.5]
    assert cached.logprobs(["the cat"], [" sat down"]) == [-3.5]
    assert server.calls["the cat sat down"] == 1
    e1 = cached.embed(["a", "banana"])
    asked = server.calls["<embed>"]
    e2 = cached.embed(["banana", "a"])
    assert server.calls["<embed>"] == asked
    np.testing.assert_array_equal(e1, e2[::-1])
    assert e2.dtype == np.float32 and e2.shape == (2, 3)


def test_corrupted_cache_file_is_moved_aside_and_rebuilt(server, tmp_path):
    path = tmp_path / "lm.sqlite"
    with CachedBackend(remote(server), path) as cached:
        cached.complete(["a"])
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.warns(CacheCorruptedWarning, match="unreadable"):
        cached = CachedBackend(remote(server), path)
    assert cached.complete(["a"])[0].text == "echo:a"
    assert server.total == 2  # rebuilt empty: asked again
    assert len(list(tmp_path.glob("lm.sqlite.corrupt-*"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CachedBackend(remote(server), path)  # the rebuilt file opens cleanly


def test_truncated_cache_file_is_rebuilt(server, tmp_path):
    path = tmp_path / "lm.sqlite"
    with CachedBackend(remote(server), path) as cached:
        cached.complete([f"prompt {i}" * 50 for i in range(20)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(CacheCorruptedWarning):
        cached = CachedBackend(remote(server), path)
    assert cached.stats()["entries"] == 0


def test_garbage_over_a_file_still_open_is_detected(server, tmp_path):
    path = tmp_path / "lm.sqlite"
    CachedBackend(remote(server), path).complete(["a"])  # left open, as after a crash: a -wal file stays
    path.write_bytes(b"garbage" * 100)
    with pytest.warns(CacheCorruptedWarning, match="bad header"):
        CachedBackend(remote(server), path)


class Crashing:
    """A streaming backend that dies after two answers."""

    model_id = "fake:crashing"
    settings = GenerationSettings()

    def iter_complete(self, prompts, **gen):
        for i, p in enumerate(prompts[:2]):
            yield i, Completion(f"answer {p}")
        raise RuntimeError("killed")

    def complete(self, prompts, **gen):
        return [c for _, c in self.iter_complete(prompts, **gen)]


def test_answers_are_written_as_they_arrive(tmp_path):
    cached = CachedBackend(Crashing(), tmp_path / "lm.sqlite")
    with pytest.raises(RuntimeError, match="killed"):
        cached.complete(["p", "q", "r"])
    assert CachedBackend(Crashing(), tmp_path / "lm.sqlite").stats()["entries"] == 2


# -- parsing ------------------------------------------------------------------------------------------
LABELS = ["positive", "negative", "neutral"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive", "positive"),
        ("  Negative.", "negative"),
        ('{"label": "neutral"}', "neutral"),
        ('Sure! Here you go: {"label": "Positive", "confidence": 0.9}', "positive"),
        ('"negative"', "negative"),
        ("The sentiment of this review is clearly positive.", "positive"),
        ("Label: negative\nReasoning: the user is not positive about it", "negative"),
        ("It could be positive or negative.", UNKNOWN),  # ambiguous: not guessed
        ("I cannot tell.", UNKNOWN),
        ("", UNKNOWN),
        ('{"label": "happy"}', UNKNOWN),
        ("positively", UNKNOWN),  # whole words only
    ],
)
def test_label_parser(text, expected):
    assert (
        LabelParser(LABELS)(text) is expected
        if expected is UNKNOWN
        else LabelParser(LABELS)(text) == expected
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("(B)", "B"),
        ("tie", "tie"),
        ('{"choice": "B"}', "B"),
        ("[[A]]", "A"),
        ("After comparing both, my verdict: [[C]]", "tie"),
        ("Answer: B", "B"),
        ("The better one is Response A because it is concise.", "A"),
        ("Response B is more helpful.", "B"),
        ("Both are equally good, so it is a tie.", "tie"),
        ("Response A is long and Response B is short.", UNKNOWN),
        ("A good question.", UNKNOWN),
        ("no idea", UNKNOWN),
    ],
)
def test_choice_parser(text, expected):
    got = ChoiceParser()(text)
    assert got is UNKNOWN if expected is UNKNOWN else got == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("go north", "go north"),
        ('{"action": "pick up key"}', "pick up key"),
        ("I will pick up key now.", "pick up key"),
        ("Action: open door", "open door"),
        ("Let's go north, then open door.", UNKNOWN),
        ("jump", UNKNOWN),
    ],
)
def test_action_parser(text, expected):
    got = ActionParser(["go north", "go south", "pick up key", "open door"])(text)
    assert got is UNKNOWN if expected is UNKNOWN else got == expected


def test_parser_configuration_errors():
    with pytest.raises(ConfigError):
        LabelParser([])
    with pytest.raises(ConfigError, match="differ"):
        LabelParser(["Yes", "yes"])
    assert repr(UNKNOWN) == "UNKNOWN" and not UNKNOWN


class Scripted:
    """A backend that replays answers in order and records the prompts it saw."""

    model_id = "fake:scripted"
    settings = GenerationSettings()

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list = []

    def _next(self, items):
        self.seen += items
        return [a if isinstance(a, Completion) else Completion(a) for a in self.answers[: len(items)]] + (
            self.answers.__delitem__(slice(0, len(items))) or []
        )

    def complete(self, prompts, **gen):
        return self._next(prompts)

    def chat(self, conversations, **gen):
        return self._next(conversations)


def test_parse_with_retry_first_answer_good():
    r = parse_with_retry(Scripted(["negative"]), "Review: bad.\nSentiment:", LabelParser(LABELS))
    assert r.ok and r.value == "negative" and r.attempts == 1 and r.reason is None


def test_parse_with_retry_restates_the_format_once():
    backend = Scripted(["hmm, hard to say", '{"label": "neutral"}'])
    parser = LabelParser(LABELS)
    r = parse_with_retry(backend, "Review: ok.\nSentiment:", parser)
    assert r.value == "neutral" and r.attempts == 2
    retry_prompt = backend.seen[1]
    assert (
        retry_prompt.startswith("Review: ok.\nSentiment:hmm, hard to say")
        and parser.format_hint in retry_prompt
    )


def test_parse_with_retry_gives_unknown_never_a_default():
    r = parse_with_retry(Scripted(["dunno", "still dunno"]), "Q:", ChoiceParser())
    assert r.value is UNKNOWN and not r.ok and r.attempts == 2
    assert "unreadable answer after 2 attempt(s)" in r.reason and "still dunno" in r.reason


def test_parse_with_retry_backend_error_is_not_retried():
    backend = Scripted([Completion.failed("HTTP 500")])
    r = parse_with_retry(backend, "Q:", ChoiceParser())
    assert r.value is UNKNOWN and "backend error: HTTP 500" in r.reason and len(backend.seen) == 1


def test_parse_with_retry_chat_appends_the_exchange():
    backend = Scripted(["what?", "B"])
    conv = [{"role": "user", "content": "Which is better, A or B?"}]
    r = parse_with_retry(backend, conv, ChoiceParser())
    assert r.value == "B"
    retry = backend.seen[1]
    assert retry[:1] == conv and retry[1] == {"role": "assistant", "content": "what?"}
    assert retry[2]["role"] == "user" and "A, B or tie" in retry[2]["content"]


def test_parse_many_retries_only_unreadable_items():
    backend = Scripted(["positive", "??", "negative", "neutral"])
    results = parse_many_with_retry(backend, ["p1", "p2", "p3"], LabelParser(LABELS))
    assert [r.value for r in results] == ["positive", "neutral", "negative"]
    assert len(backend.seen) == 4 and backend.seen[3].startswith("p2??")


def test_the_parsers_are_one_copy_shared_with_the_text_environments():
    # The parsers read text without a model, so they sit in gendm.core (the text envs use them below lm);
    # gendm.lm's parsing API re-exports the same objects, and UNKNOWN stays one singleton across pickling.
    import pickle

    from gendm.core import parsing as core_parsing
    from gendm.lm import parsing

    assert parsing.UNKNOWN is core_parsing.UNKNOWN is UNKNOWN
    assert (parsing.LabelParser, parsing.ActionParser, parsing.ChoiceParser) == (
        core_parsing.LabelParser,
        core_parsing.ActionParser,
        core_parsing.ChoiceParser,
    )
    assert pickle.loads(pickle.dumps(UNKNOWN)) is UNKNOWN

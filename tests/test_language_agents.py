"""Language agents: ReAct / StateAct plumbing, unreadable answers, the text Q-model and re-ranking.

The language model is a test double (``ScriptedLM``, or the loopback OpenAI-compatible server)
that answers in the agents' formats; the agents, parsers, env wrappers and the Q-model are real.
"""

from __future__ import annotations

import numpy as np
import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.core.errors import ConfigError
from gendm.envs.babyai_expert import BabyAIExpert
from gendm.envs.text_minigrid import ACTION_TEXTS, make_text_minigrid
from gendm.language_agents import (
    LanguageAgentConfig,
    QModel,
    QRerankAgent,
    ReActAgent,
    ReActParser,
    StateActAgent,
    collect_babyai_transitions,
    ranking_accuracy,
    run_episodes,
)
from gendm.language_agents.qmodel import hashed_ngram_embed
from gendm.lm import (
    UNKNOWN,
    CachedBackend,
    Completion,
    GenerationSettings,
    LanguageModel,
    OpenAICompatibleBackend,
)

LEVEL = "BabyAI-GoToRedBallNoDists-v0"


class ScriptedLM:
    """A LanguageModel double: ``respond(prompt_text, n_messages, gen) -> answer``; records requests."""

    model_id = "scripted"
    settings = GenerationSettings()

    def __init__(self, respond, logprob=None) -> None:
        self.respond, self.logprob = respond, logprob
        self.requests: list = []

    def complete(self, prompts, **gen):
        self.requests += prompts
        return [Completion(self.respond(p, 1, gen)) for p in prompts]

    def chat(self, conversations, **gen):
        self.requests += conversations
        return [Completion(self.respond(c[0]["content"], len(c), gen)) for c in conversations]

    def logprobs(self, prompts, continuations):
        return [self.logprob(p, c) for p, c in zip(prompts, continuations)]

    def embed(self, texts):
        return hashed_ngram_embed(texts)


def bot_responder(env):
    """Answers in ReAct format with the BabyAI bot's action (a fresh bot at each episode start)."""
    holder = {}

    def respond(prompt, n_messages, gen):
        if env.unwrapped.step_count == 0 or "bot" not in holder:
            holder["bot"] = BabyAIExpert(env)
        return f"Thought: the ball is somewhere here, so I follow my plan.\nAction: {holder['bot']()}"

    return respond


def test_scripted_lm_is_a_language_model():
    assert isinstance(ScriptedLM(lambda *a: ""), LanguageModel)


def test_react_parser_reads_the_action_line_not_the_thought():
    parse = ReActParser(ACTION_TEXTS)
    step = parse("Thought: I could turn left or go forward; forward is best.\nAction: go forward\n")
    assert step.action == "go forward" and "forward is best" in step.thought
    assert parse("**Action**: Turn Left.").action == "turn left"
    assert parse("Thought: turn left") is UNKNOWN  # no Action line
    assert parse("Action: fly away") is UNKNOWN  # not a valid action


def test_react_solves_a_babyai_level_when_the_model_answers_like_the_bot():
    env = make_text_minigrid(LEVEL)
    lm = ScriptedLM(bot_responder(env))
    agent = ReActAgent(lm)
    stats = run_episodes(agent, env, episodes=3, seed=0)
    assert stats["success_rate"] == 1.0
    assert stats["parse_failures"] == 0 and stats["invalid_actions"] == 0 and stats["retried"] == 0
    assert stats["lm_calls"] == sum(d["steps"] for d in stats["episodes_detail"])
    assert 0 < stats["mean_return"] <= 1
    # the prompt holds the mission, the valid actions and the parsed past thoughts and actions
    prompt = agent.last_prompt
    assert "Task: Mission: go to the red ball." in prompt
    assert "Valid actions: turn left, turn right, go forward" in prompt
    if len(agent.history) > 1:
        assert (
            "Thought: the ball is somewhere here" in prompt
            and f"Action: {agent.history[-2].action}" in prompt
        )


def test_unreadable_answers_are_retried_once_then_fall_back_and_are_counted():
    env = make_text_minigrid(LEVEL, max_steps=5)
    lm = ScriptedLM(lambda prompt, n, gen: "I like turtles.")
    stats = run_episodes(ReActAgent(lm), env, episodes=1, seed=0)
    assert stats["mean_steps"] == 5  # the episode continued to the attempt limit
    assert stats["lm_calls"] == 10 and stats["retried"] == 5 and stats["parse_failures"] == 5
    # default fallback "noop" sends "look": no MiniGrid command, so the wrapper flags it and takes no step
    assert stats["invalid_actions"] == 5 and env.unwrapped.step_count == 0
    retry = lm.requests[1]
    assert len(retry) == 3 and retry[1]["content"] == "I like turtles."
    assert "Action: <action>" in retry[2]["content"]  # the format restated

    random_agent = ReActAgent(lm, LanguageAgentConfig(fallback="random"))
    stats = run_episodes(random_agent, env, episodes=1, seed=0)
    assert stats["parse_failures"] == 5 and stats["invalid_actions"] == 0
    assert all(t.fallback and t.action in ACTION_TEXTS for t in random_agent.history)


def test_a_retry_that_succeeds_is_not_a_failure():
    env = make_text_minigrid(LEVEL, max_steps=3)
    lm = ScriptedLM(lambda prompt, n, gen: "Action: turn left" if n > 1 else "hmm")
    stats = run_episodes(ReActAgent(lm), env, episodes=1, seed=0)
    assert stats["lm_calls"] == 6 and stats["retried"] == 3 and stats["parse_failures"] == 0
    assert stats["invalid_actions"] == 0


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="fallback"):
        LanguageAgentConfig(fallback="pray")


def test_stateact_parses_and_carries_its_state_across_turns():
    env = make_text_minigrid(LEVEL, max_steps=3)
    turn = {"k": 0}

    def respond(prompt, n, gen):
        turn["k"] += 1
        inventory = "Inventory: nothing\n" if turn["k"] == 1 else ""  # omitted later: kept from turn 1
        return (
            f"Goal: reach the red ball\nCurrent location: spot {turn['k']}\n{inventory}"
            "Thought: look around\nAction: turn right"
        )

    lm = ScriptedLM(respond)
    agent = StateActAgent(lm)
    stats = run_episodes(agent, env, episodes=1, seed=0)
    assert stats["parse_failures"] == 0 and stats["mean_steps"] == 3
    prompts = [r[0]["content"] for r in lm.requests]
    assert "Current location: unknown" in prompts[0]  # initial state: goal from the mission
    state_block = prompts[1].split("Your state after the last turn:")[1]
    assert "Current location: spot 1" in state_block and "Inventory: nothing" in state_block
    state_block = prompts[2].split("Your state after the last turn:")[1]
    assert "Current location: spot 2" in state_block and "Inventory: nothing" in state_block
    assert "Goal: reach the red ball" in state_block
    assert agent.history[0].state["current location"] == "spot 1"  # history turns keep their own state
    assert "Current location: spot 1\nInventory: nothing\nThought: look around" in prompts[2]


@pytest.fixture(scope="module")
def trained_q():
    """Q-models fitted on 40 bot+random episodes (MC and fitted-Q targets) and 15 held-out episodes."""
    train = collect_babyai_transitions(LEVEL, episodes=40, seed=0, epsilon=0.5)
    held_out = collect_babyai_transitions(LEVEL, episodes=15, seed=10_000, epsilon=0.5)
    flat = [t for ep in train for t in ep]
    mc, fqi = QModel(seed=0), QModel(seed=0)
    mc.fit(flat, method="mc", epochs=40)
    fqi.fit(flat, method="fqi", epochs=40, fqi_iterations=3)
    return {"mc": mc, "fqi": fqi, "held_out": [t for ep in held_out for t in ep]}


@pytest.mark.parametrize("method", ["mc", "fqi"])
def test_q_model_ranks_the_bots_action_above_a_random_one_on_held_out_states(trained_q, method):
    rate, pairs = ranking_accuracy(trained_q[method], trained_q["held_out"], seed=0)
    print(
        f"[{method}] held-out ranking accuracy (bot action > random other action): {rate:.3f} / {pairs} pairs"
    )
    assert pairs >= 100
    assert rate > 0.7  # chance is 0.5; measured 0.907 (mc) and 0.95+ (fqi) with hashed n-gram embeddings


class PreferQ(QModel):
    def __init__(self, liked: str) -> None:
        super().__init__()
        self.liked = liked

    def score(self, states, actions):
        return np.array([1.0 if a == self.liked else 0.0 for a in actions])


def test_reranking_selects_the_action_the_q_prefers():
    env = make_text_minigrid(LEVEL, max_steps=2)
    prior = {a: -float(i) for i, a in enumerate(ACTION_TEXTS)}  # the LM prefers "turn left" most
    lm = ScriptedLM(lambda *a: "", logprob=lambda p, c: prior[c])
    agent = QRerankAgent(ReActAgent(lm), PreferQ("pick up"), num_candidates=len(ACTION_TEXTS))
    obs, info = env.reset(seed=0)
    agent.reset(obs, info, seed=0)
    assert agent.act(obs, ACTION_TEXTS) == "pick up"
    assert agent.last_candidates[0] == "turn left" and agent.policy.history[-1].action == "pick up"
    # the Q only chooses among the proposals: with the top 2 it cannot reach "pick up"
    agent = QRerankAgent(ReActAgent(lm), PreferQ("pick up"), num_candidates=2)
    agent.reset(obs, info, seed=0)
    assert agent.act(obs, ACTION_TEXTS) == "turn left"


def test_reranking_sampled_proposals_and_softmax_selector():
    answers = ["Action: turn left", "gibberish", "Action: drop", "Action: go forward"]
    lm = ScriptedLM(lambda prompt, n, gen: answers[gen["seed"]])
    agent = QRerankAgent(ReActAgent(lm), PreferQ("drop"), num_candidates=4, proposal="sample")
    agent.reset("Mission: go to the red ball.", {}, seed=0)
    assert agent.act("Mission: go to the red ball.", ACTION_TEXTS) == "drop"
    assert agent.last_candidates == ["turn left", "drop", "go forward"]  # the unreadable one dropped
    assert agent.counters.lm_calls == 4
    soft = QRerankAgent(
        ReActAgent(lm),
        PreferQ("drop"),
        num_candidates=4,
        proposal="sample",
        selector="softmax",
        temperature=0.01,
    )
    soft.reset("Mission: x.", {}, seed=0)
    assert soft.act("Mission: x.", ACTION_TEXTS) == "drop"


def test_reranking_with_the_fitted_q_solves_the_level_under_a_flat_language_prior(trained_q):
    """Best-of-all-actions by the fitted-Q model acts well. (The MC model ranks pairs well too, but
    acting greedily on the behaviour policy's Q loops: measured 0.1 success on 20 episodes.)"""
    q = trained_q["fqi"]
    env = make_text_minigrid(LEVEL)
    lm = ScriptedLM(lambda *a: "", logprob=lambda p, c: 0.0)  # no preference: the Q decides
    stats = run_episodes(QRerankAgent(ReActAgent(lm), q, num_candidates=7), env, episodes=5, seed=500)
    print(f"ReAct+Q with a flat language prior on {LEVEL}: success {stats['success_rate']:.2f}")
    assert stats["success_rate"] >= 0.6


def test_runner_reports_cache_hits(tmp_path):
    env = make_text_minigrid(LEVEL, max_steps=4)
    with CachedBackend(ScriptedLM(lambda *a: "Thought: t\nAction: turn left"), tmp_path / "c.sqlite") as lm:
        first = run_episodes(ReActAgent(lm), env, episodes=1, seed=0)
        second = run_episodes(ReActAgent(lm), env, episodes=1, seed=0)
    assert first["cache_hits"] == 0 and first["lm_calls"] == 4
    assert second["cache_hits"] == 4  # the same greedy prompts are answered from the cache


class BotServer(FakeOpenAIServer):
    """The loopback server, answering chat requests in ReAct format with the BabyAI bot's action."""

    def __init__(self, respond) -> None:
        super().__init__()
        self.respond = respond

    def _handle(self, h, body):
        if h.path != "/v1/chat/completions":
            return super()._handle(h, body)
        with self._lock:
            self.total += 1
        text = self.respond(body["messages"][0]["content"], len(body["messages"]), body)
        choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return self._send(h, 200, {"choices": [choice]})


def test_fake_openai_server_drives_a_react_episode_end_to_end():
    env = make_text_minigrid(LEVEL)
    server = BotServer(bot_responder(env))
    try:
        backend = OpenAICompatibleBackend(server.url, "fake-model", max_retries=0, timeout_s=10)
        stats = run_episodes(ReActAgent(backend), env, episodes=1, seed=3)
    finally:
        server.close()
    assert stats["success_rate"] == 1.0 and stats["parse_failures"] == 0
    assert server.total == stats["lm_calls"] == stats["mean_steps"]


def test_react_plays_a_textworld_game_from_its_admissible_commands(tmp_path):
    pytest.importorskip("textworld")
    from gendm.envs.textworld_env import TextWorldEnv, make_textworld_game

    env = TextWorldEnv(make_textworld_game(tmp_path, seed=3, world_size=2, nb_objects=3, quest_length=2))
    plan: list[str] = []

    def respond(prompt, n, gen):  # follows TextWorld's walkthrough, one command per turn
        if "Recent turns:" not in prompt:
            plan[:] = list(walkthrough)
        return f"Thought: next step of the plan.\nAction: {plan.pop(0)}"

    _, info = env.reset()
    walkthrough = info["walkthrough"]
    lm = ScriptedLM(respond)
    stats = run_episodes(ReActAgent(lm), env, episodes=1, seed=0)
    env.close()
    assert stats["success_rate"] == 1.0 and stats["mean_steps"] == len(walkthrough)
    assert stats["invalid_actions"] == 0 and stats["parse_failures"] == 0
    first = lm.requests[0][0]["content"]
    assert "Valid actions:" in first and walkthrough[0] in first.split("Valid actions:")[1]

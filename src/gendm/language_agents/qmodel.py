"""A step-level Q-model over text: Q(state text, action text), trained from agent trajectories.

As in step-level Q-value models for language agents and Digi-Q's best-of-N policy extraction, the
language policy proposes and a separately learned Q picks. The network is small on purpose: the
texts are embedded once by a frozen embed function (``SentenceEmbedder.default().embed`` —
all-MiniLM-L6-v2 —, a backend's ``embed``, or the dependency-free :func:`hashed_ngram_embed`), and an
MLP reads ``[e_s, e_a, e_s * e_a]``. Embeddings are memoised per text, so a trajectory set with few
distinct actions costs one embedding per distinct state.

Training targets (:meth:`QModel.fit`):

- ``"mc"``: Monte-Carlo returns ``G_t = r_t + gamma G_{t+1}`` of the logged trajectories (a
  truncated episode bootstraps zero). This is the Q of the *behaviour* policy, which is enough to
  rank an expert's action above a random one when the behaviour mixes the two.
- ``"fqi"``: fitted Q-iteration, ``y = r + gamma (1 - terminated) max_a' Q(s', a')`` over the valid
  actions of ``s'``, re-fitted ``fqi_iterations`` times starting from the MC fit (closer to the
  optimal Q; more compute).

:func:`collect_babyai_transitions` logs a BabyAI text level played by the BabyAI bot with random
actions mixed in (probability ``epsilon`` per step); the bot runs in advising mode
(``replan(action_taken)``), so it re-plans around the random detours and the data holds both good and
bad actions from the same states.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gendm.core.errors import ConfigError

EmbedFn = Callable[[list[str]], np.ndarray]


def hashed_ngram_embed(texts: list[str], dim: int = 1024) -> np.ndarray:
    """Word uni- and bigram counts hashed (CRC32) into ``dim`` buckets, L2-normalised. Deterministic,
    no model needed; it keeps word order locally ("2 steps ahead" differs from "2 to the left")."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        words = text.lower().replace(".", " ").replace(",", " ").split()
        for gram in words + [f"{a} {b}" for a, b in itertools.pairwise(words)]:
            out[i, zlib.crc32(gram.encode()) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-8)


@dataclass
class Transition:
    """One logged step: text state, text action, reward, next state and what the expert would do."""

    state: str
    action: str
    reward: float
    next_state: str
    terminated: bool
    next_valid: list[str] = field(default_factory=list)
    expert_action: str | None = None
    """The expert's (BabyAI bot's) suggestion at ``state``, for measuring the ranking."""
    ret: float = 0.0
    """Monte-Carlo return from this step (filled by :func:`monte_carlo_returns`)."""
    valid: list[str] = field(default_factory=list)
    """The valid actions at ``state`` (the alternatives :func:`ranking_accuracy` draws from)."""


def monte_carlo_returns(episode: list[Transition], gamma: float) -> list[Transition]:
    """Fill ``ret`` backwards along one episode; returns the same list."""
    g = 0.0
    for t in reversed(episode):
        g = t.reward + gamma * g * (not t.terminated)
        t.ret = g
    return episode


class QModel(nn.Module):
    """Q(s, a) = MLP([e_s, e_a, e_s * e_a]) over frozen text embeddings (module docstring)."""

    def __init__(self, embed: EmbedFn = hashed_ngram_embed, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.embed_fn = embed
        self.hidden = hidden
        self.seed = seed
        self._memo: dict[str, np.ndarray] = {}
        self.net: nn.Module | None = None

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (memoised per distinct text)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            for t, v in zip(missing, np.asarray(self.embed_fn(missing), dtype=np.float32)):
                self._memo[t] = v
        return torch.from_numpy(np.stack([self._memo[t] for t in texts]))

    def _features(self, states: Sequence[str], actions: Sequence[str]) -> torch.Tensor:
        s, a = self.embed(states), self.embed(actions)
        return torch.cat([s, a, s * a], dim=1)

    def _build(self, dim: int) -> None:
        torch.manual_seed(self.seed)
        h = self.hidden
        self.net = nn.Sequential(
            nn.Linear(3 * dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1)
        )

    @torch.no_grad()
    def score(self, states: Sequence[str], actions: Sequence[str]) -> np.ndarray:
        """Q values, shape ``(len(states),)``; higher is better."""
        if self.net is None:
            raise ConfigError("QModel.score before fit(): train the Q-model first.")
        return self.net(self._features(states, actions)).squeeze(1).numpy()

    def fit(
        self,
        transitions: Sequence[Transition],
        method: str = "mc",
        gamma: float = 0.9,
        epochs: int = 60,
        lr: float = 1e-3,
        batch_size: int = 256,
        fqi_iterations: int = 3,
    ) -> dict[str, float]:
        """Regress Q on MC returns (``ret`` must be filled) or fitted-Q targets; returns the last loss."""
        if method not in ("mc", "fqi"):
            raise ConfigError(f"method must be 'mc' or 'fqi', got {method!r}.")
        if not transitions:
            raise ConfigError("QModel.fit needs at least one transition.")
        x = self._features([t.state for t in transitions], [t.action for t in transitions])
        if self.net is None:
            self._build(x.shape[1] // 3)
        y = torch.tensor([t.ret for t in transitions], dtype=torch.float32)
        loss = self._regress(x, y, epochs, lr, batch_size)
        if method == "fqi":
            r = torch.tensor([t.reward for t in transitions], dtype=torch.float32)
            live = torch.tensor([not t.terminated for t in transitions], dtype=torch.float32)
            for _ in range(fqi_iterations):
                nxt = torch.tensor([self._max_q(t) for t in transitions], dtype=torch.float32)
                loss = self._regress(x, r + gamma * live * nxt, epochs, lr, batch_size)
        return {"loss": loss}

    def _max_q(self, t: Transition) -> float:
        if t.terminated or not t.next_valid:
            return 0.0
        return float(self.score([t.next_state] * len(t.next_valid), t.next_valid).max())

    def _regress(self, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int) -> float:
        assert self.net is not None
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(self.seed)
        loss = torch.zeros(())
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=gen).split(batch_size):
                loss = nn.functional.mse_loss(self.net(x[idx]).squeeze(1), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return float(loss.detach())


def collect_babyai_transitions(
    env_id: str, episodes: int, seed: int = 0, epsilon: float = 0.5, gamma: float = 0.9
) -> list[list[Transition]]:
    """Episodes of ``env_id`` (a BabyAI id) played by the bot with random actions mixed in (module
    docstring); reset seeds ``seed, seed+1, ...``; MC returns filled with ``gamma``."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    from gendm.envs.text_minigrid import ACTION_TEXTS, make_text_minigrid

    env = make_text_minigrid(env_id.removeprefix("gendm/").replace("-Text-", "-"))
    rng = np.random.default_rng(seed)
    out = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            bot, taken, done, episode = BabyAIBot(env.unwrapped), None, False, []
            while not done:
                try:
                    suggestion = ACTION_TEXTS[int(bot.replan(taken))]
                except Exception:  # the bot's advising mode has asserts a random detour can trip
                    bot = BabyAIBot(env.unwrapped)
                    suggestion = ACTION_TEXTS[int(bot.replan())]
                action = str(rng.choice(ACTION_TEXTS)) if rng.random() < epsilon else suggestion
                taken = ACTION_TEXTS.index(action)
                nxt, reward, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
                episode.append(
                    Transition(
                        obs,
                        action,
                        float(reward),
                        nxt,
                        bool(terminated),
                        list(ACTION_TEXTS),
                        suggestion,
                        valid=list(ACTION_TEXTS),
                    )
                )
                obs = nxt
            out.append(monte_carlo_returns(episode, gamma))
    finally:
        env.close()
    return out


def ranking_accuracy(q: QModel, transitions: Sequence[Transition], seed: int = 0) -> tuple[float, int]:
    """How often Q(s, expert action) > Q(s, a random *other* action), over the transitions that have an
    expert action; ties count half. Returns (rate, number of pairs); chance is 0.5."""
    from gendm.envs.text_minigrid import ACTION_TEXTS

    rng = np.random.default_rng(seed)
    pairs = [
        t
        for t in transitions
        if t.expert_action is not None and set(t.valid or ACTION_TEXTS) - {t.expert_action}
    ]
    if not pairs:
        return float("nan"), 0
    others = []
    for t in pairs:
        choices = [a for a in (t.valid or ACTION_TEXTS) if a != t.expert_action]
        others.append(str(rng.choice(choices)))
    states = [t.state for t in pairs]
    good = q.score(states, [t.expert_action for t in pairs])  # type: ignore[misc]
    bad = q.score(states, others)
    wins = (good > bad).astype(float) + 0.5 * (good == bad)
    return float(wins.mean()), len(pairs)


def collect_textworld_transitions(
    game_files: Sequence[str], max_steps: int = 30, seed: int = 0, gamma: float = 0.9
) -> list[list[Transition]]:
    """Episodes on TextWorld games that follow the walkthrough for the first ``d`` commands and then
    play random admissible commands, for every ``d`` from 0 to the walkthrough's length: the states
    on the walkthrough are logged with both the expert command and random ones, as the BabyAI data is.
    MC returns filled with ``gamma``."""
    from gendm.envs.textworld_env import TextWorldEnv

    rng = np.random.default_rng(seed)
    out = []
    for game in game_files:
        env = TextWorldEnv(game, max_steps=max_steps)
        try:
            _, info = env.reset()
            walkthrough = list(info["walkthrough"])
            for d in range(len(walkthrough) + 1):
                obs, info = env.reset()
                episode, done, t = [], False, 0
                while not done:
                    valid = info["admissible_commands"]
                    expert = walkthrough[t] if t < len(walkthrough) and t <= d else None
                    action = expert if t < d and expert is not None else str(rng.choice(valid))
                    nxt, reward, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                    episode.append(
                        Transition(
                            obs,
                            action,
                            float(reward),
                            nxt,
                            bool(terminated),
                            info["admissible_commands"],
                            expert,
                            valid=list(valid),
                        )
                    )
                    obs, t = nxt, t + 1
                out.append(monte_carlo_returns(episode, gamma))
        finally:
            env.close()
    return out

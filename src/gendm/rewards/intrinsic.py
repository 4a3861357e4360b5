"""Intrinsic rewards for exploration, mixed into the environment reward: ``r = r_ext + coef * r_int``.

:class:`IntrinsicReward` is a Gymnasium **vector** wrapper around the *training* env of an agent (PPO
or any other online agent is unchanged; see ``gendm.train.intrinsic``). Why the vector level:

- the evaluation env stays unwrapped, so reported returns are extrinsic only;
- episode statistics are recorded inside each sub-env (``gendm.envs.make_env``), so logged training
  returns are extrinsic as well, which is what "frames to first success" must read;
- RND is a network: one batched forward pass per vector step over all sub-envs, and its training
  batches come from all of them.

With SAME_STEP autoreset the step that ends an episode returns the *next* episode's first
observation; the wrapper scores the transition's real last observation and caption
(``info["final_obs"]``, ``info["final_info"]``), never the reset one.

Sources (``rewards(next_obs, captions, missions) -> (num_envs,)``):

- :class:`LMFeedbackReward` — ONI: each event of the caption is labelled by a
  :class:`~gendm.rewards.annotator.CaptionAnnotator` in the background; 0 until labelled.
- :class:`ModelReward` — Motif: a reward model fit from annotations (:mod:`gendm.rewards.models`).
- :class:`EmbeddingGoalReward` — ELLM-style: cosine similarity of the event's sentence embedding to
  the mission's, 0 below a threshold.
- :class:`RND` — random network distillation (Burda et al., 2019) on observations.

Caption sources divide each event's reward by ``N(event) ** beta`` (:class:`CountNormalizer`), Motif's
count normalisation, so that repeating a rewarded event is worth less and less; counts are per
episode (``episodic=True``, Motif's choice for NetHack) or over the whole run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

from gendm.core.errors import ConfigError
from gendm.envs.captioned import events
from gendm.nn import mlp
from gendm.rewards.annotator import CaptionAnnotator


# ----------------------------------------------------------------------------- count normalisation
class CountNormalizer:
    """``1 / N(key) ** beta`` where N counts this key's occurrences so far (this one included).

    ``episodic=True`` keeps one counter per sub-env, cleared when its episode ends; otherwise one
    counter for the whole run. ``beta=0`` switches the normalisation off.
    """

    def __init__(self, num_envs: int, beta: float = 0.5, episodic: bool = True) -> None:
        if beta < 0:
            raise ConfigError(f"CountNormalizer: beta must be >= 0, got {beta}.")
        self.beta, self.episodic = beta, episodic
        self._counts = [Counter() for _ in range(num_envs if episodic else 1)]

    def __call__(self, env_index: int, key: str) -> float:
        counter = self._counts[env_index if self.episodic else 0]
        counter[key] += 1
        return 1.0 / counter[key] ** self.beta

    def end_episodes(self, done: np.ndarray) -> None:
        if self.episodic:
            for i in np.flatnonzero(done):
                self._counts[i].clear()


# ----------------------------------------------------------------------------------- caption sources
class CaptionReward:
    """Base of the caption sources: sum over a caption's events of ``score(event) / N(event) ** beta``.

    Subclasses implement ``score_events(events, missions) -> list[float]``.
    """

    name = "caption"

    def __init__(self, num_envs: int, beta: float = 0.5, episodic: bool = True) -> None:
        self.counts = CountNormalizer(num_envs, beta, episodic)

    def score_events(self, evs: list[str], missions: list[str]) -> list[float]:
        raise NotImplementedError

    def rewards(self, obs: np.ndarray, captions: Sequence[str], missions: Sequence[str]) -> np.ndarray:
        flat = [(i, e) for i, c in enumerate(captions) for e in events(c)]
        out = np.zeros(len(captions), dtype=np.float32)
        if not flat:
            return out
        scores = self.score_events([e for _, e in flat], [missions[i] for i, _ in flat])
        for (i, e), s in zip(flat, scores):
            factor = self.counts(i, e)  # counted even when unrewarded: the count is of occurrences
            out[i] += s * factor
        return out

    def end_episodes(self, done: np.ndarray) -> None:
        self.counts.end_episodes(done)

    def stats(self) -> dict[str, float]:
        return {}


class LMFeedbackReward(CaptionReward):
    """ONI-style: events are labelled asynchronously by ``annotator``; an unlabelled event pays 0."""

    name = "lm"

    def __init__(self, annotator: CaptionAnnotator, num_envs: int, beta: float = 0.5, episodic: bool = True):
        super().__init__(num_envs, beta, episodic)
        self.annotator = annotator

    def score_events(self, evs: list[str], missions: list[str]) -> list[float]:
        for e, m in zip(evs, missions):
            self.annotator.submit(e, m)
        return [self.annotator.reward(e, m) for e, m in zip(evs, missions)]

    def stats(self) -> dict[str, float]:
        return {f"annotator/{k}": float(v) for k, v in self.annotator.stats().items()}


class ModelReward(CaptionReward):
    """Motif-style: a fitted reward model (``model(captions) -> rewards``), memoised per event."""

    name = "model"

    def __init__(
        self,
        model: Callable[[Sequence[str]], np.ndarray],
        num_envs: int,
        beta: float = 0.5,
        episodic: bool = True,
    ):
        super().__init__(num_envs, beta, episodic)
        self.model = model
        self._memo: dict[str, float] = {}

    def score_events(self, evs: list[str], missions: list[str]) -> list[float]:
        new = [e for e in dict.fromkeys(evs) if e not in self._memo]
        if new:
            self._memo.update(zip(new, (float(v) for v in self.model(new))))
        return [self._memo[e] for e in evs]


class EmbeddingGoalReward(CaptionReward):
    """ELLM-style: ``cos(embed(event), embed(mission))`` when at least ``threshold``, else 0.

    ELLM (Du et al., 2023) compares captions with goals an LLM suggested; here the goal is the
    environment's own mission text, so no generation is needed — only the sentence embedder
    (``SentenceEmbedder.default()``, all-MiniLM-L6-v2). Embeddings are memoised per text.

    The default threshold 0.4 is set from MiniLM's similarities to DoorKey's mission ("use the key to
    open the door and then get to the goal"): picking up the key 0.51, unlocking the door 0.49,
    opening it 0.40, seeing the key 0.47, against 0.14-0.21 for moving, turning and bumping.
    """

    name = "ellm"

    def __init__(
        self, embedder: Any, num_envs: int, threshold: float = 0.4, beta: float = 0.5, episodic: bool = True
    ):
        super().__init__(num_envs, beta, episodic)
        self.embedder, self.threshold = embedder, threshold
        self._memo: dict[str, np.ndarray] = {}

    def _vectors(self, texts: list[str]) -> list[np.ndarray]:
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            vecs = np.asarray(self.embedder.embed(new), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-8)
            self._memo.update(zip(new, vecs))
        return [self._memo[t] for t in texts]

    def similarity(self, captions: Sequence[str], mission: str) -> np.ndarray:
        """Cosine similarity of each caption to ``mission`` (no threshold, no counts)."""
        vecs = self._vectors([*captions, mission])
        return np.array([float(v @ vecs[-1]) for v in vecs[:-1]], dtype=np.float32)

    def score_events(self, evs: list[str], missions: list[str]) -> list[float]:
        ev, mv = self._vectors(evs), self._vectors(missions)
        sims = [float(a @ b) for a, b in zip(ev, mv)]
        return [s if s >= self.threshold else 0.0 for s in sims]


# --------------------------------------------------------------------------------------------- RND
class RND:
    """Random network distillation: reward = ||f_pred(s') - f_target(s')||^2 / running std.

    Trained **online inside the wrapper**: every call scores the batch (the reward uses the predictor
    *before* it sees these observations), stores it, and every ``update_every`` calls takes
    ``epochs`` Adam steps on the stored batch, then clears it. This is the simplest correct design:
    no callback into the agent's loop, the data is exactly the agent's experience, and the update
    cadence is a rollout-sized batch as in the paper. Observations are normalised with running
    mean/std and clipped to [-5, 5] (as in the paper); the reward is divided by the running std of
    the intrinsic rewards (the paper uses the std of discounted intrinsic returns; per-step is
    simpler and keeps the scale comparable across tasks).
    """

    name = "rnd"

    def __init__(
        self,
        obs_dim: int,
        *,
        hidden: tuple[int, ...] = (128, 128),
        feature_dim: int = 64,
        learning_rate: float = 1e-3,
        update_every: int = 32,
        epochs: int = 4,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.target = mlp(obs_dim, feature_dim, hidden, "relu").to(device).requires_grad_(False)
            self.predictor = mlp(obs_dim, feature_dim, hidden, "relu").to(device)
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=learning_rate)
        self.device = torch.device(device)
        self.update_every, self.epochs = update_every, epochs
        self.obs_rms = RunningMeanStd(shape=(obs_dim,))
        self.reward_rms = RunningMeanStd(shape=())
        self._buffer: list[torch.Tensor] = []
        self.updates = 0
        self.last_loss = float("nan")

    def _normalise(self, obs: np.ndarray) -> torch.Tensor:
        x = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)
        return torch.as_tensor(np.clip(x, -5, 5), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def error(self, obs: np.ndarray) -> np.ndarray:
        """Raw prediction error per observation (no reward scaling, no update)."""
        x = self._normalise(np.asarray(obs, dtype=np.float64))
        return (self.predictor(x) - self.target(x)).pow(2).mean(-1).cpu().numpy()

    def update(self, x: torch.Tensor) -> float:
        """One Adam step of the predictor on normalised observations ``x``."""
        loss = (self.predictor(x) - self.target(x)).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        return float(loss.detach())

    def rewards(self, obs: np.ndarray, captions: Sequence[str], missions: Sequence[str]) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)
        self.obs_rms.update(obs)
        err = self.error(obs)
        self.reward_rms.update(err.astype(np.float64))
        self._buffer.append(self._normalise(obs))
        if len(self._buffer) >= self.update_every:
            batch = torch.cat(self._buffer)
            self._buffer.clear()
            for _ in range(self.epochs):
                self.last_loss = self.update(batch)
        return (err / np.sqrt(self.reward_rms.var + 1e-8)).astype(np.float32)

    def end_episodes(self, done: np.ndarray) -> None:
        pass

    def stats(self) -> dict[str, float]:
        out = {"rnd/updates": float(self.updates)}
        if self.updates:
            out["rnd/loss"] = self.last_loss
        return out


# ----------------------------------------------------------------------------------------- wrapper
def _per_env(info: dict, key: str, done: np.ndarray, n: int, default: Any) -> list[Any]:
    """``info[key]`` per sub-env, read from ``final_info`` where the episode just ended."""
    now, final = info.get(key), info.get("final_info", {}).get(key)
    out = []
    for i in range(n):
        src = final if done[i] and final is not None else now
        out.append(default if src is None else src[i])
    return out


class IntrinsicReward(gym.vector.VectorWrapper):
    """``reward = r_ext + coef * source.rewards(next_obs, captions, missions)`` on a vector env.

    ``info["intrinsic_reward"]`` holds the unscaled intrinsic reward of the step; ``stats()`` the mean
    intrinsic reward so far and the source's own statistics. Captions and missions come from
    ``info["caption"]`` / ``info["mission"]`` (e.g. :class:`~gendm.envs.captioned.CaptionedMiniGrid`);
    sources that do not use them (RND) work on any env.
    """

    def __init__(self, env: gym.vector.VectorEnv, source: Any, coef: float = 0.01) -> None:
        super().__init__(env)
        self.source, self.coef = source, float(coef)
        self._sum, self._steps = 0.0, 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self.source.end_episodes(np.ones(self.num_envs, dtype=bool))
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, reward, term, trunc, info = self.env.step(actions)
        done = np.asarray(term) | np.asarray(trunc)
        real = np.array(obs, copy=True)
        for i in np.flatnonzero(done):
            real[i] = info["final_obs"][i]
        captions = _per_env(info, "caption", done, self.num_envs, "")
        missions = _per_env(info, "mission", done, self.num_envs, "")
        r_int = np.asarray(self.source.rewards(real, captions, missions), dtype=np.float32)
        self.source.end_episodes(done)
        self._sum += float(r_int.sum())
        self._steps += len(r_int)
        info = dict(info, intrinsic_reward=r_int)
        return obs, np.asarray(reward, dtype=np.float32) + self.coef * r_int, term, trunc, info

    def stats(self) -> dict[str, float]:
        mean = self._sum / self._steps if self._steps else 0.0
        return {"intrinsic/mean_reward": mean, **self.source.stats()}

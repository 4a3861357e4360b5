"""LOOP: leave-one-out PPO without a critic, for a causal language-model policy.

Chen et al. 2025, "Reinforcement Learning for Long-Horizon Interactive LLM Agents" (Algorithm 1).
Each iteration reads top to bottom:

1. **sample** — take ``prompts_per_iteration`` prompts and let the language model generate
   ``group_size`` (K) completions for each (``model.generate``, plain ancestral sampling at
   ``temperature``: no top-k, no top-p, so the sampling distribution is exactly the policy whose
   log-probabilities are optimised).
2. **score** — ``reward_fn(prompt, completion) -> float`` for each completion.
3. **group_advantage** — the leave-one-out advantage within each prompt's K completions,
   ``A_i = r_i - mean_{j != i} r_j`` (:func:`gendm.finetune.advantage.group_advantage`). No value
   network: the siblings are the baseline, so one copy of the model is all that is kept in memory.
4. **PPO-clip** — the sequence's advantage is broadcast to each of its completion tokens; the
   per-token importance ratio ``rho_t = pi(y_t | ...) / pi_old(y_t | ...)`` against the log-probs
   recorded right after sampling is clipped to ``[1 - clip_eps, 1 + clip_eps]``::

       L = - mean_t  min(rho_t A, clip(rho_t, 1 - eps, 1 + eps) A)

   averaged over the completion tokens of the minibatch (prompt and padding are masked out), for
   ``update_epochs`` epochs of shuffled minibatches of sequences. On the first minibatch of the first
   epoch rho = 1 and the gradient is the plain policy gradient ``-A grad log pi(y_t)``; later
   minibatches reuse the same samples off-policy, which is what makes LOOP more sample-efficient
   than RLOO's single REINFORCE step.

Defaults from the LOOP paper: K = 6 completions per prompt; no KL penalty to a reference model and
no standard-deviation normalisation of the advantages (its ablations found both hurt); per-token
(not per-sequence) importance ratios and clipping; clip eps 0.2 (PPO's). The learning rate, epochs
and minibatch size are gendm's defaults for a small model, not the paper's 32B settings.

Dropout is switched off (``model.eval()``) for the whole run, as TRL does for RL fine-tuning: a
dropout mask would make the first ratio differ from 1 and add noise to every importance weight.
Sampling uses torch's global random state, so seed it (``torch.manual_seed``) for a reproducible run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendm.core.config import Config, field
from gendm.core.errors import ConfigError, TrainingDivergedError
from gendm.finetune.advantage import group_advantage

RewardFn = Callable[[str, str], float]
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean")


@dataclass
class LOOPConfig(Config):
    group_size: int = field(6, ge=2)
    """K: completions sampled per prompt, at least 2 for the leave-one-out baseline (LOOP: 6)."""
    prompts_per_iteration: int = field(8, ge=1)
    """Prompts per iteration; each iteration trains on prompts_per_iteration * group_size samples."""
    max_new_tokens: int = field(64, ge=1)
    """Upper bound on generated tokens per completion."""
    temperature: float = field(1.0, gt=0)
    """Sampling temperature; log-probabilities use the same temperature, so ratios stay consistent."""
    learning_rate: float = field(1e-5, gt=0)
    """AdamW learning rate (gendm default for pretrained LMs; a tiny model from scratch needs ~1e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    update_epochs: int = field(2, ge=1)
    """Epochs of PPO minibatch updates over each iteration's samples."""
    minibatch_size: int = field(16, ge=1)
    """Sequences per minibatch (one optimiser step each)."""
    clip_eps: float = field(0.2, gt=0, lt=1)
    """PPO clip range of the per-token importance ratio (LOOP: 0.2)."""
    normalize_std: bool = False
    """Divide advantages by the group's reward std (GRPO-style; LOOP: off)."""
    kl_coef: float = field(0.0, ge=0)
    """Weight of a per-token KL penalty (k3 estimator) to the frozen initial model (LOOP: 0, off)."""
    loss_agg: str = field("token_mean", choices=LOSS_AGGREGATIONS)
    """token_mean: average over all completion tokens of a minibatch; sequence_mean: per sequence first."""
    max_grad_norm: float = field(1.0, gt=0)
    """Global gradient-norm clip."""
    seed: int = 0
    """Seed of the prompt order and minibatch shuffling (sampling uses torch's global RNG)."""


@dataclass
class Rollout:
    """One iteration's samples: K completions per prompt, contiguous by prompt."""

    input_ids: Tensor
    """(B, T) left-padded prompt, then completion, then right padding after the first EOS."""
    attention_mask: Tensor
    """(B, T) 1 at real prompt and completion tokens."""
    loss_mask: Tensor
    """(B, T-1) float, 1 where the *target* ``input_ids[:, 1:]`` is a completion token (EOS included)."""
    old_logprobs: Tensor
    """(B, T-1) log pi_old of each target token at sampling time."""
    rewards: Tensor
    """(B,) reward of each completion."""
    advantages: Tensor
    """(B,) leave-one-out advantage of each completion within its prompt's group."""
    groups: Tensor
    """(B,) index of the prompt each sample belongs to."""
    prompts: list[str]
    completions: list[str]
    ref_logprobs: Tensor | None = None
    """(B, T-1) log-probs under the frozen reference model, when kl_coef > 0."""


def token_logprobs(model: Any, input_ids: Tensor, attention_mask: Tensor, temperature: float = 1.0) -> Tensor:
    """``log pi(input_ids[:, t+1] | input_ids[:, :t+1])`` for every t: shape (B, T-1).

    Position ids follow the attention mask (left padding shifts them), exactly as ``generate`` computes
    them, so these are the log-probs of the distribution that was sampled.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, :-1].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def ppo_token_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    loss_agg: str = "token_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate per token, the sequence advantage broadcast to its tokens.

    Args:
        logprobs: (B, L) current log-probs of the target tokens (with grad).
        old_logprobs: (B, L) log-probs at sampling time.
        advantages: (B,) one advantage per sequence.
        mask: (B, L) 1 at completion tokens; prompt and padding positions count for nothing, whatever
            values they hold.
        clip_eps: clip range of the ratio.
        loss_agg: ``token_mean`` (sum over all masked tokens / their number) or ``sequence_mean``
            (mean over each sequence's tokens, then over sequences).

    Returns:
        The scalar loss and detached statistics (``clip_frac``, ``approx_kl``, ``ratio_mean``).
    """
    mask = mask.to(logprobs.dtype)
    # zero outside the completion (a where, not a product: -inf * 0 would be NaN)
    log_ratio = torch.where(mask > 0, logprobs - old_logprobs, 0.0)
    ratio = log_ratio.exp()
    adv = advantages[:, None].to(logprobs.dtype)
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    loss = _aggregate(per_token, mask, loss_agg)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {
            "clip_frac": (((ratio - 1).abs() > clip_eps).to(mask.dtype) * mask).sum() / n,
            "approx_kl": (((ratio - 1) - log_ratio) * mask).sum() / n,  # k3 estimate of KL(old || new)
            "ratio_mean": (ratio * mask).sum() / n,
        }
    return loss, stats


def _aggregate(per_token: Tensor, mask: Tensor, loss_agg: str) -> Tensor:
    per_token = torch.where(mask > 0, per_token, 0.0)
    if loss_agg == "token_mean":
        return per_token.sum() / mask.sum().clamp(min=1)
    if loss_agg == "sequence_mean":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    raise ConfigError(f"loss_agg must be one of {', '.join(LOSS_AGGREGATIONS)}, got {loss_agg!r}.")


class LOOPTrainer:
    """Fine-tune a ``transformers`` causal LM with LOOP on ``reward_fn(prompt, completion)``.

    ``model`` is any ``AutoModelForCausalLM``-style module (forward takes ``input_ids``,
    ``attention_mask``, ``position_ids`` and returns ``.logits``; it has ``generate``); ``tokenizer``
    its tokenizer. ``from_pretrained(dir)`` loads both from a local Hugging Face model directory.
    """

    def __init__(self, model: Any, tokenizer: Any, reward_fn: RewardFn, config: LOOPConfig | None = None):
        self.config = config = config or LOOPConfig()
        self.model = model.eval()  # no dropout: see the module docstring
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.device = next(model.parameters()).device
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.pad_id is None:
            raise ConfigError("LOOPTrainer: the tokenizer has neither a pad nor an EOS token; set one.")
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.ref_model = None
        if config.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._order: list[int] = []
        self.optimizer_steps = 0
        self.metrics: list[dict[str, float]] = []
        """One dict per iteration: reward, loss, clip_frac, approx_kl, completion length, seconds."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        reward_fn: RewardFn,
        config: LOOPConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> LOOPTrainer:
        """Load model and tokenizer from a local directory (never downloads), like ``HFBackend``."""
        from gendm.lm.hf import _transformers, check_model_dir

        path = Path(path)
        check_model_dir(path)
        transformers = _transformers()
        model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, reward_fn, config)

    # -- 1-3: sample, score, advantages ---------------------------------------------------------------
    def _encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Left-pad the prompts' token ids (no special tokens added; an empty prompt gets BOS/EOS)."""
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_id
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] or [start] for p in prompts]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention_mask[i, width - len(row) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    @torch.no_grad()
    def rollout(self, prompts: Sequence[str]) -> Rollout:
        """Sample K completions per prompt, score them, and compute leave-one-out advantages."""
        cfg = self.config
        k = cfg.group_size
        repeated = [p for p in prompts for _ in range(k)]  # each prompt's K samples are contiguous
        prompt_ids, prompt_mask = self._encode_prompts(repeated)
        out = self.model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            temperature=cfg.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
        )
        completion = out[:, prompt_ids.shape[1] :]
        is_eos = (
            completion == self.eos_id if self.eos_id is not None else torch.zeros_like(completion, dtype=bool)
        )
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # the first EOS is kept
        completion_mask = ~after_eos
        input_ids = out
        attention_mask = torch.cat([prompt_mask, completion_mask.long()], dim=1)
        loss_mask = torch.cat([torch.zeros_like(prompt_mask), completion_mask.long()], dim=1)[:, 1:].float()

        texts = [
            self.tokenizer.decode(row[keep], skip_special_tokens=True)
            for row, keep in zip(completion.cpu(), completion_mask.cpu())
        ]
        rewards = torch.tensor(
            [float(self.reward_fn(p, c)) for p, c in zip(repeated, texts)], device=self.device
        )
        groups = torch.arange(len(prompts), device=self.device).repeat_interleave(k)
        advantages = group_advantage(
            rewards.view(len(prompts), k), method="loo", normalize_std=cfg.normalize_std
        ).flatten()
        old = token_logprobs(self.model, input_ids, attention_mask, cfg.temperature)
        ref = None
        if self.ref_model is not None:
            ref = token_logprobs(self.ref_model, input_ids, attention_mask, cfg.temperature)
        return Rollout(
            input_ids, attention_mask, loss_mask, old, rewards, advantages, groups, repeated, texts, ref
        )

    # -- 4: PPO-clip updates --------------------------------------------------------------------------
    def update(self, rollout: Rollout) -> dict[str, float]:
        """``update_epochs`` epochs of shuffled minibatches of the PPO-clip loss; returns mean statistics."""
        cfg = self.config
        n = rollout.input_ids.shape[0]
        totals: dict[str, Tensor] = {}
        steps = 0
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(0, n, cfg.minibatch_size):
                idx = perm[start : start + cfg.minibatch_size]
                logp = token_logprobs(
                    self.model, rollout.input_ids[idx], rollout.attention_mask[idx], cfg.temperature
                )
                mask = rollout.loss_mask[idx]
                loss, stats = ppo_token_loss(
                    logp, rollout.old_logprobs[idx], rollout.advantages[idx], mask, cfg.clip_eps, cfg.loss_agg
                )
                if rollout.ref_logprobs is not None:
                    d = torch.where(mask > 0, rollout.ref_logprobs[idx] - logp, 0.0)  # k3: exp(d) - d - 1
                    kl = _aggregate(d.exp() - d - 1, mask, cfg.loss_agg)
                    loss = loss + cfg.kl_coef * kl
                    stats["kl_ref"] = kl.detach()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), cfg.max_grad_norm
                )
                self.optimizer.step()
                self.optimizer_steps += 1
                stats["loss"] = loss.detach()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0) + value
                steps += 1
        out = {key: float(value) / steps for key, value in totals.items()}  # one host sync per update
        if not math.isfinite(out["loss"]):
            raise TrainingDivergedError(f"LOOP: the loss became {out['loss']} (statistics: {out}).")
        return out

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: weights (tied ones copied apart, which
        safetensors requires), optimiser, reference model, shuffling state and counters. Sampling's
        global torch RNG state is the caller's to save beside it."""
        state: dict[str, Any] = {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "order": list(self._order),
            "optimizer_steps": self.optimizer_steps,
            "metrics": self.metrics,
        }
        if self.ref_model is not None:
            state["ref_model"] = {k: v.clone() for k, v in self.ref_model.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self._order = [int(i) for i in state["order"]]
        self.optimizer_steps = int(state["optimizer_steps"])
        self.metrics = list(state["metrics"])
        if self.ref_model is not None:
            self.ref_model.load_state_dict(state["ref_model"])

    # -- the loop -------------------------------------------------------------------------------------
    def _next_prompts(self, prompts: Sequence[str]) -> list[str]:
        """The next prompts_per_iteration prompts of a reshuffled pass over the data (epoch-wise)."""
        chosen = []
        while len(chosen) < self.config.prompts_per_iteration:
            if not self._order:
                self._order = torch.randperm(len(prompts), generator=self.generator).tolist()
            chosen.append(prompts[self._order.pop()])
        return chosen

    def train(self, prompts: Sequence[str], iterations: int, progress: bool = True) -> list[float]:
        """Run ``iterations`` LOOP iterations over ``prompts``; return the mean reward of each iteration.

        The mean reward is that of the iteration's samples, drawn before its update. Per-iteration
        statistics are appended to ``self.metrics``.
        """
        if not prompts:
            raise ConfigError("LOOPTrainer.train: prompts is empty.")
        if iterations < 1:
            raise ConfigError(f"LOOPTrainer.train: iterations must be >= 1, got {iterations}.")
        history = []
        bar = tqdm(range(iterations), desc="LOOP", disable=not progress)
        for _ in bar:
            t0 = time.perf_counter()
            rollout = self.rollout(self._next_prompts(prompts))
            stats = self.update(rollout)
            reward = float(rollout.rewards.mean())
            history.append(reward)
            stats.update(
                reward=reward,
                completion_tokens=float(rollout.loss_mask.sum(-1).mean()),
                seconds=time.perf_counter() - t0,
            )
            self.metrics.append(stats)
            bar.set_postfix(reward=f"{reward:.3f}", clip=f"{stats['clip_frac']:.2f}")
        return history

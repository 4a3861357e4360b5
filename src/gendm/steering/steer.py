"""The ``steer`` operator: propose N candidates per context, score them, select or resample.

One operator covers best-of-N, V-GPS (re-rank any policy's proposals by a Q-function), IDQL and
Diffusion-QL action selection, Diffuser plan sorting, SVDD and FK steering:

- **proposal** — a ``GenerativeModel`` (then steering may act *during* denoising) or any callable
  ``propose(cond_rep, n) -> candidates`` (then only the final candidates are scored).
- **scorer** — ``scorer(x, cond_rep) -> (n,)``: a Q-function of (observation, action), a reward of a
  clean sample, any callable. During denoising it scores the model's *predicted clean sample* by default
  (the "reward of x0_hat" of FK steering / DPS); ``partial_scorer(x_t, cond_rep, step)`` scores the
  partial sample itself instead (a value of a noisy sample, as in SVDD's soft value).
- **when** — ``every=None``: only at the end; ``every=k``: also after every k-th denoising step.
- **selector** — ``argmax``; ``softmax`` (sample proportionally to ``exp(score / temperature)``);
  ``particles`` — sequential Monte Carlo: each particle carries a log-weight that grows by
  ``(r_now - r_prev) / temperature`` at each scoring step (the "difference" potentials of FK steering,
  Singhal et al. 2025, which telescope to ``exp(r(x) / temperature)``); particles are resampled
  (multinomial, within their context) when the effective sample size falls below
  ``ess_threshold * N``, and once more at the end, so the returned candidates are (asymptotically)
  draws from the tilted target ``p(x | c) exp(r(x) / temperature)``.

Intermediate ``argmax`` / ``softmax`` with a stochastic solver (``ddpm``, or ``ddim`` with ``eta > 0``)
is SVDD-style greedy search: every particle of a context continues from the selected one(s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gendm.core.errors import ConfigError
from gendm.generative.base import GenerativeModel

Scorer = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
SELECTORS = ("argmax", "softmax", "particles")


@dataclass
class SteerResult:
    samples: torch.Tensor
    """(B, *event) — one selected sample per context."""
    scores: torch.Tensor
    """(B,) — the scorer's value of each selected sample."""
    candidates: torch.Tensor
    """(B, N, *event) — the final candidates (for ``particles``: resampled, equally weighted)."""
    candidate_scores: torch.Tensor
    """(B, N) — their scores."""
    ess: list[float] = field(default_factory=list)
    """Mean effective sample size (fraction of N) at each intermediate scoring step (``particles``)."""
    resamples: int = 0
    """How many intermediate scoring steps resampled at least one context."""


def steer(
    proposal: GenerativeModel | Callable[[torch.Tensor | None, int], torch.Tensor],
    scorer: Scorer,
    *,
    num_candidates: int,
    cond: torch.Tensor | None = None,
    batch_size: int | None = None,
    selector: str = "argmax",
    temperature: float = 1.0,
    every: int | None = None,
    ess_threshold: float = 0.5,
    partial_scorer: Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    **sample_kwargs: Any,
) -> SteerResult:
    """Steer ``proposal`` toward high ``scorer`` values; see the module docstring.

    Args:
        proposal: a generative model or a ``propose(cond_rep, n)`` callable.
        scorer: ``scorer(x, cond_rep) -> (n,)``, higher is better.
        num_candidates: N candidates (particles) per context.
        cond: ``(B, c)`` contexts (observations, goals); each is repeated N times.
        batch_size: B when there is no ``cond``.
        selector: ``argmax``, ``softmax`` or ``particles``.
        temperature: of ``softmax``, and ``beta`` of the tilted target for ``particles``.
        every: also score and select/resample after every ``every``-th denoising step (models only).
        ess_threshold: ``particles`` resamples a context when its ESS < ``ess_threshold * N``.
        partial_scorer: scores noisy intermediate samples instead of the predicted clean sample.
        generator: for the selection randomness (and the model's noise, unless given separately).
        sample_kwargs: passed to ``GenerativeModel.sample`` (solver, steps, guidance_scale, inpaint, ...).
    """
    if selector not in SELECTORS:
        raise ConfigError(f"selector must be one of {', '.join(SELECTORS)}, got {selector!r}.")
    if num_candidates < 1:
        raise ConfigError(f"num_candidates must be >= 1, got {num_candidates}.")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}.")
    if every is not None and (every < 1 or not isinstance(proposal, GenerativeModel)):
        raise ConfigError(
            "every=k needs a GenerativeModel proposal and k >= 1: intermediate steering acts inside the "
            "denoising loop; a plain callable proposal can only be scored at the end (every=None)."
        )
    n = num_candidates
    if cond is not None:
        b = cond.shape[0]
        cond_rep = cond.repeat_interleave(n, dim=0)
    elif batch_size is not None:
        b, cond_rep = batch_size, None
    else:
        raise ConfigError("steer() needs cond (B, c) or batch_size.")
    state = _Particles(b, n, selector, temperature, ess_threshold, generator)

    if isinstance(proposal, GenerativeModel):
        sample_kwargs.setdefault("generator", generator)
        device = next(proposal.parameters()).device

        def callback(i: int, x: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor | None:
            if every is None or i % every:
                return None
            with torch.no_grad():
                r = partial_scorer(x, cond_rep, i) if partial_scorer else scorer(x0_hat, cond_rep)
            return state.intermediate(r.float().to(device))

        x = proposal.sample(b * n, cond_rep, callback=callback, **sample_kwargs)
    else:
        with torch.no_grad():
            x = proposal(cond_rep, b * n)
    with torch.no_grad():
        r = scorer(x, cond_rep).float()
    idx, final_r = state.final(r.to(x.device))
    cand = x[idx].view(b, n, *x.shape[1:])
    cand_r = final_r.view(b, n)
    # softmax / particles candidates are already draws by the selector's rule: take the first.
    pick = cand_r.argmax(dim=1) if selector == "argmax" else torch.zeros(b, dtype=torch.long, device=x.device)
    rows = torch.arange(b, device=x.device)
    return SteerResult(cand[rows, pick], cand_r[rows, pick], cand, cand_r, state.ess, state.resamples)


class _Particles:
    """Per-context selection and resampling bookkeeping for B contexts of N particles."""

    def __init__(self, b, n, selector, temperature, ess_threshold, generator):
        self.b, self.n, self.selector, self.tau = b, n, selector, temperature
        self.ess_threshold, self.generator = ess_threshold, generator
        self.log_w: torch.Tensor | None = None
        self.r_prev: torch.Tensor | None = None
        self.ess: list[float] = []
        self.resamples = 0

    def _draw(self, logits: torch.Tensor) -> torch.Tensor:
        """N multinomial draws per context from softmax(logits) (B, N) -> local indices (B, N)."""
        probs = torch.softmax(logits, dim=1)
        gen = self.generator if self.generator is not None and self.generator.device == probs.device else None
        return torch.multinomial(probs, self.n, replacement=True, generator=gen)

    def _global(self, local: torch.Tensor) -> torch.Tensor:
        offset = torch.arange(self.b, device=local.device).unsqueeze(1) * self.n
        return (local + offset).reshape(-1)

    def intermediate(self, r: torch.Tensor) -> torch.Tensor:
        r = r.view(self.b, self.n)
        if self.selector == "argmax":
            return self._global(r.argmax(dim=1, keepdim=True).expand(-1, self.n))
        if self.selector == "softmax":
            return self._global(self._draw(r / self.tau))
        if self.log_w is None:
            self.log_w, self.r_prev = torch.zeros_like(r), torch.zeros_like(r)
        self.log_w = self.log_w + (r - self.r_prev) / self.tau
        self.r_prev = r
        w = torch.softmax(self.log_w, dim=1)
        ess = 1.0 / (w**2).sum(dim=1) / self.n  # (B,) as a fraction of N
        self.ess.append(float(ess.mean()))
        low = ess < self.ess_threshold
        local = torch.arange(self.n, device=r.device).expand(self.b, -1)
        if bool(low.any()):
            self.resamples += 1
            drawn = self._draw(self.log_w)
            local = torch.where(low.unsqueeze(1), drawn, local)
            self.log_w = torch.where(low.unsqueeze(1), torch.zeros_like(self.log_w), self.log_w)
            self.log_w = torch.gather(self.log_w, 1, local)
            self.r_prev = torch.gather(self.r_prev, 1, local)
        return self._global(local)

    def final(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global indices of the final candidates and their scores."""
        rv = r.view(self.b, self.n)
        if self.selector == "argmax":
            local = torch.arange(self.n, device=r.device).expand(self.b, -1)
        elif self.selector == "softmax":
            local = self._draw(rv / self.tau)
        else:
            log_w = torch.zeros_like(rv) if self.log_w is None else self.log_w
            r_prev = torch.zeros_like(rv) if self.r_prev is None else self.r_prev
            local = self._draw(log_w + (rv - r_prev) / self.tau)
        idx = self._global(local)
        return idx, r[idx]

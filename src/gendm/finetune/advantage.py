"""The ``group_advantage`` operator: K samples per context, rewards turned into relative advantages.

Reward fine-tuning without a critic samples several outputs for the same context (a prompt, a start
state, a diffusion model's condition) and asks of each: *was it better than its siblings?* The
siblings' rewards are the baseline, so no value network has to be learned. For a group of n samples
with rewards r_1..r_n and mean m = (1/n) sum_j r_j:

- ``"loo"`` (alias ``"rloo"``) — the leave-one-out baseline of RLOO (Kool et al. 2019; Ahmadian et
  al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
  Feedback in LLMs", eq. 5) and LOOP (Chen et al. 2025, "Reinforcement Learning for Long-Horizon
  Interactive LLM Agents", the leave-one-out advantage of its Algorithm 1)::

      A_i = r_i - 1/(n-1) * sum_{j != i} r_j  =  n/(n-1) * (r_i - m)

  The baseline does not depend on r_i, so the policy-gradient estimate stays unbiased; the
  advantages of a group sum to zero. Needs n >= 2.
- ``"mean"`` — the group-mean baseline ``A_i = r_i - m`` (the per-prompt statistics of DDPO, Black
  et al. 2024, without its std). It is the leave-one-out advantage shrunk by (n-1)/n: r_i is part
  of its own baseline, a small bias toward zero.
- ``"grpo"`` — GRPO's outcome advantage (Shao et al. 2024, "DeepSeekMath", Sec. 4.1.2):
  ``A_i = (r_i - m) / (std(r) + eps)`` with the sample standard deviation (Bessel's correction, as
  TRL's ``GRPOTrainer`` computes it). Needs n >= 2.

``normalize_std=True`` divides ``"loo"`` or ``"mean"`` advantages by the same per-group std + eps
(``"grpo"`` already does). LOOP leaves it off: its ablation found the normalisation hurt. A group
whose rewards are all equal has zero advantages under every method: it carries no learning signal.

Every method is invariant to a constant shift of the rewards (only differences within a group
matter); all but the std-normalised ones scale linearly with the rewards.

Two layouts: a dense ``(num_groups, group_size)`` tensor, or flat rewards ``(N,)`` with ``groups``
``(N,)`` naming the group of each sample, for ragged groups (some samples failed, or contexts drew
different K). The ragged path is vectorised with ``index_add_`` -- no Python loop over groups -- and
accepts any integer ids (they need not be contiguous or sorted).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gendm.core.errors import ConfigError, DataError

METHODS = ("loo", "rloo", "mean", "grpo")


def group_advantage(
    rewards: Tensor,
    groups: Tensor | None = None,
    *,
    method: str = "loo",
    normalize_std: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Advantages of samples relative to the other samples of their group (see the module docstring).

    Args:
        rewards: ``(num_groups, group_size)``, one row per context; or ``(N,)`` with ``groups``.
            Integer or bool rewards are converted to the default float dtype.
        groups: ``(N,)`` integer tensor, the group id of each reward (ragged layout), or None.
        method: ``"loo"`` / ``"rloo"`` (leave-one-out), ``"mean"`` or ``"grpo"``.
        normalize_std: also divide by the group's sample std + ``eps`` (implied by ``"grpo"``).
        eps: added to the std before dividing, so that a group of equal rewards gives zeros, not NaN.

    Returns:
        Advantages with the shape of ``rewards``.
    """
    if method not in METHODS:
        raise ConfigError(f"group_advantage: unknown method {method!r}. Valid: {', '.join(METHODS)}.")
    if not eps > 0:
        raise ConfigError(f"group_advantage: eps must be > 0, got {eps!r}.")
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    leave_one_out = method in ("loo", "rloo")
    use_std = normalize_std or method == "grpo"
    if groups is None:
        _check_dense(rewards, method, leave_one_out or use_std)
        return _dense(rewards, leave_one_out, use_std, eps)
    _check_ragged(rewards, groups)
    return _ragged(rewards, groups, method, leave_one_out, use_std, eps)


def _dense(rewards: Tensor, leave_one_out: bool, use_std: bool, eps: float) -> Tensor:
    n = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)
    adv = rewards - mean
    if leave_one_out:
        adv = adv * (n / (n - 1))
    if use_std:
        adv = adv / (rewards.std(dim=1, keepdim=True) + eps)
    return adv


def _ragged(
    rewards: Tensor, groups: Tensor, method: str, leave_one_out: bool, use_std: bool, eps: float
) -> Tensor:
    ids, inverse = torch.unique(groups, return_inverse=True)  # any ids -> 0..G-1
    zeros = rewards.new_zeros(len(ids))
    counts = zeros.index_add(0, inverse, torch.ones_like(rewards))
    if leave_one_out or use_std:
        small = counts < 2
        if bool(small.any()):
            bad = ids[small][:5].tolist()
            why = "leave-one-out needs another sample" if leave_one_out else "its std needs two samples"
            raise DataError(
                f"group_advantage(method={method!r}): {int(small.sum())} group(s) hold a single sample "
                f"(ids {bad}{'...' if int(small.sum()) > 5 else ''}); {why}. Sample at least 2 per "
                "context, drop lone samples, or use method='mean'."
            )
    mean = zeros.index_add(0, inverse, rewards) / counts
    centred = rewards - mean[inverse]
    n = counts[inverse]
    adv = centred * (n / (n - 1)) if leave_one_out else centred
    if use_std:
        var = zeros.index_add(0, inverse, centred.square()) / (counts - 1)
        adv = adv / (var.sqrt()[inverse] + eps)
    return adv


def _check_finite(rewards: Tensor) -> None:
    finite = torch.isfinite(rewards)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        raise DataError(
            f"group_advantage: rewards hold {len(bad)} NaN/Inf value(s), the first at index "
            f"{tuple(bad[0].tolist())}. Check the reward function for those samples."
        )


def _check_dense(rewards: Tensor, method: str, needs_two: bool) -> None:
    if rewards.ndim != 2:
        raise DataError(
            f"group_advantage: rewards must be (num_groups, group_size) when groups is None, got shape "
            f"{tuple(rewards.shape)}. For flat rewards pass groups= (the group id of each sample); for "
            "one group use rewards[None]."
        )
    if rewards.shape[0] == 0 or rewards.shape[1] == 0:
        raise DataError(f"group_advantage: rewards of shape {tuple(rewards.shape)} are empty.")
    if needs_two and rewards.shape[1] < 2:
        raise DataError(
            f"group_advantage(method={method!r}) needs group_size >= 2, got rewards of shape "
            f"{tuple(rewards.shape)}: a lone sample has no siblings to compare with. Sample at least 2 "
            "per context or use method='mean'."
        )
    _check_finite(rewards)


def _check_ragged(rewards: Tensor, groups: Tensor) -> None:
    if not isinstance(groups, Tensor) or groups.dtype.is_floating_point or groups.dtype == torch.bool:
        got = groups.dtype if isinstance(groups, Tensor) else type(groups).__name__
        raise DataError(f"group_advantage: groups must be an integer tensor (torch.long), got {got}.")
    if rewards.ndim != 1 or groups.ndim != 1 or rewards.shape != groups.shape:
        raise DataError(
            "group_advantage: with groups=, rewards and groups must be 1-D and equally long, got "
            f"rewards {tuple(rewards.shape)} and groups {tuple(groups.shape)}."
        )
    if rewards.numel() == 0:
        raise DataError("group_advantage: rewards are empty.")
    if groups.device != rewards.device:
        raise DataError(f"group_advantage: groups are on {groups.device}, rewards on {rewards.device}.")
    _check_finite(rewards)

"""The group_advantage operator: leave-one-out, group-mean and GRPO advantages, dense and ragged."""

from __future__ import annotations

import pytest
import torch

from gendm.core.errors import ConfigError, DataError
from gendm.finetune import group_advantage


def reference(
    rewards: list[float], method: str, normalize_std: bool = False, eps: float = 1e-6
) -> list[float]:
    """The formulas written out sample by sample, one group at a time."""
    n = len(rewards)
    mean = sum(rewards) / n
    if method in ("loo", "rloo"):
        adv = [r - (sum(rewards) - r) / (n - 1) for r in rewards]
    else:
        adv = [r - mean for r in rewards]
    if normalize_std or method == "grpo":
        std = (sum((r - mean) ** 2 for r in rewards) / (n - 1)) ** 0.5
        adv = [a / (std + eps) for a in adv]
    return adv


CASES = [("loo", False), ("rloo", False), ("mean", False), ("grpo", False), ("loo", True), ("mean", True)]


@pytest.mark.parametrize(("method", "normalize_std"), CASES)
def test_dense_equals_the_reference_loop(method, normalize_std):
    rewards = torch.randn(7, 5, dtype=torch.float64) * 3 + 1
    got = group_advantage(rewards, method=method, normalize_std=normalize_std)
    want = torch.tensor(
        [reference(row.tolist(), method, normalize_std) for row in rewards], dtype=torch.float64
    )
    assert got.shape == rewards.shape
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("method", "normalize_std"), CASES)
def test_ragged_equals_the_reference_loop(method, normalize_std):
    sizes = [2, 5, 3, 7, 4]
    ids = [11, 3, 42, 0, 7]  # arbitrary, non-contiguous ids
    groups = torch.tensor([g for g, n in zip(ids, sizes) for _ in range(n)])
    perm = torch.randperm(len(groups))  # samples of a group need not be adjacent
    groups = groups[perm]
    rewards = torch.randn(len(groups), dtype=torch.float64)
    got = group_advantage(rewards, groups, method=method, normalize_std=normalize_std)
    want = torch.empty_like(rewards)
    for g in ids:
        sel = groups == g
        want[sel] = torch.tensor(reference(rewards[sel].tolist(), method, normalize_std), dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_ragged_with_equal_groups_equals_dense():
    rewards = torch.rand(6, 4)
    groups = torch.arange(6).repeat_interleave(4)
    for method in ("loo", "mean", "grpo"):
        torch.testing.assert_close(
            group_advantage(rewards.flatten(), groups, method=method),
            group_advantage(rewards, method=method).flatten(),
        )


def test_loo_sums_to_zero_is_shift_invariant_and_equals_the_scaled_mean_baseline():
    rewards = torch.randn(10, 6, dtype=torch.float64)
    loo = group_advantage(rewards)  # method="loo" is the default
    torch.testing.assert_close(loo.sum(dim=1), torch.zeros(10, dtype=torch.float64))
    torch.testing.assert_close(group_advantage(rewards + 17.5), loo)
    torch.testing.assert_close(group_advantage(rewards - rewards[:, :1]), loo)  # per-group shift too
    torch.testing.assert_close(loo, group_advantage(rewards, method="mean") * 6 / 5)
    # the baseline excludes r_i: changing r_i moves only A_i by that change plus others by -change/(n-1)
    bumped = rewards.clone()
    bumped[0, 0] += 1.0
    diff = group_advantage(bumped) - loo
    assert diff[0, 0].item() == pytest.approx(1.0)
    torch.testing.assert_close(diff[0, 1:], torch.full((5,), -1 / 5, dtype=torch.float64))
    torch.testing.assert_close(diff[1:], torch.zeros(9, 6, dtype=torch.float64))


def test_loo_policy_gradient_is_unbiased_for_a_bandit():
    """E[A_i grad log p(x_i)] equals the true gradient of E[r] for a softmax bandit (exact enumeration
    over all K-tuples would be big; a large Monte Carlo average is within a few standard errors)."""
    torch.manual_seed(1)
    logits = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    reward = torch.tensor([1.0, 0.0, 2.0])
    probs = torch.softmax(logits, 0)
    (true_grad,) = torch.autograd.grad((probs * reward).sum(), logits)
    k, n = 4, 200_000
    x = torch.multinomial(probs.detach(), n * k, replacement=True).view(n, k)
    adv = group_advantage(reward[x])  # (n, k)
    score = torch.eye(3)[x] - probs.detach()  # grad of log softmax at the sampled arm: (n, k, 3)
    est = (adv[..., None] * score).sum(1) / k  # one estimate per group
    mean, se = est.mean(0), est.std(0) / n**0.5
    assert torch.all((mean - true_grad).abs() < 4 * se + 1e-4), (mean, true_grad, se)


def test_grpo_has_zero_mean_and_unit_std_per_group():
    rewards = torch.randn(8, 5, dtype=torch.float64) * 4 + 2
    adv = group_advantage(rewards, method="grpo", eps=1e-12)
    torch.testing.assert_close(adv.mean(1), torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(adv.std(1), torch.ones(8, dtype=torch.float64))
    groups = torch.arange(8).repeat_interleave(5)
    ragged = group_advantage(rewards.flatten(), groups, method="grpo", eps=1e-12).view(8, 5)
    torch.testing.assert_close(ragged.std(1), torch.ones(8, dtype=torch.float64))


def test_equal_rewards_give_zero_advantages_not_nan():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    for method in ("loo", "mean", "grpo"):
        adv = group_advantage(rewards, method=method)
        assert torch.isfinite(adv).all()
        assert torch.equal(adv[0], torch.zeros(3))


def test_integer_and_bool_rewards_become_float():
    adv = group_advantage(torch.tensor([[1, 0, 0, 1]]))
    assert adv.dtype == torch.get_default_dtype()
    torch.testing.assert_close(adv, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]))
    assert group_advantage(torch.tensor([[True, False]])).tolist() == [[1.0, -1.0]]


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="group_size >= 2"):
        group_advantage(torch.rand(4, 1))
    with pytest.raises(DataError, match="group_size >= 2"):
        group_advantage(torch.rand(4, 1), method="grpo")
    assert group_advantage(torch.rand(4, 1), method="mean").eq(0).all()  # a lone sample: no signal
    with pytest.raises(DataError, match="single sample"):
        group_advantage(torch.rand(3), torch.tensor([0, 0, 1]))
    group_advantage(torch.rand(3), torch.tensor([0, 0, 1]), method="mean")  # allowed
    with pytest.raises(DataError, match=r"NaN/Inf.*index \(1, 2\)"):
        group_advantage(torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, float("nan")]]))
    with pytest.raises(DataError, match="NaN/Inf"):
        group_advantage(torch.tensor([0.0, float("inf")]), torch.tensor([0, 0]))
    with pytest.raises(DataError, match="pass groups="):
        group_advantage(torch.rand(6))
    with pytest.raises(DataError, match="pass groups="):
        group_advantage(torch.rand(2, 3, 4))
    with pytest.raises(DataError, match="equally long"):
        group_advantage(torch.rand(6), torch.zeros(5, dtype=torch.long))
    with pytest.raises(DataError, match="equally long"):
        group_advantage(torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(DataError, match="integer tensor"):
        group_advantage(torch.rand(4), torch.zeros(4))
    with pytest.raises(DataError, match="empty"):
        group_advantage(torch.rand(0, 3))
    with pytest.raises(ConfigError, match="unknown method 'ppo'"):
        group_advantage(torch.rand(2, 3), method="ppo")
    with pytest.raises(ConfigError, match="eps"):
        group_advantage(torch.rand(2, 3), eps=0.0)

import numpy as np
import pytest
import torch

from gendm.core.errors import CheckpointError, DataError
from gendm.data import ReplayBuffer, RolloutBuffer


def _fill(buf, n, start=0):
    idx = np.arange(start, start + n, dtype=np.float32)
    buf.add(
        np.stack([idx, -idx], 1), idx[:, None], idx, np.stack([idx + 1, -idx], 1), idx % 2 == 0, idx % 3 == 0
    )


def test_replay_buffer_keeps_transitions_and_flags_apart():
    buf = ReplayBuffer(10, (2,), (1,), seed=0)
    _fill(buf, 4)
    b = buf.sample(64)
    i = b.rewards
    assert (
        torch.equal(b.obs[:, 0], i)
        and torch.equal(b.next_obs[:, 0], i + 1)
        and torch.equal(b.actions[:, 0], i)
    )
    assert torch.equal(b.terminations, (i % 2 == 0).float()) and torch.equal(
        b.truncations, (i % 3 == 0).float()
    )


def test_ring_wraps_around_and_sampling_is_uniform():
    buf = ReplayBuffer(8, (2,), (1,), seed=0)
    _fill(buf, 6)
    _fill(buf, 5, start=6)  # 11 transitions into 8 slots: 0, 1, 2 are overwritten
    assert len(buf) == 8 and buf.pos == 3
    counts = torch.bincount(buf.sample(80_000).rewards.long(), minlength=11)
    assert counts[:3].sum() == 0
    freq = counts[3:].float() / 80_000
    assert torch.allclose(freq, torch.full_like(freq, 1 / 8), atol=0.01)


def test_replay_buffer_rejects_bad_shapes_and_empty_sampling():
    buf = ReplayBuffer(4, (2,), (1,))
    with pytest.raises(DataError, match="empty"):
        buf.sample(1)
    with pytest.raises(DataError, match="shape"):
        buf.add(np.zeros((1, 3)), np.zeros((1, 1)), [0], np.zeros((1, 3)), [0], [0])


def test_replay_buffer_takes_arrays_or_tensors_and_names_a_misshapen_field():
    obs = np.array([[1.5, -2.0]], np.float32)
    # float32 fields are written through numpy views on the CPU; bfloat16 (no numpy dtype) through torch
    for obs_dtype in (torch.float32, torch.bfloat16):
        buf = ReplayBuffer(4, (2,), (1,), obs_dtype=obs_dtype)
        buf.add(obs, np.array([0.25]), np.array([1.0]), obs + 1, np.array([True]), np.array([False]))
        t = torch.as_tensor(obs)
        buf.add(
            t, torch.tensor([[0.5]]), torch.tensor([2.0]), t - 1, torch.tensor([False]), torch.tensor([True])
        )
        assert buf.obs[:2].float().tolist() == [[1.5, -2.0], [1.5, -2.0]]
        assert buf.next_obs[:2].float().tolist() == [[2.5, -1.0], [0.5, -3.0]]
        assert buf.actions[:2, 0].tolist() == [0.25, 0.5] and buf.rewards[:2].tolist() == [1.0, 2.0]
        assert buf.terminations[:2].tolist() == [1.0, 0.0] and buf.truncations[:2].tolist() == [0.0, 1.0]
        with pytest.raises(DataError, match="actions has shape"):
            buf.add(obs, np.zeros((1, 3)), [0.0], obs, [False], [False])


def test_replay_buffer_save_load(tmp_path):
    buf = ReplayBuffer(10, (2,), (1,), seed=3)
    _fill(buf, 7)
    buf.save(tmp_path / "buf")
    other = ReplayBuffer(10, (2,), (1,))
    other.load(tmp_path / "buf")
    assert len(other) == 7 and torch.equal(other.obs[:7], buf.obs[:7])
    assert torch.equal(other.sample(5).rewards, buf.sample(5).rewards)  # generator state restored
    bigger = ReplayBuffer(20, (2,), (1,))  # a longer run resumed with a larger buffer
    bigger.load(tmp_path / "buf")
    assert len(bigger) == 7 and bigger.pos == 7
    with pytest.raises(CheckpointError, match="does not fit"):
        ReplayBuffer(5, (2,), (1,)).load(tmp_path / "buf")


def _reference_gae(rewards, values, ended, last_value, gamma, lam):
    """Textbook GAE written with explicit lambda-return sums (no recursion), for one env."""
    T = len(rewards)
    adv = np.zeros(T)
    for t in range(T):
        total, discount = 0.0, 1.0
        for k in range(t, T):
            nxt = last_value if k == T - 1 else values[k + 1]
            delta = rewards[k] + gamma * nxt * (1 - ended[k]) - values[k]
            total += discount * delta
            if ended[k]:
                break
            discount *= gamma * lam
        adv[t] = total
    return adv


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_the_lambda_return_definition(lam):
    rng = np.random.default_rng(0)
    T, E, gamma = 12, 3, 0.9
    rewards, values = rng.normal(size=(T, E)), rng.normal(size=(T, E))
    ended = rng.random((T, E)) < 0.2
    last = rng.normal(size=E)
    buf = RolloutBuffer(T, E, (1,), ())
    for t in range(T):
        buf.add(
            np.zeros((E, 1)),
            np.zeros(E),
            torch.zeros(E),
            rewards[t],
            ended[t],
            torch.tensor(values[t]).float(),
        )
    buf.compute_gae(torch.tensor(last).float(), gamma, lam)
    for e in range(E):
        ref = _reference_gae(rewards[:, e], values[:, e], ended[:, e], last[e], gamma, lam)
        np.testing.assert_allclose(buf.advantages[:, e].numpy(), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(buf.returns.numpy(), (buf.advantages + buf.values).numpy())
    batches = list(buf.minibatches(10))
    assert sum(len(b["obs"]) for b in batches) == T * E

import pytest
import torch
from torch import nn

from gendm.core.errors import ConfigError, DataError, UnknownNameError
from gendm.generative.denoisers import (
    SinusoidalEmbedding,
    TemporalUNet1D,
    TransformerDenoiser,
    count_parameters,
    make_denoiser,
)

# Small widths so the whole file runs in a few seconds on one thread.
SMALL = {
    "mlp": dict(hidden=32, depth=2, time_dim=16),
    "unet": dict(dims=(16, 32), time_dim=16, kernel_size=3),
    "transformer": dict(d_model=32, depth=1, heads=2, time_dim=16),
}
SHAPES = {"mlp": (5,), "unet": (8, 3), "transformer": (8, 3)}
KINDS = list(SMALL)


def _net(kind: str, cond_dim: int = 0, shape: tuple[int, ...] | None = None) -> nn.Module:
    return make_denoiser(kind, shape or SHAPES[kind], cond_dim, **SMALL[kind])


def _inputs(kind: str, cond_dim: int, batch: int = 6, shape: tuple[int, ...] | None = None):
    x = torch.randn(batch, *(shape or SHAPES[kind]))
    t = torch.rand(batch)
    return x, t, (torch.randn(batch, cond_dim) if cond_dim else None)


@torch.no_grad()
def _unzero(net: nn.Module) -> nn.Module:
    """Give the zero-initialised output layers random weights, so sensitivity and gradient tests are not
    trivially satisfied (zero output) or trivially failed (no gradient behind a zero layer)."""
    for p in net.parameters():
        if not p.any():
            p.normal_(0.0, 0.2)
    return net


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cond_dim", [0, 4])
def test_output_shape_matches_input_and_untrained_net_predicts_zero(kind, cond_dim):
    net = _net(kind, cond_dim)
    x, t, c = _inputs(kind, cond_dim)
    out = net(x, t, c)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.all(out == 0)  # zero-initialised output layer
    assert _unzero(net)(x, t, c).abs().sum() > 0


def test_mlp_flattens_a_trajectory_event_shape():
    net = _net("mlp", 2, shape=(4, 3))
    x, t, c = _inputs("mlp", 2, shape=(4, 3))
    assert net.dim == 12 and _unzero(net)(x, t, c).shape == (6, 4, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_time_and_condition_change_the_output(kind):
    net = _unzero(_net(kind, 4)).eval()
    x, t, c = _inputs(kind, 4)
    out = net(x, t, c)
    assert not torch.allclose(out, net(x, t + 0.1, c), atol=1e-5)
    assert not torch.allclose(out, net(x, t, torch.randn_like(c)), atol=1e-5)
    assert not torch.allclose(out, net(torch.randn_like(x), t, c), atol=1e-5)
    shared = torch.tensor(0.3)
    torch.testing.assert_close(net(x, shared, c), net(x, shared.expand(6), c))


@pytest.mark.parametrize("kind", KINDS)
def test_samples_in_a_batch_do_not_interact(kind):
    net = _unzero(_net(kind, 4)).eval()
    x, t, c = _inputs(kind, 4)
    full = net(x, t, c)
    torch.testing.assert_close(net(x[2:3], t[2:3], c[2:3]), full[2:3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    net = _unzero(_net(kind, 4))
    x, t, c = _inputs(kind, 4)
    net(x, t, c).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_a_tiny_conditional_regression(kind):
    net = _net(kind, 2)
    x, t, c = _inputs(kind, 2, batch=64)
    bcast = (-1,) + (1,) * (x.dim() - 1)
    target = c[:, 0].view(bcast) * torch.sin(x) + t.view(bcast)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(200):
        loss = (net(x, t, c) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * target.var().item()


@pytest.mark.parametrize("kind", KINDS)
def test_output_stays_fp32_under_bf16_autocast(kind):
    net = _unzero(_net(kind, 4))
    x, t, c = _inputs(kind, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x, t, c).dtype == torch.float32


def test_sinusoidal_embedding_shape_and_range():
    emb = SinusoidalEmbedding(7)(torch.tensor([-2.0, 0.0, 0.5, 1.0]))
    assert emb.shape == (4, 7) and emb.abs().max() <= 1.0
    assert torch.all(emb[:, -1] == 0)  # odd dim is zero-padded
    assert not torch.allclose(emb[0], emb[1])


def test_unet_rejects_a_horizon_that_cannot_be_halved_evenly():
    with pytest.raises(ConfigError, match=r"horizon 10 .* multiple of 4 .* use horizon 8 or 12"):
        TemporalUNet1D(3, horizon=10, dims=(8, 16, 32))
    with pytest.raises(ConfigError, match=r"horizon 10 .* multiple of 4"):
        make_denoiser("unet", (10, 3), 0, dims=(8, 16, 32))
    net = TemporalUNet1D(3, dims=(8, 16, 32))  # horizon unset: checked at call time
    with pytest.raises(ConfigError, match=r"horizon 6 .* use horizon 4 or 8"):
        net(torch.randn(2, 6, 3), torch.rand(2))
    assert net(torch.randn(2, 12, 3), torch.rand(2)).shape == (2, 12, 3)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_temporal_kinds_need_a_horizon_by_channels_event_shape(kind):
    with pytest.raises(ConfigError, match=r"needs event_shape \(horizon, channels\), got \(5,\)"):
        make_denoiser(kind, (5,), 0)


def test_factory_errors_name_the_problem():
    with pytest.raises(UnknownNameError, match=r"Unknown denoiser 'unt'\. Did you mean: unet"):
        make_denoiser("unt", (8, 3), 0)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) hiden; allowed: .*hidden"):
        make_denoiser("mlp", (5,), 0, hiden=32)
    with pytest.raises(ConfigError, match="event_shape must be non-empty"):
        make_denoiser("mlp", (), 0)
    with pytest.raises(ConfigError, match="divisible by heads"):
        TransformerDenoiser(3, horizon=8, d_model=30, heads=4)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_rejects_wrong_shapes_and_conditions(kind):
    net = _net(kind, 4)
    x, t, c = _inputs(kind, 4)
    with pytest.raises(DataError, match="got cond=None"):
        net(x, t, None)
    with pytest.raises(DataError, match=r"cond must have shape \(batch, cond_dim\) = \(6, 4\)"):
        net(x, t, c[:, :3])
    with pytest.raises(DataError, match="cond_dim=0"):
        _net(kind, 0)(x, t, c)
    bad = torch.randn(6, 7) if kind == "mlp" else torch.randn(6, 8, 2)
    with pytest.raises(DataError, match="expect"):
        net(bad, t, c)


def test_transformer_requires_its_horizon():
    net = _net("transformer", 0)
    with pytest.raises(DataError, match=r"expects x of shape \(batch, 8, 3\), got \(2, 4, 3\)"):
        net(torch.randn(2, 4, 3), torch.rand(2))


def test_count_parameters():
    net = _net("mlp", 4)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    net.out.requires_grad_(False)
    assert count_parameters(net) == count_parameters(net, trainable_only=False) - net.out.weight.numel() - 5

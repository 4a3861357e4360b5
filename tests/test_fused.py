"""gendm.nn.fused: the hand-written forward/backward of ReLU MLPs must equal the plain modules (fp32)
or autocast over them (bf16), and row-restricted gradients must equal those of separate passes with
detached parameters."""

import pytest
import torch
from conftest import BF16_PATHS

from gendm.core.precision import force_native_bf16
from gendm.nn import EnsembleMLP, mlp
from gendm.nn.fused import (
    cast_params,
    ensemble_backward,
    ensemble_forward,
    layer_params,
    mlp_backward,
    mlp_forward,
)

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


# fp32, and bf16 on the portable path and (where this CPU has it) the native one
DTYPES = [pytest.param((torch.float32, None), id="fp32")] + [
    pytest.param((torch.bfloat16, p.values[0]), id=f"bf16-{p.id}", marks=p.marks) for p in BF16_PATHS
]


@pytest.fixture
def dtype(request):
    dtype, native = request.param
    with force_native_bf16(native):
        yield dtype


def _grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _reference(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_ensemble_stacked_rows_equal_a_trained_and_a_detached_pass(dtype):
    torch.manual_seed(0)
    ens = EnsembleMLP(2, 5, 1, hidden=(32, 32))
    x_train, x_actor = torch.randn(16, 5), torch.randn(16, 5, requires_grad=True)
    w_train, w_actor = torch.randn(2, 16, 1), torch.randn(2, 16, 1)

    with _reference(dtype):
        loss = (ens(x_train) * w_train).sum() + (ens(x_actor, detach=True) * w_actor).sum()
        want_out = ens(torch.cat([x_train, x_actor.detach()]))
    loss.backward()
    want_params, want_x = _grads(ens), x_actor.grad.clone()

    params = layer_params(ens.layers)
    copies = cast_params(params, dtype)
    out, saved = ensemble_forward(torch.cat([x_train, x_actor.detach()]), copies, params)
    grads, grad_x = ensemble_backward(
        saved, copies, torch.cat([w_train, w_actor], 1), slice(0, 16), input_rows=slice(16, None)
    )

    assert out.dtype == torch.float32 and out.shape == (2, 32, 1)
    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(grad_x.float(), want_x, **TOL[dtype])
    for got, want in zip(grads, want_params, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, **TOL[dtype])
    no_weights, _ = ensemble_backward(saved, copies, torch.cat([w_train, w_actor], 1), want_weights=False)
    assert no_weights is None


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_mlp_only_grad_rows_carry_gradients(dtype):
    torch.manual_seed(1)
    net = mlp(4, 3, (32, 32))
    x_free, x_grad = torch.randn(8, 4), torch.randn(8, 4, requires_grad=True)
    weights = torch.randn(8, 3)

    with _reference(dtype):
        want_out = net(torch.cat([x_free, x_grad.detach()]))
        (net(x_grad) * weights).sum().backward()
    want_params, want_x = _grads(net), x_grad.grad.clone()

    params = layer_params(net)
    copies = cast_params(params, dtype)
    out, saved = mlp_forward(torch.cat([x_free, x_grad.detach()]), copies, params)
    grads, dx = mlp_backward(saved, copies, weights, rows=slice(8, None), want_input=True)

    torch.testing.assert_close(out, want_out, **TOL[dtype])
    torch.testing.assert_close(dx.float(), want_x, **TOL[dtype])
    for got, want in zip(grads, want_params, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_bf16_weights_follow_a_fused_adam_step(bf16_path):
    # A fused Adam step leaves parameter version counters unchanged; no stale bf16 copy may survive it.
    torch.manual_seed(2)
    ens, net = EnsembleMLP(2, 3, 1, hidden=(16,)), mlp(3, 2, (16,))
    ens_params, net_params = layer_params(ens.layers), layer_params(net)
    x = torch.randn(8, 3)

    def forward():
        return (
            ensemble_forward(x, cast_params(ens_params, torch.bfloat16), ens_params)[0],
            mlp_forward(x, cast_params(net_params, torch.bfloat16), net_params)[0],
        )

    before = forward()
    opt = torch.optim.Adam([*ens.parameters(), *net.parameters()], lr=0.1, fused=True)
    (ens(x).sum() + net(x).sum()).backward()
    opt.step()
    after = forward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = ens(x), net(x)
    for b, a, w in zip(before, after, want, strict=True):
        assert not torch.allclose(b, a)
        torch.testing.assert_close(a, w, **TOL[torch.bfloat16])

"""gendm.nn.optim.FusedAdam must update exactly as torch's fused Adam, across learning-rate changes
(groups merged into one kernel call while their hyperparameters agree), steps with a missing
gradient, and a reload from a state dict."""

import copy

import pytest
import torch

from gendm.nn.optim import FusedAdam


def _adam_trajectory(opt_cls, steps: int, drop_grad_at: int | None = None, **kwargs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    scalar = torch.nn.Parameter(torch.tensor(0.3))
    groups = [{"params": net[0].parameters()}, {"params": [*net[2].parameters(), scalar], "lr": 3e-3}]
    opt = opt_cls(groups, lr=1e-2, **kwargs)
    data = torch.randn(steps, 32, 5)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (net(data[i]) * scalar).pow(2).mean()
        if i == drop_grad_at:  # the first layer gets no gradient this step
            loss = (net[2](net[1](net[0](data[i]).detach())) * scalar).pow(2).mean()
        loss.backward()
        opt.step()
        if i == 5:
            opt.param_groups[0]["lr"] = 5e-3  # a schedule changes the learning rate
        if i == 7:
            opt.param_groups[0]["lr"] = 3e-3  # both groups alike: FusedAdam merges them into one call
        if i == 9:
            opt.param_groups[1]["lr"] = 1e-3  # and apart again
    return [p.detach().clone() for p in [*net.parameters(), scalar]], opt


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.01, "eps": 1e-5}])
def test_fused_adam_matches_torch_fused_adam_bit_for_bit(kwargs):
    for drop in (None, 7):
        want, _ = _adam_trajectory(lambda g, **k: torch.optim.Adam(g, fused=True, **k), 12, drop, **kwargs)
        got, opt = _adam_trajectory(FusedAdam, 12, drop, **kwargs)
        assert opt._cached is not None  # the direct path was taken
        assert len(opt._runs()) == 2
        opt.param_groups[1]["lr"] = opt.param_groups[0]["lr"]
        assert len(opt._runs()) == 1
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)


def test_fused_adam_resumes_from_a_state_dict_like_torch_adam():
    _, opt = _adam_trajectory(FusedAdam, 4)
    state = opt.state_dict()
    params = [p for g in opt.param_groups for p in g["params"]]
    twin_params = [p.detach().clone().requires_grad_(True) for p in params]
    twin = torch.optim.Adam(
        [{"params": twin_params[:2]}, {"params": twin_params[2:], "lr": 3e-3}], fused=True
    )
    twin.load_state_dict(copy.deepcopy(state))  # load_state_dict may share the given tensors
    opt.load_state_dict(copy.deepcopy(state))
    assert opt._cached is None  # the reloaded state tensors are not the cached ones
    for _ in range(3):
        for p, q in zip(params, twin_params, strict=True):
            p.grad = torch.ones_like(p)
            q.grad = torch.ones_like(q)
        opt.step()
        twin.step()
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q)


def test_fused_adam_runs_step_hooks_once_per_step_on_both_paths():
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # torch wraps Adam.step with its hook runner
    _, opt = _adam_trajectory(FusedAdam, 3)
    calls = []
    handle = opt.register_step_post_hook(lambda *_: calls.append(1))
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()  # the direct path
    params[0].grad = None
    opt.step()  # a missing gradient: through Adam.step
    handle.remove()
    assert calls == [1, 1]

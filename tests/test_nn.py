import copy

import torch
from torch.func import functional_call, stack_module_state, vmap

from gendm.nn import EnsembleMLP, mlp


def _members_as_modules(ens: EnsembleMLP) -> list[torch.nn.Module]:
    members = []
    for m in range(ens.members):
        net = mlp(ens.layers[0].in_dim, ens.layers[-1].out_dim, [layer.out_dim for layer in ens.layers[:-1]])
        linears = [x for x in net if isinstance(x, torch.nn.Linear)]
        for lin, layer in zip(linears, ens.layers):
            lin.weight.data = layer.weight[m].T.clone()
            lin.bias.data = layer.bias[m, 0].clone()
        members.append(net)
    return members


def test_stacked_ensemble_equals_vmap_over_independent_members():
    ens = EnsembleMLP(3, 5, 2, hidden=(16, 16))
    x = torch.randn(7, 5)
    members = _members_as_modules(ens)
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    ref = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(params, buffers, x)
    torch.testing.assert_close(ens(x), ref)
    assert not torch.allclose(ref[0], ref[1])  # members are initialised independently


def test_detached_forward_passes_gradients_to_inputs_only():
    ens = EnsembleMLP(2, 3, 1, hidden=(8,))
    x = torch.randn(4, 3, requires_grad=True)
    ens(x, detach=True).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in ens.parameters())


def test_one_member_equals_its_slice_of_the_ensemble_and_its_gradients():
    ens = EnsembleMLP(3, 5, 1, hidden=(16, 16))
    x = torch.randn(7, 5, requires_grad=True)
    for m in range(3):
        torch.testing.assert_close(ens(x, member=m), ens(x)[m])
    (g_full,) = torch.autograd.grad(ens(x, detach=True)[1].sum(), x)
    (g_one,) = torch.autograd.grad(ens(x, detach=True, member=1).sum(), x)
    torch.testing.assert_close(g_one, g_full)
    ens(x, member=2).sum().backward()
    assert all(p.grad[2].abs().sum() > 0 and p.grad[[0, 1]].abs().sum() == 0 for p in ens.parameters())


def test_output_head_stays_fp32_under_bf16_autocast():
    net, ens = mlp(4, 2, (32,)), EnsembleMLP(2, 4, 1, (32,))
    x = torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.float32 and ens(x).dtype == torch.float32
        assert net[0](x).dtype == torch.bfloat16  # hidden layers do run in bf16

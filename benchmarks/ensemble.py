"""Critic-ensemble evaluation strategies: a training step (forward, MSE, backward, fused Adam) of a
2-member 256x256 critic at batch 256, computed (a) by gendm's stacked-parameter EnsembleMLP (one
baddbmm per layer), (b) by torch.func.vmap over functional_call of stacked module state, (c) by a
Python loop over separate modules.

    python benchmarks/ensemble.py --out benchmarks/results/ensemble.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from gendm.nn import EnsembleMLP, mlp

B, D, H, E = 256, 23, 256, 2


def variants():
    x, y = torch.randn(B, D), torch.randn(B, 1)
    ens = EnsembleMLP(E, D, 1, (H, H))
    opt_e = torch.optim.Adam(ens.parameters(), fused=True)

    def stacked():
        loss = (ens(x) - y).pow(2).mean()
        opt_e.zero_grad()
        loss.backward()
        opt_e.step()

    members = [mlp(D, 1, (H, H)) for _ in range(E)]
    params, buffers = stack_module_state(members)
    params = {k: nn.Parameter(v) for k, v in params.items()}
    base = copy.deepcopy(members[0]).to("meta")
    opt_v = torch.optim.Adam(params.values(), fused=True)
    fwd = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))

    def vmapped():
        loss = (fwd(params, buffers, x) - y).pow(2).mean()
        opt_v.zero_grad()
        loss.backward()
        opt_v.step()

    loop_members = [mlp(D, 1, (H, H)) for _ in range(E)]
    opt_l = torch.optim.Adam([p for m in loop_members for p in m.parameters()], fused=True)

    def loop():
        loss = sum((m(x) - y).pow(2).mean() for m in loop_members) / E
        opt_l.zero_grad()
        loss.backward()
        opt_l.step()

    return {"stacked baddbmm (gendm)": stacked, "vmap(functional_call)": vmapped, "python loop": loop}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fns = variants()
        times = {k: [] for k in fns}
        for _ in range(a.rounds):
            for k, fn in fns.items():
                for _ in range(20):
                    fn()
                t = time.perf_counter()
                for _ in range(a.n):
                    fn()
                times[k].append(a.n / (time.perf_counter() - t))
        out[f"threads_{threads}"] = {k: float(np.median(v)) for k, v in times.items()}
        for k, v in out[f"threads_{threads}"].items():
            print(f"threads {threads}  {k:<26} {v:7.1f} steps/s (median of {a.rounds})")
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""``FusedAdam``: torch's fused Adam with the per-step Python bookkeeping done once.

``torch.optim.Adam(fused=True)`` re-walks every parameter group in Python on each step (state
lookups, dtype and device grouping) before its one fused kernel; for an RL agent's few small
networks that walk costs as much as the kernel (~0.15 ms of a ~0.37 ms step for SAC's networks on the
dev box). After a first ordinary step, ``FusedAdam`` keeps each group's parameter and state lists and
calls the same kernel directly with the groups' current hyperparameters, once for all groups whose
hyperparameters agree, so its updates are those of ``Adam(fused=True)`` bit for bit (a test compares
trajectories). Any step the cached path does not
cover — a closure, a parameter without a gradient, amsgrad, tensor learning rates, mixed devices or
dtypes, a gradient scaler — goes through ``Adam.step`` unchanged. Step hooks run once per step either
way (torch wraps ``FusedAdam.step`` itself).
"""

from __future__ import annotations

from typing import Any

import torch


class FusedAdam(torch.optim.Adam):
    def __init__(self, params: Any, lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, fused=True, **kwargs)
        self._cached: list[tuple[dict, list, list, list, list]] | None = None
        self._run_keys: tuple | None = None
        self._run_list: list[tuple[tuple, list, list, list, list]] = []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._cached, self._run_keys = None, None
        super().load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._cached, self._run_keys = None, None
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is None and self._cached is not None and not self._scaled():
            runs = self._runs()
            grads = [[p.grad for p in params] for _, params, *_ in runs]
            if all(g is not None for run_grads in grads for g in run_grads):
                for (hyper, params, exp_avgs, exp_avg_sqs, steps), run_grads in zip(runs, grads, strict=True):
                    lr, (beta1, beta2), weight_decay, eps, maximize = hyper
                    torch._foreach_add_(steps, 1)
                    torch._fused_adam_(
                        params,
                        run_grads,
                        exp_avgs,
                        exp_avg_sqs,
                        [],
                        steps,
                        amsgrad=False,
                        lr=lr,
                        beta1=beta1,
                        beta2=beta2,
                        weight_decay=weight_decay,
                        eps=eps,
                        maximize=maximize,
                    )
                return None
        loss = _adam_step_without_hooks(self, closure)
        self._cached = self._cache_groups()
        self._run_keys = None
        return loss

    def _runs(self) -> list[tuple[tuple, list, list, list, list]]:
        """The cached groups merged where their current hyperparameters agree (one kernel call for
        each distinct setting; the kernel treats every tensor alone, so merging changes no value)."""
        assert self._cached is not None
        keys = tuple(
            (g["lr"], tuple(g["betas"]), g["weight_decay"], g["eps"], g["maximize"]) for g, *_ in self._cached
        )
        if keys != self._run_keys:
            merged: dict[tuple, tuple[list, list, list, list]] = {}
            for key, (_, *lists) in zip(keys, self._cached, strict=True):
                run = merged.setdefault(key, ([], [], [], []))
                for into, items in zip(run, lists, strict=True):
                    into.extend(items)
            self._run_list = [(key, *lists) for key, lists in merged.items()]
            self._run_keys = keys
        return self._run_list

    def _scaled(self) -> bool:
        """A gradient scaler (``grad_scale`` / ``found_inf``) needs ``Adam.step``."""
        return getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None

    def _cache_groups(self) -> list[tuple[dict, list, list, list, list]] | None:
        """Each group's parameters and state lists, or None where the direct call would not be
        exactly ``Adam.step`` (missing state, amsgrad, decoupled decay, tensor lr, mixed tensors)."""
        cached, kinds = [], set()
        for group in self.param_groups:
            params = list(group["params"])
            if (
                group["amsgrad"]
                or group.get("decoupled_weight_decay", False)
                or group["capturable"]
                or group["differentiable"]
                or isinstance(group["lr"], torch.Tensor)
                or any(isinstance(b, torch.Tensor) for b in group["betas"])
                or any("step" not in self.state[p] for p in params)
            ):
                return None
            kinds |= {(p.device, p.dtype) for p in params}
            states = [self.state[p] for p in params]
            cached.append(
                (
                    group,
                    params,
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                )
            )
        return cached if len(kinds) == 1 else None


def _adam_step_without_hooks(optimizer: torch.optim.Adam, closure: Any) -> Any:
    """``Adam.step`` minus the step-hook wrapper torch installs on the class once an ``Adam`` exists:
    ``FusedAdam.step`` carries that wrapper itself, so hooks would otherwise run twice."""
    step = torch.optim.Adam.step
    if getattr(step, "hooked", False):
        step = step.__wrapped__
    return step(optimizer, closure)

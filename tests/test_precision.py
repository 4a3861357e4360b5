"""Portable precision: ``auto`` resolves to bf16 only where native, an explicit bf16 runs everywhere
(no native-only kernel without the check) and warns once where emulated, and runs record what they
resolved to. The capability check is forced off (and on, where the CPU has it) to test both paths."""

import json
import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gendm.agents.sac import SAC, SACConfig
from gendm.core import precision as P
from gendm.core.errors import ConfigError
from gendm.data.replay import Batch
from gendm.train import TrainSettings, train


class _OpLog(TorchDispatchMode):
    """Records the name of every aten/mkldnn op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _sac_update_ops(precision: str) -> tuple[list[str], SAC]:
    env = gym.make("Pendulum-v1")
    agent = SAC(
        SACConfig(hidden=(16, 16), precision=precision),
        env.observation_space,
        env.action_space,
        torch.device("cpu"),
    )
    rng = np.random.default_rng(0)
    t = lambda *shape: torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)  # noqa: E731
    batch = Batch(t(8, 3), t(8, 1).clamp(-2, 2), t(8), t(8, 3), torch.zeros(8), torch.zeros(8))
    with _OpLog() as log:
        metrics = agent.update(batch)
    assert all(torch.isfinite(v) for v in metrics.values())
    return log.names, agent


@pytest.fixture(autouse=True)
def _fresh_warning_state(monkeypatch):
    monkeypatch.setattr(P, "_warned", set())


def test_auto_follows_the_capability_check():
    with P.force_native_bf16(False):
        assert P.resolve_precision("auto", "cpu") == "fp32"
    if P.hardware_native_bf16("cpu"):
        with P.force_native_bf16(True):
            assert P.resolve_precision("auto", "cpu") == "bf16"
    assert P.resolve_precision("auto", "cpu") == ("bf16" if P.hardware_native_bf16("cpu") else "fp32")
    assert P.resolve_precision("fp32", "cpu") == "fp32"


def test_forcing_native_on_is_refused_where_the_cpu_lacks_it():
    if P.hardware_native_bf16("cpu"):
        with P.force_native_bf16(True):
            assert P.native_bf16("cpu")
    else:
        with pytest.raises(ConfigError, match="no native bfloat16"), P.force_native_bf16(True):
            pass
    assert P.native_bf16("cpu") == P.hardware_native_bf16("cpu")  # the override does not leak


def test_explicit_bf16_without_native_support_warns_once_and_stays_bf16():
    with P.force_native_bf16(False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert P.resolve_precision("bf16", "cpu") == "bf16"
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    relevant = [w for w in caught if "no native bfloat16" in str(w.message)]
    assert len(relevant) == 1 and "fp32" in str(relevant[0].message)


def test_unknown_precision_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="precision"):
        P.resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match="precision"):
        SACConfig(precision="fp16")


def test_portable_bf16_path_calls_no_native_only_kernel():
    with P.force_native_bf16(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        names, agent = _sac_update_ops("bf16")
    assert agent.precision == "bf16"
    assert not [n for n in names if "mkldnn" in n], sorted({n for n in names if "mkldnn" in n})
    assert any("addmm" in n for n in names)


@pytest.mark.skipif(not P.hardware_native_bf16("cpu"), reason="this CPU has no native bf16")
def test_native_bf16_path_uses_the_fused_onednn_kernel():
    names, agent = _sac_update_ops("bf16")
    assert agent.precision == "bf16"
    assert any("_linear_pointwise" in n for n in names)


@pytest.mark.parametrize("native", [False, None], ids=["forced-off", "hardware"])
def test_summary_records_the_resolved_precision(tmp_path, native):
    with P.force_native_bf16(native):
        expected = "bf16" if P.native_bf16("cpu") else "fp32"
        summary = train(
            TrainSettings(
                "sac",
                "Pendulum-v1",
                steps=300,
                out_dir=tmp_path,
                overrides={"precision": "auto", "learning_starts": 200, "hidden": (16, 16)},
                eval_every=300,
                eval_episodes=1,
                progress=False,
                tensorboard=False,
            )
        )
    assert summary["precision"] == expected
    assert summary["config"]["precision"] == "auto"
    assert json.loads((tmp_path / "summary.json").read_text())["precision"] == expected


def test_a_onednn_isa_cap_without_bf16_makes_the_cpu_non_native():
    # ONEDNN_MAX_CPU_ISA=AVX2 hides AVX512-BF16/AMX from oneDNN, whose native bf16 kernels then fail:
    # the check must say "not native" there, and an explicit bf16 SAC update must still run.
    code = (
        "import warnings, torch, gymnasium as gym\n"
        "from gendm.core.precision import hardware_native_bf16, resolve_precision\n"
        "from gendm.agents.sac import SAC, SACConfig\n"
        "from gendm.data.replay import Batch\n"
        "warnings.simplefilter('ignore')\n"
        "env = gym.make('Pendulum-v1')\n"
        "agent = SAC(SACConfig(hidden=(16, 16), precision='bf16'), env.observation_space,"
        " env.action_space, torch.device('cpu'))\n"
        "z = torch.zeros(8)\n"
        "agent.update(Batch(torch.randn(8, 3), torch.rand(8, 1), z, torch.randn(8, 3), z, z))\n"
        "print(hardware_native_bf16('cpu'), resolve_precision('auto', 'cpu'))\n"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "fp32"]

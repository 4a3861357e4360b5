"""Where a result came from: commit, package versions, CPU and threads, date.

``provenance()`` is recorded at the top of every benchmark result file and in ``summary.json``. It
holds no personal data (no hostname, user name or paths). Package versions are read from installed
distribution metadata (or ``__version__`` of a module already imported), so no package is imported
for the sake of its version. It needs only the standard library and, where installed, torch: the
d3rlpy benchmark calls it from an environment where the rest of gendm cannot be imported.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# module name -> distribution name
PACKAGES = {
    "gendm": "gendm",
    "torch": "torch",
    "numpy": "numpy",
    "gymnasium": "gymnasium",
    "stable_baselines3": "stable-baselines3",
    "sbx": "sbx-rl",
    "jax": "jax",
    "jaxlib": "jaxlib",
    "d3rlpy": "d3rlpy",
    "minari": "minari",
    "mujoco": "mujoco",
    "transformers": "transformers",
    "trl": "trl",
}
REQUIRED = ("gendm", "torch", "numpy", "gymnasium")
# The x86 features that decide which kernels (and so which speed) a benchmark gets.
CPU_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")


def provenance(threads: int | None = None) -> dict[str, Any]:
    """Commit, dirty flag, UTC time, package versions, CPU model and flags, torch's CPU capability,
    whether gendm treats bf16 as native on the CPU, and threads (``threads``: what the caller asked for)."""
    model, flags = cpu_info()
    out: dict[str, Any] = {
        "git": git_state(Path(__file__).resolve().parent),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "kernel": platform.release(),
        },
        "cpu": {
            "model": model,
            **cpu_id(),
            "flags": {f: f in flags for f in CPU_FLAGS} if flags else {},
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        },
        "threads": {"requested": threads, **{k.lower(): os.environ.get(k) for k in THREAD_ENV}},
    }
    out["cpu"].update(_torch_cpu(out["threads"]))
    return out


def git_state(where: Path) -> dict[str, Any]:
    """Commit (full, short) of the git work tree holding ``where`` and whether it has uncommitted or
    untracked files; ``"unknown"`` outside git."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout if r.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip()
    if not commit:
        return {"commit": "unknown", "short": "unknown", "dirty": "unknown"}
    status = git("status", "--porcelain")
    changed = [line[3:] for line in status.splitlines() if line.strip()] if status is not None else None
    return {
        "commit": commit,
        "short": (git("rev-parse", "--short", "HEAD") or commit[:7]).strip(),
        "dirty": "unknown" if changed is None else bool(changed),
        "changed_files": None if changed is None else len(changed),
    }


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages in ``PACKAGES`` that are installed (required ones are
    always listed, ``"not installed"`` if missing)."""
    out = {"python": platform.python_version()}
    for module, dist in PACKAGES.items():
        mod = sys.modules.get(module)
        version = getattr(mod, "__version__", None) if mod is not None else None
        if version is None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = "not installed" if module in REQUIRED else None
        if version is not None:
            out[module] = str(version)
    return out


def cpu_info() -> tuple[str, set[str]]:
    """(model name, feature flags) from /proc/cpuinfo, else lscpu, else ``platform.processor()``."""
    fields = _cpu_fields()
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    return model, set(fields.get("flags", "").split())


def cpu_id() -> dict[str, str | None]:
    """Vendor, family, model number and stepping: what tells CPU generations apart where the model
    name does not (a VM's "AMD EPYC" may be any Zen generation)."""
    fields = _cpu_fields()
    keys = {"vendor": "vendor_id", "family": "cpu family", "model_number": "model", "stepping": "stepping"}
    return {name: fields.get(key) for name, key in keys.items()}


def _cpu_fields() -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (else of lscpu), keys lower-cased."""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in fields:
            fields[key] = value.strip()
    return fields


def _torch_cpu(threads: dict[str, Any]) -> dict[str, Any]:
    """torch's view of the CPU (capability, native bf16) and its thread counts, written into ``threads``."""
    try:
        import torch
    except ImportError:
        return {"torch_capability": None, "native_bf16": None}
    threads["torch"] = torch.get_num_threads()
    threads["torch_interop"] = torch.get_num_interop_threads()
    try:
        from gendm.core.precision import native_bf16

        native: bool | None = bool(native_bf16(torch.device("cpu")))
    except ImportError:
        native = None
    probe = getattr(torch.backends.mkldnn, "is_bf16_supported", None)  # absent from some torch versions
    if probe is None and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported"):
        probe = torch.ops.mkldnn._is_mkldnn_bf16_supported  # oneDNN's own bf16 check (AVX-512 core)
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_bf16": bool(probe()) if probe else None,
        "native_bf16": native,
    }

"""Checkpoint format: ``weights.safetensors`` for every tensor, ``meta.json`` for everything else.

Nested state (agent modules, optimisers, normaliser statistics, loop counters) is flattened: each
tensor is stored in safetensors under its path (``actor/net.0.weight``) and replaced in the JSON tree
by ``{"__tensor__": path}``. Dicts with non-string keys (optimiser ``state`` is keyed by int) are
stored as ``{"__items__": [[key, value], ...]}``. Loading parses JSON and safetensors only, so a
checkpoint can never execute code. Both files are written atomically; ``meta.json`` is written last
and records the weights file's size and SHA-256, so a torn or tampered pair is detected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gendm.core.atomic import atomic_write_bytes, atomic_write_json
from gendm.core.errors import CheckpointError

FORMAT_VERSION = 1
WEIGHTS, META = "weights.safetensors", "meta.json"


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are torn, corrupt, incomplete or of another format: it cannot be read.

    ``problem`` says what is wrong, ``hint`` what to do; a caller that knows a better way to start over
    (``gendm train --no-resume``) swaps the hint with :meth:`with_hint`."""

    HINT = "Delete the checkpoint directory to start over, or restore a backup."

    def __init__(self, problem: str, hint: str = HINT) -> None:
        self.problem, self.hint = problem, hint
        super().__init__(f"{problem} {hint}")

    def with_hint(self, hint: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(self.problem, hint)

    def __reduce__(self) -> tuple:  # pickles (to another process) with both parts
        return type(self), (self.problem, self.hint)


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, tensors) | {"__numpy__": True}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, f"{prefix}/{k}" if prefix else k, tensors) for k, v in obj.items()}
        items = [[k, _flatten(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]
        return {"__items__": items}
    if isinstance(obj, list | tuple):
        out = [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": out} if isinstance(obj, tuple) else out
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(
        f"Cannot store a {type(obj).__name__} at {prefix!r} in a checkpoint (tensors and JSON only)."
    )


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CorruptCheckpointError(
                    f"meta.json refers to tensor {key!r}, which is missing from {WEIGHTS}."
                )
            return tensors[key].numpy() if obj.get("__numpy__") else tensors[key]
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    directory: str | Path, state: dict[str, Any], metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` (nested dicts of tensors and JSON values) to ``directory`` atomically."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    blob = st_save(tensors) if tensors else st_save({"_empty": torch.zeros(0)})
    atomic_write_bytes(directory / WEIGHTS, blob)
    meta = {
        "format_version": FORMAT_VERSION,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "weights_bytes": len(blob),
        "metadata": metadata or {},
        "state": tree,
    }
    atomic_write_json(directory / META, meta)
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The ``metadata`` dict of a checkpoint, without reading its weights."""
    return _read_meta(Path(directory))["metadata"]


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {directory}: {META} is missing.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(
            f"{path} is not valid JSON ({e}); the checkpoint is corrupt or truncated."
        ) from e
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or "state" not in meta:
        raise CorruptCheckpointError(f"{path} is not a gendm checkpoint of format version {FORMAT_VERSION}.")
    return meta


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(state, metadata)``; raise CheckpointError on anything missing, torn or corrupt."""
    directory = Path(directory)
    meta = _read_meta(directory)
    wpath = directory / WEIGHTS
    if not wpath.is_file():
        raise CorruptCheckpointError(
            f"The checkpoint at {directory} is incomplete: {WEIGHTS} is missing (its {META} is there)."
        )
    blob = wpath.read_bytes()
    size = meta.get("weights_bytes")
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise CorruptCheckpointError(
            f"{wpath} does not match {META} (size {len(blob)} vs {size} bytes or checksum differs): "
            "the checkpoint is truncated or corrupt."
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CorruptCheckpointError(f"{wpath} could not be parsed as safetensors: {e}") from e
    tensors = {k: v.to(device) for k, v in tensors.items()}
    return _unflatten(meta["state"], tensors), meta["metadata"]


def save_checkpoint_dir(
    directory: str | Path, state: dict[str, Any], metadata: dict[str, Any] | None = None
) -> Path:
    """Replace checkpoint ``directory`` as a whole: write ``directory.new``, then swap it in.

    A crash at any point leaves a complete checkpoint at ``directory`` or ``directory.old``, which
    ``find_checkpoint_dir`` falls back to.
    """
    import shutil

    final = Path(directory)
    new, old = final.with_name(final.name + ".new"), final.with_name(final.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    save_checkpoint(new, state, metadata)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint_dir(directory: str | Path) -> Path | None:
    """The committed checkpoint at ``directory``, else the previous one left by an interrupted swap."""
    final = Path(directory)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / META).is_file():
            return candidate
    return None

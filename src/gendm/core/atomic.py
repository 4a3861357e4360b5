"""Atomic file writes: write a temp file in the same directory, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def check_out_dir(out: Path, kind: str) -> None:
    """Refuse an output directory that cannot be a writable directory (a file, a file above it, no
    permission) with a ``ConfigError`` naming ``--out``, before any work is done."""
    from gendm.core.errors import ConfigError

    for path in (out, *out.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            what = "is a file" if path == out else f"cannot be created: {path} is a file"
            raise ConfigError(
                f"--out {out} {what}, not a {kind} directory. Choose another --out (a directory that does "
                "not exist yet is created)."
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: {path} is not writable. Choose another --out.")
        return

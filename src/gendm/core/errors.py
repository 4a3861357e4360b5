"""One error family. Every message says what was wrong, where, and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GendmError(Exception):
    """Base of every error gendm raises on purpose."""


class ConfigError(GendmError, ValueError):
    """A configuration field is unknown or has a bad value."""


class SpecError(GendmError, ValueError):
    """A benchmark spec is malformed."""


class UnknownNameError(GendmError, KeyError):
    """A name (algorithm, env, suite, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(GendmError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""


class DataError(GendmError, ValueError):
    """Data has the wrong shape or dtype, or contains NaN/Inf."""


class TrainingDivergedError(GendmError):
    """A loss or a parameter became NaN or Inf."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for close matches of ``name`` (case-insensitive), or ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build the standard 'unknown X' error with close-match suggestions."""
    choices = sorted(choices)
    msg = f"Unknown {kind} {name!r}.{suggest(name, choices)}"
    if len(choices) <= 20:
        msg += f" Available: {', '.join(choices)}."
    if hint:
        msg += f" {hint}"
    return UnknownNameError(msg)

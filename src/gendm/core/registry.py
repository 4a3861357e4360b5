"""Name -> entry registries with close-match suggestions on unknown names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from gendm.core.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries whose lookup error suggests the closest names."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind, self.hint = kind, hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._entries, self.hint) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

"""Small named registries (timm's ``register_model``/``list_models`` pattern).

Each kind of component (data sets, models, optimizers, measurements, claims,
tasks, suites) has its own :class:`Registry`.  Names are unique: registering a
name twice is an error, not a warning.  ``list("cohen2021/*")`` lists by
shell-style wildcard.  Third-party packages may add entries through a Python
entry point group (``eosbench.optimizers``, ``eosbench.models``), loaded
lazily the first time the registry is searched.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import RegistryError, UnknownNameError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from unique names to objects of one kind."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._group = entry_point_group
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is None."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"invalid {self.kind} name {name!r}")

        def _add(o: T) -> T:
            if name in self._items:
                raise RegistryError(f"duplicate {self.kind} name {name!r}")
            self._items[name] = o
            return o

        return _add if obj is None else _add(obj)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self._group):
            if ep.name in self._items:
                raise RegistryError(
                    f"entry point {ep.value!r} registers {self.kind} {ep.name!r}, "
                    "which already exists"
                )
            self._items[ep.name] = ep.load()

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`UnknownNameError` with suggestions."""
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{suggest(name, self._items)}"
            ) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style wildcard pattern."""
        self._load_entry_points()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._items)

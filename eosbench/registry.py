"""Small named registries (timm's ``register_model``/``list_models`` pattern).

Each kind of component (data sets, models, optimizers, measurements, claims,
tasks, suites) has its own :class:`Registry`.  Names are unique: registering a
name twice is an error, not a warning.  ``list("cohen2021/*")`` lists by
shell-style wildcard.  Third-party packages may add entries through a Python
entry point group (``eosbench.optimizers``, ``eosbench.models``), loaded
lazily the first time the registry is searched (``entry_points=False`` looks at the
entries registered in code only, loading none).  :meth:`Registry.temporarily` swaps an
entry for the duration of a ``with`` block (tests).
"""

from __future__ import annotations

import contextlib
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
        self._plugins: set[str] = set()  # the names registered by entry points
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
            self._plugins.add(ep.name)

    def _visible(self, entry_points: bool) -> dict[str, T]:
        if entry_points:
            self._load_entry_points()
            return self._items
        return {n: o for n, o in self._items.items() if n not in self._plugins}

    def get(self, name: str, entry_points: bool = True) -> T:
        """The object registered as ``name``; :class:`UnknownNameError` with suggestions.

        ``entry_points=False``: only the objects registered in code (``register``), without
        importing any entry point (plug-in)."""
        items = self._visible(entry_points)
        try:
            return items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}{suggest(name, items)}") from None

    def list(self, pattern: str = "*", entry_points: bool = True) -> list[str]:
        """Sorted names matching a shell-style wildcard pattern (``entry_points=False``: of
        the objects registered in code only, importing no plug-in)."""
        return sorted(n for n in self._visible(entry_points) if fnmatch.fnmatchcase(n, pattern))

    @contextlib.contextmanager
    def temporarily(self, name: str, obj: T | None) -> Iterator[T | None]:
        """Register ``obj`` as ``name`` for the duration of the ``with`` block, replacing the
        entry of that name if there is one (``obj=None``: no entry of that name meanwhile);
        the previous entry, or none, is restored after.  Loads no entry point."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"invalid {self.kind} name {name!r}")
        missing = object()
        before, was_plugin = self._items.get(name, missing), name in self._plugins
        self._plugins.discard(name)
        if obj is None:
            self._items.pop(name, None)
        else:
            self._items[name] = obj
        try:
            yield obj
        finally:
            if before is missing:
                self._items.pop(name, None)
                self._plugins.discard(name)
            else:
                self._items[name] = before
                if was_plugin:
                    self._plugins.add(name)

    @contextlib.contextmanager
    def rescanning(self) -> Iterator[None]:
        """Inside the ``with`` block the entry points count as not loaded yet (the next
        lookup scans them again, e.g. after a test installs a plug-in); every entry and the
        loaded state are restored after."""
        saved = (dict(self._items), set(self._plugins), self._entry_points_loaded)
        self._entry_points_loaded = False
        try:
            yield
        finally:
            self._items, self._plugins, self._entry_points_loaded = saved

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._items)

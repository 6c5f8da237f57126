"""Registries: unique names, wildcard listing, suggestions, entry points."""

from __future__ import annotations

from importlib import metadata

import pytest

from eosbench.errors import RegistryError, UnknownNameError
from eosbench.registry import Registry
from eosbench.suites import TASKS


def test_duplicate_is_an_error():
    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(RegistryError, match="duplicate thing name 'a'"):
        r.register("a", 2)


@pytest.mark.parametrize("bad", ["", " a", "a ", 3])
def test_invalid_names(bad):
    with pytest.raises(RegistryError):
        Registry("thing").register(bad, 1)


def test_decorator_and_wildcards():
    r = Registry("thing")

    @r.register("x/one")
    def one():
        return 1

    r.register("x/two", 2)
    r.register("y/one", 3)
    assert r.get("x/one") is one
    assert r.list("x/*") == ["x/one", "x/two"]
    assert r.list("*/one") == ["x/one", "y/one"]
    assert len(r) == 3 and "y/one" in r and list(r) == ["x/one", "x/two", "y/one"]


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownNameError) as e:
        TASKS.get("digits/fc-tanh/mse/gd/lr=0.11")
    assert "did you mean 'digits/fc-tanh/mse/gd/lr=0.1'" in str(e.value)


def test_entry_points_are_loaded_lazily(monkeypatch):
    class EP:
        name, value = "plugged", "pkg:obj"

        def load(self):
            return "object"

    calls = []

    def fake(group):
        calls.append(group)
        return [EP()] if group == "eosbench.things" else []

    monkeypatch.setattr(metadata, "entry_points", fake)
    r = Registry("thing", entry_point_group="eosbench.things")
    assert calls == []
    assert r.get("plugged") == "object"
    assert calls == ["eosbench.things"]
    r2 = Registry("thing", entry_point_group="eosbench.things")
    r2.register("plugged", 1)
    with pytest.raises(RegistryError, match="already exists"):
        r2.list()

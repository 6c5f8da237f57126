"""Results store: atomic writes, fault injection, run discovery, reuse, locks."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from eosbench import store
from eosbench.errors import UserError
from eosbench.suites import TASKS
from eosbench.task import (
    apply_overrides,
    computation_hash,
    content_hash,
    options,
    to_dict,
)

TASK = TASKS.get("digits/fc-tanh/mse/gd/lr=0.1")


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "run.json"
    store.atomic_write_json(p, {"x": 1.5, "nan": float("nan"), "l": [float("inf"), 2]})
    assert json.loads(p.read_text()) == {"x": 1.5, "nan": None, "l": [None, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["run.json"]


def test_failed_write_leaves_previous_content(tmp_path, monkeypatch):
    p = tmp_path / "run.json"
    store.atomic_write_json(p, {"version": 1})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.atomic_write_json(p, {"version": 2})
    assert json.loads(p.read_text()) == {"version": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["run.json"]  # no temporary left


def test_records_round_trip_and_corruption(tmp_path):
    p = tmp_path / "metrics.jsonl"
    recs = [{"step": 0, "loss": 1.0}, {"step": 1, "loss": float("nan")}]
    store.atomic_write_text(p, store.dumps_records(recs))
    assert store.read_records(p) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": None}]
    p.write_text('{"step": 0}\n{"step": 1, "lo')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not valid JSON"):
        store.read_records(p)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        store.read_json(tmp_path / "run.json")


def test_find_runs_and_finished(tmp_path):
    a = store.run_dir(tmp_path, "task-a", 0)
    b = store.run_dir(tmp_path, "task-b", 1)
    d = to_dict(TASK)
    store.atomic_write_json(a / store.RUN_FILE, {"task": d, "seed": 0, "status": "completed"})
    store.atomic_write_json(b / store.RUN_FILE, {"task": d, "seed": 1, "status": "running"})
    assert store.find_runs([tmp_path]) == [a, b]
    assert store.find_runs([a]) == [a]
    h = computation_hash(TASK)
    assert store.finished_run(a, h, 0)
    assert not store.finished_run(a, "other", 0)
    assert not store.finished_run(a, h, 1)
    assert not store.finished_run(b, h, 1)  # still running: not reusable


def test_finished_run_is_judged_by_its_computation_not_its_claims(tmp_path):
    a = store.run_dir(tmp_path, "task-a", 0)
    store.atomic_write_text(a / store.METRICS_FILE, store.dumps_records([{"step": 0}]))
    store.atomic_write_json(
        a / store.RUN_FILE, {"task": to_dict(TASK), "seed": 0, "status": "completed"}
    )
    band = replace(TASK.claims[0], options=options(band=(0.5, 2.0)))
    recalibrated = replace(TASK, claims=(band,), description="new words")
    assert content_hash(recalibrated) != content_hash(TASK)
    assert store.finished_run(a, computation_hash(recalibrated), 0)  # same computation
    other = apply_overrides(TASK, ["optimizer.lr=0.05"])
    assert not store.finished_run(a, computation_hash(other), 0)
    # a record whose task does not parse is never reused
    store.atomic_write_json(a / store.RUN_FILE, {"task": {"name": "x"}, "seed": 0,
                                                  "status": "completed"})
    assert store.recorded_computation(store.read_run_json(a)) is None
    assert not store.finished_run(a, computation_hash(TASK), 0)
    with pytest.raises(UserError, match="not a run directory"):
        store.find_runs([tmp_path / "missing"])


def test_lock_excludes_a_second_worker(tmp_path):
    with (
        store.locked(tmp_path / "r"),
        pytest.raises(UserError, match="another process"),
        store.locked(tmp_path / "r"),
    ):
        pass
    with store.locked(tmp_path / "r"):  # released
        pass

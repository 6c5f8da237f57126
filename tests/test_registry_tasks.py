"""Every registered task builds and runs (parametrized over the registry, timm-style):
data, model, loss, optimizer and measurements fit together; a few steps on a small subset."""

from __future__ import annotations

import os

import pytest

from eosbench import store
from eosbench.runner import RunOptions, run
from eosbench.suites import TASKS
from eosbench.task import apply_overrides


@pytest.mark.parametrize("name", TASKS.list())
def test_task_runs_a_few_steps(name, tmp_path):
    task = TASKS.get(name)
    if task.data.name.startswith("cifar") and not os.environ.get("EOSBENCH_DATA"):
        pytest.skip("EOSBENCH_DATA is not set (CIFAR tasks need the data)")
    small = ["schedule.steps=3"]
    if task.data.name != "scalar":
        small += ["data.n_train=64", "data.n_test=32"]
    if task.optimizer.batch_size:
        small += ["optimizer.batch_size=8"]
    rdir = run(apply_overrides(task, small), task.seeds[0],
               RunOptions(out=tmp_path, device="cpu", progress=False))
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] in ("completed", "diverged")
    recs = store.read_records(rdir / store.METRICS_FILE)
    measured = {m.name for m in task.measurements}
    keys = set().union(*recs)
    if "sharpness" in measured:
        assert "sharpness" in keys
    if "batch_sharpness" in measured:
        assert "batch_sharpness" in keys

"""Every registered combination builds and runs (parametrized over the registry,
timm-style): data, model, loss, optimizer and measurements fit together; a few steps on a
small subset.  Tasks that differ only in numbers (step sizes, budgets, data set size or
name, seeds) are one combination, tested once, on the data available here (a CIFAR-100
combination runs on the CIFAR-10 copy: its reader is tested in test_data)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from eosbench import store
from eosbench.models import available
from eosbench.runner import RunOptions, run
from eosbench.suites import TASKS
from eosbench.task import apply_overrides


def _combination(task) -> tuple:
    o, d = task.optimizer, task.data
    return (
        d.name == "scalar", d.augment, d.label_noise > 0, task.model.name, task.model.batchnorm,
        task.loss, o.name, o.base, o.momentum > 0, o.nesterov, o.batch_size is None,
        o.normalized, task.schedule.lr_schedule,
        tuple(sorted(m.name for m in task.measurements)),
        tuple(sorted(c.name for c in task.claims)),
    )  # fmt: skip


def _representatives() -> list[str]:
    seen: dict[tuple, str] = {}
    for name in sorted(TASKS.list(), key=lambda n: TASKS.get(n).data.name == "cifar100"):
        seen.setdefault(_combination(TASKS.get(name)), name)
    return sorted(seen.values())


@pytest.mark.parametrize("name", _representatives())
def test_task_runs_a_few_steps(name, tmp_path):
    task = TASKS.get(name)
    if not available(task.model.name):
        pytest.skip(f"model {task.model.name!r} needs its optional package (nox -s tests_vision)")
    if task.data.name.startswith("cifar") and not os.environ.get("EOSBENCH_DATA"):
        pytest.skip("EOSBENCH_DATA is not set (CIFAR tasks need the data)")
    small = ["schedule.steps=3"]
    if task.data.name == "cifar100":
        small += ["data.name=cifar10"]
    if task.data.name != "scalar":
        small += ["data.n_train=64", "data.n_test=32"]
    if task.optimizer.batch_size and task.optimizer.batch_size > 8:  # batch 1 stays batch 1
        small += ["optimizer.batch_size=8"]
    if task.model.name == "torchvision":  # ResNet-18: one HVP on 64 images is 22 s here
        small = [s for s in small if not s.startswith("data.n_")] + ["data.n_train=8",
                                                                     "data.n_test=8"]
    if task.model.name in ("resnet20", "resnet32", "vit"):  # wiring, not capacity
        small += ["model.width=64" if task.model.name == "vit" else "model.width=4", "model.depth=1"]
    small_task = apply_overrides(task, small)
    # the measurements' own accuracy is tested elsewhere: a few products suffice here
    light = {"max_products": 6, "n_samples": 3}
    small_task = replace(
        small_task,
        measurements=tuple(
            replace(m, options=tuple((k, light.get(k, v)) for k, v in m.options))
            for m in small_task.measurements
        ),
    )
    rdir = run(small_task, task.seeds[0],
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

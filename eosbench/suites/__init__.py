"""The registered tasks and suites.

Task names read ``<dataset>/<model>/<loss>/<optimizer>[/<param>=<value>...]``;
a suite is a named list of task names.  Every positive task expects PASS of its
claims; a negative control states ``expect="FAIL"``.  Each band's calibration
(the seeds' values it was set from) is written next to the task.

Suites live in one module each (:mod:`.smoke`, :mod:`.paper`); this module holds
the registries and the helpers they share.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from ..task import MeasurementSpec, Task, options

TASKS: Registry[Task] = Registry("task")
SUITES: Registry[Suite] = Registry("suite")


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[str, ...]
    description: str = ""


def register(task: Task) -> Task:
    TASKS.register(task.name, task)
    return task


def suite(name: str, tasks: list[Task], description: str) -> Suite:
    s = Suite(name, tuple(t.name for t in tasks), description)
    SUITES.register(name, s)
    return s


def sharp(every: int, **kw) -> MeasurementSpec:
    return MeasurementSpec("sharpness", every=every, options=options(**kw))


from . import paper, smoke  # noqa: E402,F401  (registration)

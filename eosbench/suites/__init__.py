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
class Comparison:
    """A suite-level claim across tasks and seeds (see :mod:`eosbench.claims.compare`).

    ``ordering``: ``metric`` of task ``better`` exceeds ``against`` (default: the same
    metric) of task ``worse``, by a one-sided Welch t-test at level ``alpha`` over
    seeds.  A metric is a recorded key, its last finite value (``test_acc``) or, with
    ``@first``, its first (``test_acc@first``, the untrained network's).
    """

    name: str  # registered comparison: ordering
    better: str  # task name
    worse: str  # task name
    metric: str = "test_acc"
    against: str | None = None  # metric of the worse task (default: metric)
    alpha: float = 0.05
    expect: str = "PASS"  # PASS, or FAIL for a negative control
    citation: str = ""
    note: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[str, ...]
    description: str = ""
    comparisons: tuple[Comparison, ...] = ()


def is_registered(task: Task) -> bool:
    """Whether ``task`` computes what the registered task of its name computes (its claims
    may differ: they judge runs afterwards); such runs get the plain run-directory name."""
    from ..task import computation_hash

    return task.name in TASKS and computation_hash(TASKS.get(task.name)) == computation_hash(task)


def register(task: Task) -> Task:
    TASKS.register(task.name, task)
    return task


def suite(
    name: str, tasks: list[Task], description: str, comparisons: tuple[Comparison, ...] = ()
) -> Suite:
    names = tuple(t.name for t in tasks)
    for c in comparisons:
        for t in (c.better, c.worse):
            if t not in names:
                raise ValueError(f"suite {name!r}: comparison names task {t!r} not in the suite")
    s = Suite(name, names, description, tuple(comparisons))
    SUITES.register(name, s)
    return s


def sharp(every: int, **kw) -> MeasurementSpec:
    return MeasurementSpec("sharpness", every=every, options=options(**kw))


def generalized(method: str, every: int) -> MeasurementSpec:
    """The generalized sharpness in the norm of steepest-descent ``method``
    (:mod:`eosbench.optim.steepest`): 20 power or Frank-Wolfe steps from 2 starts, the first
    warm (``benchmarks/bench_generalized.py``)."""
    from ..optim.steepest import NORM_OF

    return MeasurementSpec("generalized_sharpness", every=every,
                           options=options(norm=NORM_OF[method], iters=20, restarts=2))  # fmt: skip


from . import (  # noqa: E402,F401  (registration)
    architectures,
    flow,
    generalization,
    leaderboard,
    paper,
    regularization,
    smoke,
    sources,
    steepest,
    theory,
    tuners,
)

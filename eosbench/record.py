"""One loaded run: :class:`Run`, read from a run directory or from a results artifact.

Every layer above the runner -- claims, comparisons, report tables and figures, the
leaderboard -- works on this one frozen type.  Its time series is a :class:`Series`: one
``step`` column and one float column per recorded key, NaN where a step did not record the
key (or recorded a non-finite value, which the store writes as ``null``).

A run in a results artifact may come without its series (``series is None``: records kept
from a machine that cannot be re-run here, such as a GPU session); such a run has its
recorded verdicts and nothing to re-evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .task import ClaimSpec, Task

COST_KEYS = ("wall_seconds", "measure_seconds", "gradient_evaluations", "gradient_examples",
             "attempts")  # fmt: skip


@dataclass(frozen=True, eq=False)
class Series:
    """A run's time series in columns: ``steps`` (int64, ascending as recorded) and
    ``columns[key]`` (float64, NaN where not recorded or not finite)."""

    steps: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Series:
        """Columns of ``metrics.jsonl``-style records (one dict per recorded step)."""
        records = list(records)
        steps = np.asarray([r["step"] for r in records], dtype=np.int64)
        keys = sorted({k for r in records for k in r} - {"step"})
        cols = {}
        for k in keys:
            col = np.full(len(records), np.nan)
            for i, r in enumerate(records):
                v = r.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    col[i] = v
            if np.isfinite(col).any():  # as the artifact keeps it: a key with values
                cols[k] = col
        return cls(steps, cols)

    @property
    def keys(self) -> list[str]:
        return sorted(self.columns)

    @property
    def last_step(self) -> int:
        return int(self.steps.max()) if len(self.steps) else 0

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) where ``name`` was recorded with a finite value."""
        col = self.columns.get(name)
        if col is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        keep = np.isfinite(col)
        return self.steps[keep], col[keep]

    def records(self) -> list[dict[str, Any]]:
        """The series as records again (finite values only), e.g. for a leaderboard copy."""
        out = []
        for i, s in enumerate(self.steps):
            r: dict[str, Any] = {"step": int(s)}
            for k, col in self.columns.items():
                if math.isfinite(col[i]):
                    r[k] = float(col[i])
            out.append(r)
        return out


@dataclass(frozen=True, eq=False)
class Run:
    """A run read from disk.  ``task`` is the recorded task without its claims (what the run
    computed); ``claims`` are the claims recorded with it; :meth:`judge` is the task whose
    claims judge it now.  ``record`` is the run record (``run.json``) as read; ``verdicts``
    the recorded verdicts (``claims.json``; empty when never checked)."""

    id: str  # where it came from: the run directory, or its path inside an artifact
    task: Task
    claims: tuple[ClaimSpec, ...]
    seed: int
    status: str
    diverged_at: int | None
    step: int
    provenance: Mapping[str, Any]
    cost: Mapping[str, Any]
    series: Series | None
    record: Mapping[str, Any] = field(default_factory=dict)
    verdicts: tuple[Any, ...] = ()  # claims.Verdict, as recorded

    @classmethod
    def from_record(
        cls, id: str, record: Mapping[str, Any], series: Series | None, verdicts=()
    ) -> Run:
        """The run of a ``run.json`` record (raises :class:`UserError` for a record whose task
        does not parse)."""
        from .task import from_dict

        task = from_dict(record["task"])
        return cls(
            id=id,
            task=replace(task, claims=()),
            claims=task.claims,
            seed=int(record["seed"]),
            status=record.get("status", "?"),
            diverged_at=record.get("diverged_at"),
            step=int(record.get("step") or 0),
            provenance=record.get("provenance") or {},
            cost={k: record.get(k) for k in COST_KEYS},
            series=series,
            record=record,
            verdicts=tuple(verdicts),
        )

    @classmethod
    def synthetic(
        cls,
        records: Iterable[Mapping[str, Any]],
        status: str = "completed",
        diverged_at: int | None = None,
        task: Task | None = None,
        seed: int = 0,
    ) -> Run:
        """A run of hand-made records (tests, examples)."""
        series = Series.from_records(records)
        task = task or Task(name="synthetic")
        return cls(
            id="synthetic",
            task=replace(task, claims=()),
            claims=task.claims,
            seed=seed,
            status=status,
            diverged_at=diverged_at,
            step=series.last_step,
            provenance={},
            cost={},
            series=series,
        )

    @property
    def has_series(self) -> bool:
        return self.series is not None

    @property
    def finished(self) -> bool:
        from .store import FINISHED

        return self.status in FINISHED

    @property
    def recorded_task(self) -> Task:
        """The task as recorded with the run, claims included."""
        return replace(self.task, claims=self.claims)

    def judge(self) -> Task:
        """The task whose claims judge this run: the registered task of that name when it
        computes the same thing (its claims may have been recalibrated since the run), else
        the task as recorded (an overridden variant, or a task no longer registered)."""
        from .suites import TASKS
        from .task import computation_hash

        if self.task.name in TASKS:
            current = TASKS.get(self.task.name)
            if computation_hash(current) == computation_hash(self.task):
                return current
        return self.recorded_task

    def _series(self) -> Series:
        if self.series is None:
            raise ValueError(f"{self.id}: the run's time series is not available")
        return self.series

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a recorded key where finite (see :meth:`Series.values`)."""
        return self._series().values(name)

    @property
    def last_step(self) -> int:
        return self._series().last_step

    @property
    def keys(self) -> list[str]:
        return self._series().keys

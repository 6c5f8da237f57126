"""Executable claims: pure functions over a run's recorded time series.

A claim is registered by name as ``claim(traj: Trajectory, task: Task, **options) ->
Verdict``.  It never trains or measures anything itself, so it can be tested on
hand-made trajectories (AlgoPerf's ``has_reached_validation_target`` pattern).
A claim that cannot be evaluated (the run diverged, the threshold was never
reached in the budget, too few measurements) is ``FAIL`` with that reason,
never ``PASS``.  A task states the verdict it expects of each claim: ``PASS``,
or ``FAIL`` for a negative control.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..errors import UserError
from ..registry import Registry
from ..store import FINISHED
from ..task import Task, computation_hash, content_hash, from_dict

CLAIMS: Registry = Registry("claim")


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str  # PASS | FAIL
    measured: float | None  # the statistic the claim tests
    target: float | None  # what it is compared with (e.g. 2/lr)
    tolerance: str  # the band or bound, in words/formula
    detail: str  # the numbers behind the verdict, or why it could not be evaluated
    expected: str = "PASS"
    citation: str = ""
    finished: bool = True  # False: judged on a cut-off run, which proves no control either

    @property
    def as_expected(self) -> bool:
        """The verdict the task expects, on a finished run (a cut-off run FAILs every claim,
        which a negative control must not count as its expected FAIL)."""
        return self.finished and self.verdict == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "as_expected": self.as_expected}


class Trajectory:
    """A run's time series: ``values(name)`` gives (steps, values) where recorded and finite."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        status: str = "completed",
        diverged_at: int | None = None,
    ):
        self.records = records
        self.status = status
        self.diverged_at = diverged_at

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [
            (r["step"], r[name])
            for r in self.records
            if r.get(name) is not None and math.isfinite(r[name])
        ]
        if not pts:
            return np.zeros(0, dtype=int), np.zeros(0)
        s, v = zip(*pts, strict=True)
        return np.asarray(s), np.asarray(v, dtype=float)

    @property
    def last_step(self) -> int:
        return max((r["step"] for r in self.records), default=0)

    @classmethod
    def from_run(cls, path: Path) -> Trajectory:
        meta = store.read_json(Path(path) / store.RUN_FILE)
        return cls(
            store.read_records(Path(path) / store.METRICS_FILE),
            meta.get("status", "?"),
            meta.get("diverged_at"),
        )


def fail(claim: str, reason: str, **kw: Any) -> Verdict:
    """A not-evaluable claim: FAIL with the reason."""
    kw.setdefault("measured", None)
    kw.setdefault("target", None)
    kw.setdefault("tolerance", "")
    return Verdict(claim=claim, verdict="FAIL", detail=f"not evaluable: {reason}", **kw)


def evaluate(task: Task, traj: Trajectory) -> list[Verdict]:
    """Every claim of ``task`` on ``traj``, each with the task's expected verdict."""
    from . import eos, linear, stochastic  # noqa: F401  (registration)

    out = []
    for spec in task.claims:
        if traj.status not in FINISHED:  # a cut-off series must not pass for a whole run
            v = fail(
                spec.name,
                f"the run did not finish (status {traj.status!r} at step {traj.last_step})",
            )
            out.append(Verdict(**{**asdict(v), "expected": spec.expect, "finished": False}))
            continue
        fn = CLAIMS.get(spec.name)
        v = fn(traj, task, **dict(spec.options))
        out.append(Verdict(**{**asdict(v), "expected": spec.expect}))
    return out


RECORDED = "recorded, not re-evaluated (no metrics.jsonl here): "
RECALIBRATED = "claims as registered now (changed since the run): "


def current_definition(recorded: Task) -> Task:
    """The task whose claims judge a run of ``recorded``: the registered task of that name
    when it computes the same thing (its claims may have been recalibrated since the run),
    else ``recorded`` itself (an overridden variant, or a task no longer registered)."""
    from ..suites import TASKS

    if recorded.name in TASKS:
        current = TASKS.get(recorded.name)
        if computation_hash(current) == computation_hash(recorded):
            return current
    return recorded


def recorded_verdicts(path: Path, task: Task, current: Task | None = None) -> list[Verdict]:
    """The verdicts in a run directory's ``claims.json``, each detail marked as recorded: a
    list with one verdict per claim of ``task`` (the task recorded with the run) or of
    ``current`` (the claims registered now, which ``check`` wrote there if the run was judged
    after they changed), else a :class:`UserError`."""
    f = Path(path) / store.CLAIMS_FILE
    rows = store.read_json(f)
    fields = Verdict.__dataclass_fields__
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{f}: not a claims file (expected a list of verdicts)")
    counts = {len(task.claims)} | ({len(current.claims)} if current is not None else set())
    if len(rows) not in counts:
        raise UserError(
            f"{f}: {len(rows)} verdicts recorded for the {len(task.claims)} claims of the task"
        )
    try:
        return [
            Verdict(**{**{k: r[k] for k in fields if k in r}, "detail": RECORDED + str(r["detail"])})
            for r in rows
        ]
    except (KeyError, TypeError) as e:
        raise UserError(f"{f}: not a claims file (a verdict lacks {e})") from None


def check_run(path: Path) -> list[Verdict]:
    """Evaluate a run directory's claims and write ``claims.json`` beside ``run.json``.

    The claims are those of the registered task when it computes what the run computed
    (:func:`current_definition`; verdicts judged by claims changed since the run say so in
    their detail), else those recorded in ``run.json``.  A run copied without its time
    series (``run.json`` and ``claims.json`` alone, as ``results/`` folders hold) cannot be
    re-evaluated: its recorded verdicts are returned, marked as such, and its
    ``claims.json`` is left as it is."""
    meta = store.read_json(Path(path) / store.RUN_FILE)
    try:
        task = from_dict(meta["task"])
    except (UserError, KeyError, TypeError) as e:
        raise UserError(f"{Path(path) / store.RUN_FILE}: {e}") from None
    judge = current_definition(task)
    if not (Path(path) / store.METRICS_FILE).exists() and (Path(path) / store.CLAIMS_FILE).exists():
        # a copy without its series (finished, or cut off as the GPU session's were): what was
        # recorded, judged by the claims recorded with the run or by those registered now
        verdicts = recorded_verdicts(path, task, judge)
        if meta.get("status") not in FINISHED:  # claims.json written before `finished` was
            verdicts = [replace(v, finished=False) for v in verdicts]
        return verdicts
    verdicts = evaluate(judge, Trajectory.from_run(path))
    if content_hash(judge) != content_hash(task):
        verdicts = [replace(v, detail=RECALIBRATED + v.detail) for v in verdicts]
    store.atomic_write_json(Path(path) / store.CLAIMS_FILE, [v.to_dict() for v in verdicts])
    return verdicts

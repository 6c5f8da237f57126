"""Executable claims: pure functions over a run's recorded time series.

A claim is registered by name as ``claim(run: Run, task: Task, **options) -> Verdict``
(:class:`~eosbench.record.Run`).  It never trains or measures anything itself, so it can be
tested on hand-made runs (``Run.synthetic(records)``) (AlgoPerf's ``has_reached_validation_target`` pattern).
A claim that is about some tasks only (the streaming risk ODEs) carries
``check(task, **options)``, which :func:`check_claims` calls with every option (the task's,
and the claim's defaults for the rest) before
anything runs, so that a task whose claim could never be judged is refused in preflight.
A claim that cannot be evaluated (the run diverged, the threshold was never
reached in the budget, too few measurements) is ``FAIL`` with that reason,
never ``PASS``.  A task states the verdict it expects of each claim: ``PASS``,
or ``FAIL`` for a negative control.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store
from ..errors import UserError
from ..record import Run
from ..registry import Registry
from ..task import Task, content_hash

if TYPE_CHECKING:
    from ..optim.thresholds import Threshold

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
    # False: judged on a cut-off run or one that never trained, which proves no control either
    finished: bool = True
    # each part of the predicate (booleans) and the numbers it was decided on, for programs
    # and tests (``detail`` says the same in words); not part of the recorded claims.json
    parts: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def as_expected(self) -> bool:
        """The verdict the task expects, on a finished run that trained (a cut-off or
        untrained run FAILs every claim, which a negative control must not count as its
        expected FAIL)."""
        return self.finished and self.verdict == self.expected

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["parts"]
        return {**d, "as_expected": self.as_expected}


def fail(claim: str, reason: str, why: str = "", **kw: Any) -> Verdict:
    """A not-evaluable claim: FAIL with the reason (``why``: a short key of it, for
    ``parts``: e.g. ``diverged``, ``never_reached``, ``too_few_points``)."""
    kw.setdefault("measured", None)
    kw.setdefault("target", None)
    kw.setdefault("tolerance", "")
    parts = {"evaluable": False, "why": why}
    return Verdict(claim, "FAIL", detail=f"not evaluable: {reason}", parts=parts, **kw)


def _registered() -> None:
    from . import eos, flow, linear, regularization, stochastic, streaming, theory, tuners  # noqa: F401


def check_claims(task: Task) -> None:
    """Raise :class:`UserError` (one line) for a claim of ``task`` that is not registered, an
    option it does not take, or a task it cannot judge (its ``check``)."""
    _registered()
    for spec in task.claims:
        fn = CLAIMS.get(spec.name)
        kw = dict(spec.options)
        try:
            bound = inspect.signature(fn).bind(None, task, **kw)
            bound.apply_defaults()
            if hasattr(fn, "check"):
                fn.check(task, **dict(list(bound.arguments.items())[2:]))
        except (TypeError, ValueError) as e:
            raise UserError(f"claim {spec.name!r}: {e}") from None


def evaluate(task: Task, run: Run, threshold: Threshold | None = None) -> list[Verdict]:
    """Every claim of ``task`` on ``run``, each with the task's expected verdict.

    ``threshold``: the optimizer's stability threshold to judge by, for an optimizer that is
    not installed (a leaderboard submission's declared one); default: the installed
    optimizer's (:func:`eosbench.optim.threshold`)."""
    _registered()
    out = []
    if not run.finished:  # a cut-off series must not pass for a whole run
        void = ("unfinished", f"the run did not finish (status {run.status!r} at step "
                f"{run.last_step})")  # fmt: skip
    elif run.status == "diverged" and not run.diverged_at:  # nothing trained: no control
        void = ("untrained", "the run never trained (non-finite at step 0)")
    else:
        void = None
    for spec in task.claims:
        if void is not None:
            v = fail(spec.name, void[1], void[0])
            out.append(replace(v, expected=spec.expect, finished=False))
            continue
        fn = CLAIMS.get(spec.name)
        kw = dict(spec.options)
        if threshold is not None and "threshold" in inspect.signature(fn).parameters:
            kw["threshold"] = threshold
        out.append(replace(fn(run, task, **kw), expected=spec.expect))
    return out


RECALIBRATED = "claims as registered now (changed since the run): "
RECORDED = "recorded (the run's time series is not published): "


def recorded_verdicts(path: Path) -> list[Verdict]:
    """The verdicts in a run directory's ``claims.json`` (none when it was never checked),
    else a :class:`UserError` naming the file."""
    f = Path(path) / store.CLAIMS_FILE
    if not f.exists():
        return []
    rows = store.read_json(f)
    fields = Verdict.__dataclass_fields__
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{f}: not a claims file (expected a list of verdicts)")
    try:
        return [Verdict(**{k: r[k] for k in fields if k in r}) for r in rows]
    except TypeError as e:
        raise UserError(f"{f}: not a claims file ({e})") from None


def check(run: Run) -> list[Verdict]:
    """The verdicts of ``run`` by the claims that judge it now (:meth:`Run.judge`); a verdict
    judged by claims changed since the run says so in its detail.  A run kept without its
    time series (a results artifact's GPU records) has its recorded verdicts, marked so."""
    if not run.has_series:  # a cut-off run proves no control, whatever its record says
        return [
            replace(v, detail=RECORDED + v.detail, finished=v.finished and run.finished)
            for v in run.verdicts
        ]
    judge = run.judge()
    verdicts = evaluate(judge, run)
    if content_hash(judge) != content_hash(run.recorded_task):
        verdicts = [replace(v, detail=RECALIBRATED + v.detail) for v in verdicts]
    return verdicts


def check_run(path: Path) -> list[Verdict]:
    """Evaluate a run directory's claims (:func:`check`) and write ``claims.json`` beside
    ``run.json``."""
    verdicts = check(store.load_run(path))
    store.atomic_write_json(Path(path) / store.CLAIMS_FILE, [v.to_dict() for v in verdicts])
    return verdicts

r"""Step-size tuners and the edge of stability (the ``tuners`` suites).

Roulet, Agarwala & Pedregosa (2023), "On the Interplay Between Stepsize Tuning and
Progressive Sharpening", arXiv:2312.00209v3: in full batch the Armijo line search tends to
ever-increase the sharpness, while Polyak steps operate at the edge of stability or slightly
beyond.  Roulet, Agarwala, Grill, Swirszcz, Blondel & Pedregosa (2024), "Stepping on the
Edge: Curvature Aware Learning Rate Tuners", arXiv:2407.06183v1: greedy tuners (line
searches, the quadratically greedy step, CDAT :math:`\sigma = 1`) undershoot the edge --
their step falls while the sharpness rises -- and CDAT with :math:`\sigma = 2` runs at it.

The step varies, so the edge is judged on the *normalized sharpness*

.. math::

    e_t = \eta_t\,\lambda_{\max}(t) / 2

at every step :math:`t` where both the step taken (``lr``, recorded by every tuned
optimizer and by a scheduled constant one) and the sharpness (``sharpness``; with
``quantity="preconditioned_sharpness"`` :math:`\lambda_{\max}(P^{-1}H)` for an Adam base)
were recorded, with :math:`\eta_t` the mean step over the ``span`` steps from :math:`t` on
(default: the measurement interval).  :math:`e_t = 1` is the edge for GD whatever the step
does.  The mean matters: the quadratically greedy step alternates between a long and a
short step (period 2; on digits 0.38 and 0.063 at step 500, seed 0), and measurements taken
every 20 steps see only the long one.  A run without a
recorded ``lr`` (a constant step) uses ``optimizer.lr``.  The window is the part
``window`` = (lo, hi) of the run's steps (default: its second half).

``tuner_below_edge`` (greedy rules undershoot): the median of :math:`e_t` over the window
is at most ``hi`` *and* the sharpness keeps rising there: the mean of its last ``k``
measurements in the window is at least :math:`(1+\text{rise})` times the mean of its first
``k``.

``tuner_sharpening`` (Armijo "tends to ever-increase the sharpness"): the second part of
``tuner_below_edge`` alone -- the sharpness still rises by :math:`(1+\text{rise})` across the
window.

``tuner_at_edge`` (on the edge): the median of :math:`e_t` over the window lies in ``band``.

Both are FAIL when not evaluable (diverged, fewer than ``min_points`` measurements in the
window).  The long-run loss orderings are suite comparisons (:mod:`.compare`).
"""

from __future__ import annotations

import numpy as np

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

CITATION = "Roulet et al. 2023 (arXiv:2312.00209v3); 2024 (arXiv:2407.06183v1)"
QUANTITIES = ("sharpness", "preconditioned_sharpness")


def normalized_sharpness(
    run: Run, task: Task, quantity: str = "sharpness", span: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, e_t, q_t) at the steps where ``quantity`` was measured and a step was taken:
    :math:`e_t = \\bar\\eta_t q_t / 2` with :math:`\\bar\\eta_t` the mean of the steps
    taken at :math:`t, \\dots, t + \\text{span} - 1` (module docstring); ``span=None``: the
    task's measurement interval of ``quantity`` (1 where it has none)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    if span is None:
        m = task.measurement(quantity)
        span = m.every if m is not None and m.every > 0 else 1
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise ValueError(f"span={span!r}: expected a positive integer")
    qs, q = run.values(quantity)
    ls, lr = run.values("lr")
    if ls.size == 0:  # a constant step
        return qs, task.optimizer.lr * q / 2, q
    taken = np.isin(qs, ls)
    qs, q = qs[taken], q[taken]
    lo = np.searchsorted(ls, qs)
    hi = np.searchsorted(ls, qs + span)
    mean = np.array([lr[a:b].mean() for a, b in zip(lo, hi, strict=True)])
    return qs, mean * q / 2, q


def _window(run: Run, task: Task, window, quantity: str, min_points: int, claim: str, span):
    """The window's (steps, e, q), or the FAIL verdict saying why it cannot be judged."""
    lo, hi = window
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"window={window!r}: expected 0 <= lo < hi <= 1")
    if run.status == "diverged":
        return fail(claim, f"diverged at step {run.diverged_at}", "diverged", citation=CITATION)
    steps, e, q = normalized_sharpness(run, task, quantity, span)
    last = run.last_step
    keep = (steps >= lo * last) & (steps <= hi * last)
    if keep.sum() < min_points:
        return fail(
            claim,
            f"{int(keep.sum())} measurements of lr x {quantity} in steps "
            f"{lo * last:.0f}-{hi * last:.0f} (< {min_points})",
            "too_few_points",
            citation=CITATION,
        )
    _, e1, _ = normalized_sharpness(run, task, quantity, 1)
    return steps[keep], e[keep], q[keep], float(np.median(e1[keep]))


def _summary(steps, e, quantity: str, at_step: float) -> tuple[float, str]:
    """The median of ``e`` over the window and the verdicts' words for it."""
    median = float(np.median(e))
    return median, (
        f"median eta*{quantity}/2 = {median:.3g} over steps {steps[0]}-{steps[-1]} "
        f"({len(e)} measurements; quartiles {np.quantile(e, 0.25):.3g}-"
        f"{np.quantile(e, 0.75):.3g}; with the step at t alone {at_step:.3g}); "
    )


def _rise(q, k: int, rise: float) -> tuple[float, float, bool]:
    """The means of the first and last ``k`` values of ``q`` and whether the last is at least
    ``1 + rise`` times the first."""
    q0, q1 = float(q[:k].mean()), float(q[-k:].mean())
    return q0, q1, q1 >= (1 + rise) * q0


@CLAIMS.register("tuner_below_edge")
def tuner_below_edge(
    run: Run,
    task: Task,
    hi: float = 0.8,
    rise: float = 0.1,
    k: int = 5,
    window: tuple[float, float] = (0.5, 1.0),
    quantity: str = "sharpness",
    min_points: int = 10,
    span: int | None = None,
) -> Verdict:
    """Greedy tuners undershoot the edge while the sharpness keeps rising (module docstring)."""
    name = "tuner_below_edge"
    w = _window(run, task, window, quantity, min_points, name, span)
    if isinstance(w, Verdict):
        return w
    steps, e, q, at_step = w
    median, summary = _summary(steps, e, quantity, at_step)
    q0, q1, rising = _rise(q, k, rise)
    below = median <= hi
    detail = (
        f"{summary}{quantity} {q0:.4g} -> {q1:.4g} "
        f"(x{q1 / q0:.3g}; mean of the first/last {k} in the window)"
    )
    return Verdict(
        name,
        "PASS" if below and rising else "FAIL",
        median,
        hi,
        f"median e <= {hi:g} and {quantity} rises >= x{1 + rise:g} over the window",
        detail,
        citation=CITATION,
        parts={
            "evaluable": True, "below": below, "rising": rising, "median": median,
            "q_start": q0, "q_end": q1, "n_points": len(e), "median_at_step": at_step,
        },  # fmt: skip
    )


@CLAIMS.register("tuner_at_edge")
def tuner_at_edge(
    run: Run,
    task: Task,
    band: tuple[float, float] = (0.9, 1.1),
    window: tuple[float, float] = (0.5, 1.0),
    quantity: str = "sharpness",
    min_points: int = 10,
    span: int | None = None,
) -> Verdict:
    """The normalized sharpness hovers at 1 over the window (module docstring)."""
    name = "tuner_at_edge"
    w = _window(run, task, window, quantity, min_points, name, span)
    if isinstance(w, Verdict):
        return w
    steps, e, q, at_step = w
    median, summary = _summary(steps, e, quantity, at_step)
    inside = band[0] <= median <= band[1]
    detail = f"{summary}{quantity} {q[0]:.4g} -> {q[-1]:.4g}"
    return Verdict(
        name,
        "PASS" if inside else "FAIL",
        median,
        1.0,
        f"median e in [{band[0]:g}, {band[1]:g}]",
        detail,
        citation=CITATION,
        parts={"evaluable": True, "in_band": inside, "median": median, "n_points": len(e),
               "median_at_step": at_step},  # fmt: skip
    )


@CLAIMS.register("tuner_sharpening")
def tuner_sharpening(
    run: Run,
    task: Task,
    rise: float = 0.1,
    k: int = 5,
    window: tuple[float, float] = (0.5, 1.0),
    quantity: str = "sharpness",
    min_points: int = 10,
    span: int | None = None,
) -> Verdict:
    """The sharpness keeps rising over the window (module docstring)."""
    name = "tuner_sharpening"
    w = _window(run, task, window, quantity, min_points, name, span)
    if isinstance(w, Verdict):
        return w
    steps, e, q, _ = w
    q0, q1, rising = _rise(q, k, rise)
    detail = (
        f"{quantity} {q0:.4g} -> {q1:.4g} (x{q1 / q0:.3g}; mean of the first/last {k} of the "
        f"{len(q)} measurements in steps {steps[0]}-{steps[-1]}); median eta*{quantity}/2 "
        f"there {float(np.median(e)):.3g}"
    )
    return Verdict(
        name,
        "PASS" if rising else "FAIL",
        q1 / q0,
        1 + rise,
        f"{quantity} rises >= x{1 + rise:g} over the window",
        detail,
        citation=CITATION,
        parts={"evaluable": True, "rising": rising, "q_start": q0, "q_end": q1,
               "n_points": len(q)},  # fmt: skip
    )

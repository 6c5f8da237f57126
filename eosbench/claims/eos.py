"""Edge of stability for full-batch methods (claims 1, 2 and 5 of the suite).

Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability", ICLR 2021, arXiv:2103.00065v3;
momentum thresholds from their appendix; Adam's preconditioned threshold from
Cohen et al. (2022), "Adaptive Gradient Methods at the Edge of Stability",
arXiv:2207.14484v1.

With :math:`T` the optimizer's stability threshold on the claim's quantity
:math:`q` (sharpness :math:`\\lambda_{\\max}(H)` with :math:`T=2/\\eta` for GD,
:math:`(2+2\\beta)/\\eta` heavy-ball, :math:`(2+2\\beta)/((1+2\\beta)\\eta)` Nesterov;
preconditioned sharpness with :math:`(2+2\\beta_1)/((1-\\beta_1)\\eta)` for Adam) and
:math:`t^*` the first measured step with :math:`q \\ge T`:

(a) progressive sharpening: :math:`q(t^*) \\ge (1+\\text{rise})\\,q(0)`;
(b) edge of stability: the median of :math:`q/T` over the post-:math:`t^*` window
    lies in ``band``;
(c) the loss is non-monotone after :math:`t^*` (some step increases it) and still
    decreases over the long run: the mean training loss over the last tenth of
    the run is below the loss at :math:`t^*`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..optim.thresholds import Threshold
from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

CITATION = "Cohen et al. 2021 (arXiv:2103.00065v3)"


EDGES = ("optimizer", "gd")


def _threshold(
    task: Task, quantity: str, edge: str = "optimizer", declared: Threshold | None = None
) -> float:
    """``T`` of the claim: plain GD's ``2/lr`` for ``edge="gd"``, else the optimizer's
    threshold (``declared``, or the installed optimizer's)."""
    from ..optim import threshold

    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    if edge == "gd":
        if quantity != "sharpness":
            raise ValueError(f"edge 'gd' (2/lr) is a threshold on sharpness, not on {quantity}")
        return 2.0 / task.optimizer.lr
    t = declared if declared is not None else threshold(task.optimizer)
    if t.quantity != quantity:
        raise ValueError(
            f"optimizer {task.optimizer.name!r} has a threshold on {t.quantity}, not on {quantity}"
        )
    return float(t.value)


@dataclass(frozen=True)
class EdgeWindow:
    """The post-edge window of one run, as the ``eos`` claim judges it: ``t_star`` the first
    measured step with ``q >= T``; the span ``t_star``-``end`` (``end`` the last step, or where
    the loss first fell below ``loss_drop`` x its value at ``t_star``); the ``window`` part
    of it, ``lo``-``hi``; ``ratio`` the median of ``q/T`` over the measurements in it
    (None with fewer than ``min_points``)."""

    t_star: int
    i_star: int  # index of t_star among the measurements
    end: int
    lo: float
    hi: float
    n_points: int
    ratio: float | None
    loss_star: float
    description: str  # "steps 1000-15000 (...)", for the verdict's detail


def edge_window(
    run: Run,
    T: float,
    quantity: str = "sharpness",
    window: tuple[float, float] = (0.0, 1.0),
    loss_drop: float | None = None,
    min_points: int = 5,
) -> EdgeWindow | None:
    """The :class:`EdgeWindow` of ``run`` at threshold ``T``; None if ``quantity`` never
    reached ``T``.  The one definition of "after t*" that claims and tables share."""
    steps, q = run.values(quantity)
    reached = np.nonzero(q >= T)[0]
    if len(reached) == 0:
        return None
    i_star = int(reached[0])
    t_star = int(steps[i_star])
    end = run.last_step
    ls, lv = run.values("train_loss")
    loss_star = float(lv[ls >= t_star][0]) if np.any(ls >= t_star) else float("nan")
    if loss_drop is not None:
        fitted = ls[(ls > t_star) & (lv < loss_drop * loss_star)]
        if len(fitted):
            end = int(fitted[0])
    span = f"steps {t_star}-{end}"
    if end != run.last_step:
        span += f" (loss < {loss_drop:g} x loss at t* from step {end})"
    if tuple(window) != (0.0, 1.0):
        span = f"the {window[0]:g}-{window[1]:g} part of {span}"
    lo, hi = t_star + window[0] * (end - t_star), t_star + window[1] * (end - t_star)
    sel = (steps >= lo) & (steps <= hi)
    n = int(sel.sum())
    ratio = float(np.median(q[sel] / T)) if n >= min_points else None
    return EdgeWindow(t_star, i_star, end, lo, hi, n, ratio, loss_star, span)


def constant_threshold(task: Task) -> tuple[str, float] | None:
    """(quantity, value) of the optimizer's threshold; None without a closed form or when
    the step size follows a schedule (the threshold then moves with it)."""
    from ..optim import threshold

    if task.schedule.lr_schedule != "constant":
        return None
    try:
        t = threshold(task.optimizer)
    except (ValueError, KeyError):
        return None
    return t.quantity, float(t.value)


def claim_window(run: Run, task: Task) -> tuple[str, float, EdgeWindow | None] | None:
    """(quantity, T, window) of the first ``eos`` claim of ``task`` that judges ``run`` by
    the optimizer's own threshold, with that claim's options (window, loss drop, minimum
    points); for a task without one, the optimizer's threshold with the default options.
    None where :func:`constant_threshold` is.  What a report prints as "median q/T after
    t*" is this window's ratio, so a table and a verdict on the same run never disagree."""
    thr = constant_threshold(task)
    if thr is None:
        return None
    q, T = thr

    def judges(o: dict) -> bool:
        return o.get("edge", "optimizer") == "optimizer" and o.get("quantity", "sharpness") == q

    opts = next((o for c in task.claims if c.name == "eos" and judges(o := dict(c.options))), {})
    keys = ("window", "loss_drop", "min_points")
    return q, T, edge_window(run, T, q, **{k: opts[k] for k in keys if k in opts})


@CLAIMS.register("eos")
def eos(
    run: Run,
    task: Task,
    quantity: str = "sharpness",
    band: tuple[float, float] = (0.9, 1.1),
    rise: float = 0.5,
    min_points: int = 5,
    window: tuple[float, float] = (0.0, 1.0),
    edge: str = "optimizer",
    loss_drop: float | None = None,
    citation: str = CITATION,
    threshold: Threshold | None = None,
) -> Verdict:
    """Sharpness rises to the threshold ``T`` and hovers there while the loss keeps falling.

    ``window`` selects a fraction of the post-t* span (Cohen et al. observe that with
    cross-entropy the sharpness may fall away from 2/eta late in training).  ``edge``:
    ``"optimizer"`` takes ``T`` from the optimizer (:func:`eosbench.optim.threshold`);
    ``"gd"`` takes plain GD's ``2/lr`` at the same step size, the mirror check (a negative
    control) for an optimizer whose own edge lies elsewhere: SAM below it, heavy ball above.
    ``loss_drop``: the post-t* span ends where the training loss first falls below
    ``loss_drop`` times its value at t* (the end of the run if it never does); with
    cross-entropy the Hessian shrinks as the loss goes to zero, so the sharpness leaves 2/eta
    once the data are nearly fitted, however long the run.  ``threshold``: a declared
    threshold instead of the installed optimizer's (:func:`eosbench.claims.evaluate`).
    The window is :func:`edge_window`'s.
    """
    name = f"eos[{quantity}]" if edge == "optimizer" else f"eos[{quantity}, T=2/lr]"
    T = _threshold(task, quantity, edge, threshold)
    tol = f"median {quantity}/T in [{band[0]}, {band[1]}]; rise >= {rise}"
    if loss_drop is not None:
        tol += f"; until loss < {loss_drop:g} x loss(t*)"
    kw = dict(target=T, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    steps, q = run.values(quantity)
    if len(q) < 2:
        return fail(name, f"fewer than 2 measurements of {quantity}", "too_few_points", **kw)
    w = edge_window(run, T, quantity, window, loss_drop, min_points)
    if w is None:
        return fail(
            name,
            f"{quantity} never reached T={T:.4g} (max {q.max():.4g} at step "
            f"{steps[q.argmax()]} of {run.last_step})",
            "never_reached",
            **kw,
        )
    if w.ratio is None:
        return fail(
            name,
            f"only {w.n_points} measurements after t*={w.t_star} (need {min_points}): "
            + ("budget too short" if w.end == run.last_step else f"the window is {w.description}"),
            "too_few_points",
            **kw,
        )
    windowed = f" in {w.description}" if loss_drop is not None or tuple(window) != (0.0, 1.0) else ""
    sharpened = bool(q[w.i_star] >= (1 + rise) * q[0])
    hovers = band[0] <= w.ratio <= band[1]
    ls, lv = run.values("train_loss")
    post = lv[ls >= w.t_star]
    non_monotone = bool(len(post) > 1 and np.any(np.diff(post) > 0))
    last = run.last_step
    tail = lv[ls >= last - max(1, (last - w.t_star) // 10)]
    decreasing = bool(len(tail) and float(np.mean(tail)) < w.loss_star)
    ok = sharpened and hovers and non_monotone and decreasing
    detail = (
        f"t*={w.t_star}; q(0)={q[0]:.4g} -> q(t*)={q[w.i_star]:.4g} "
        f"(sharpening {'ok' if sharpened else 'NO'}); median q/T after t* = {w.ratio:.4f} over "
        f"{w.n_points} points{windowed} (hover {'ok' if hovers else 'NO'}); loss "
        f"non-monotone after t*: {non_monotone}; loss {w.loss_star:.4g} at t* -> "
        f"{np.mean(tail) if len(tail) else float('nan'):.4g} "
        f"at end (decreasing {'ok' if decreasing else 'NO'})"
    )
    return Verdict(
        claim=name,
        verdict="PASS" if ok else "FAIL",
        measured=w.ratio * T,
        target=T,
        tolerance=tol,
        detail=detail,
        citation=citation,
        parts={"sharpened": sharpened, "hovers": hovers, "non_monotone": non_monotone,
               "decreasing": decreasing, "t_star": w.t_star, "ratio": w.ratio,
               "n_points": w.n_points},  # fmt: skip
    )

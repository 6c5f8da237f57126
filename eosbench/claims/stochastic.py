"""Edge of stochastic stability (claims 3 and 4 of the suite).

Andreyev & Beneventano, "Edge of Stochastic Stability: Revisiting the Edge of
Stability for SGD", arXiv:2412.20553v3 (the v3 statement: it is the *batch
sharpness* :math:`\\mathbb{E}_B[g_B^\\top H_B g_B/\\lVert g_B\\rVert^2]`, not the
full-batch sharpness, that stabilizes at :math:`2/\\eta`; v1 stated it for the
mini-batch sharpness :math:`\\mathbb{E}_B[\\lambda_{\\max}(H_B)]`).  For momentum SGD,
Andreyev et al. (2026), arXiv:2604.14108: the batch sharpness settles at
:math:`2(1-\\beta)/\\eta` for small batches and :math:`2(1+\\beta)/\\eta` for large ones.

Predicate: over the last ``window`` fraction of the run's measurements, the median
batch sharpness divided by the target lies in ``band``, and the median full-batch
sharpness over the same window is below the target (full-batch sharpness stays
below the threshold).  Negative control (the authors'): with a step size too
small, the batch sharpness plateaus below :math:`2/\\eta` and the claim FAILs.

``full_below=False`` checks the first half alone (the batch sharpness hovers) and
reports the full-batch sharpness without judging it: for a batch large enough that
SGD's full-batch sharpness has grown to the GD edge (v3: it grows with the batch
size), where the batch-size dependence is checked across tasks instead (an
``ordering`` comparison of the suite).
"""

from __future__ import annotations

import numpy as np

from ..optim.thresholds import BATCH_TARGETS
from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail


@CLAIMS.register("eoss")
def eoss(
    run: Run,
    task: Task,
    target: str = "sgd",
    band: tuple[float, float] = (0.85, 1.15),
    window: float = 0.5,
    min_points: int = 4,
    citation: str = "Andreyev & Beneventano (arXiv:2412.20553v3)",
    full_below: bool = True,
) -> Verdict:
    t = BATCH_TARGETS[target]
    T = t.level(task.optimizer.lr, task.optimizer.momentum)
    name = f"eoss[{t.formula}]"
    tol = f"median batch_sharpness/T in [{band[0]}, {band[1]}]"
    tol += "; median sharpness < T" if full_below else " (sharpness reported, not judged)"
    kw = dict(target=T, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    bs, bv = run.values("batch_sharpness")
    start = run.last_step * (1 - window)
    sel = bs >= start
    if sel.sum() < min_points:
        return fail(
            name,
            f"only {int(sel.sum())} batch-sharpness measurements in the window",
            "too_few_points",
            **kw,
        )
    ratio = float(np.median(bv[sel]) / T)
    fs, fv = run.values("sharpness")
    fsel = fs >= start
    full = float(np.median(fv[fsel])) if fsel.any() else float("nan")
    hovers = band[0] <= ratio <= band[1]
    below = bool(fsel.any() and full < T)
    judged = ("below" if below else "NOT below") if full_below else "not judged"
    detail = (
        f"window steps >= {start:.0f}: median batch sharpness {ratio * T:.4g} = {ratio:.3f} T "
        f"over {int(sel.sum())} points (hover {'ok' if hovers else 'NO'}); median full-batch "
        f"sharpness {full:.4g} = {full / T:.3f} T ({judged}, T={T:.4g})"
    )
    return Verdict(
        claim=name,
        verdict="PASS" if hovers and (below or not full_below) else "FAIL",
        measured=ratio * T,
        target=T,
        tolerance=tol,
        detail=detail,
        citation=citation,
        parts={"hovers": hovers, "below": below, "ratio": ratio, "full": full,
               "n_points": int(sel.sum())},  # fmt: skip
    )


@CLAIMS.register("eoss_suppression")
def eoss_suppression(
    run: Run,
    task: Task,
    margin: float = 0.1,
    window: float = 0.5,
    min_points: int = 4,
    citation: str = "Andreyev & Beneventano (arXiv:2412.20553v3)",
) -> Verdict:
    """The full-batch sharpness is suppressed under SGD: over the last ``window`` of the run its
    median is below :math:`(1-\\text{margin})\\,2/\\eta` and below the median batch sharpness
    (v3: "lambda_max -- which is generally smaller than Batch Sharpness -- is suppressed").
    Negative control: full-batch GD at the same step size sits at the edge, :math:`2/\\eta`.
    """
    T = 2 / task.optimizer.lr
    name = "eoss[suppression]"
    tol = f"median sharpness < (1-{margin}) 2/lr and < median batch_sharpness"
    kw = dict(target=T, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    start = run.last_step * (1 - window)
    fs, fv = run.values("sharpness")
    bs, bv = run.values("batch_sharpness")
    fsel, bsel = fs >= start, bs >= start
    if fsel.sum() < min_points or bsel.sum() < min_points:
        return fail(
            name,
            f"fewer than {min_points} sharpness and batch-sharpness measurements in the window",
            "too_few_points",
            **kw,
        )
    full, batch = float(np.median(fv[fsel])), float(np.median(bv[bsel]))
    below_edge = full < (1 - margin) * T
    below_batch = full < batch
    detail = (
        f"window steps >= {start:.0f}: median full-batch sharpness {full:.4g} = "
        f"{full / T:.3f} x 2/lr ({'suppressed' if below_edge else 'NOT suppressed'}); "
        f"median batch sharpness {batch:.4g} = {batch / T:.3f} x 2/lr "
        f"({'above' if below_batch else 'NOT above'} the full-batch sharpness)"
    )
    return Verdict(
        claim=name,
        verdict="PASS" if below_edge and below_batch else "FAIL",
        measured=full,
        target=T,
        tolerance=tol,
        detail=detail,
        citation=citation,
        parts={"below_edge": below_edge, "below_batch": below_batch, "full": full,
               "batch": batch},  # fmt: skip
    )


@CLAIMS.register("sharpness_gap")
def sharpness_gap(
    run: Run,
    task: Task,
    band: tuple[float, float] = (0.5, 2.0),
    window: float = 0.5,
    min_points: int = 4,
    citation: str = "Liao, Kolomvaki & Kyrillidis (arXiv:2604.21016v1)",
) -> Verdict:
    r"""The stochastic sharpness gap: under SGD the full-batch sharpness sits below
    :math:`2/\eta` by :math:`\Delta S = \eta\beta\sigma_u^2/(4\alpha)` (the abstract's formula;
    the definitions used, :func:`eosbench.curvature.sharpness_gap`).  Over the last
    ``window`` of the run's ``sharpness_gap`` measurements, the measured gap
    :math:`2/\eta - \operatorname{median} S` and the predicted one from the medians,
    :math:`\eta\,\tilde\beta\,\tilde\sigma_u^2/(4\tilde\alpha)`, are both positive and their
    ratio (measured over predicted) lies in ``band``.  Medians of the factors rather than a
    median of the pointwise prediction: :math:`\alpha` crosses zero as the sharpness
    oscillates, and the equilibrium argument is about averages.  Only the abstract could be
    read offline, so the band is a factor of two either way, stated before any run; the
    paper's own agreement could not be read.  Negative control: a step too small for the
    budget (the sharpness far below :math:`2/\eta`), where the measured gap is not an
    equilibrium and the prediction does not apply."""
    T = 2 / task.optimizer.lr
    name = "sharpness_gap[2/lr - S = lr beta sigma_u^2 / (4 alpha)]"
    tol = f"measured/predicted gap in [{band[0]}, {band[1]}], both > 0"
    kw = dict(target=T, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    start = run.last_step * (1 - window)
    med = {}
    for k in ("lambda", "alpha", "beta", "sigma2"):
        s, v = run.values(f"sharpness_gap_{k}")
        sel = (s >= start) & np.isfinite(v)
        if sel.sum() < min_points:
            return fail(name, f"only {int(sel.sum())} sharpness_gap_{k} measurements in the "
                        "window", "too_few_points", **kw)  # fmt: skip
        med[k] = float(np.median(v[sel]))
    measured = T - med["lambda"]
    lr = task.optimizer.lr
    predicted = lr * med["beta"] * med["sigma2"] / (4 * med["alpha"]) if med["alpha"] > 0 \
        else float("nan")
    ratio = measured / predicted if predicted > 0 else float("nan")
    ok = measured > 0 and predicted > 0 and band[0] <= ratio <= band[1]
    detail = (
        f"window steps >= {start:.0f}: median sharpness {med['lambda']:.4g} (2/lr = {T:.4g}), "
        f"measured gap {measured:.4g}; predicted {predicted:.4g} from median alpha "
        f"{med['alpha']:.3g}, beta {med['beta']:.3g}, sigma_u^2 {med['sigma2']:.3g}; "
        f"ratio {ratio:.3g}"
    )
    return Verdict(claim=name, verdict="PASS" if ok else "FAIL", measured=measured,
                   target=predicted, tolerance=tol, detail=detail, citation=citation,
                   parts={"measured": measured, "predicted": predicted, "ratio": ratio, **med})  # fmt: skip

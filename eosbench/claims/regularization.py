r"""Claims of the ``regularization`` suites, each a pure function of the series.

``settles_below_edge``: weight decay and the MLP "phase transition" (Saether, Kolic, Poggio &
Beneventano, arXiv:2605.16622v1, abstract: "in MLPs, increasing weight decay causes a phase
transition in which the sharpness stabilizes at a threshold significantly below the
theoretical 2/eta boundary").  Judged on :math:`\lambda_{\max}` of the unregularized training
loss against the optimizer's threshold :math:`T` (GD with coupled L2 :math:`\omega`:
:math:`2/\eta - \omega`, :mod:`eosbench.optim.thresholds`), over the last ``window`` of the
run: PASS when its median is at most ``1 - margin`` of :math:`T` ("significantly below"),
the sharpness has stabilized (the medians of the window's two halves differ by at most
``settle`` of the later one) and the training loss still falls over the window (a run that
stopped training proves nothing).  GD at the edge is the negative control.

``nme_vanishes``: the Hessian's two parts, :math:`H = G + N` (the ``sharpness`` measurement
with ``split``): the Gauss-Newton matrix :math:`G = J^\top H_\ell J` and the "nonlinear
modeling error" :math:`N = \sum_i \partial_z\ell_i\,\nabla^2_\theta z_i` (Dauphin, Agarwala &
Mobahi, arXiv:2401.10809v2, whose abstract says :math:`N` "is commonly neglected in the
literature since it vanishes at interpolation").  Under MSE every :math:`\partial_z\ell_i`
is a residual, so :math:`N \to 0` as the training loss goes to zero and the sharpness becomes
the Gauss-Newton matrix's.  Judged on ``sharpness_nme_share``
:math:`s = v^\top N v / \lambda_{\max}(H)` along the top Hessian eigenvector :math:`v`: PASS
when the median :math:`|s|` over the last ``tail`` of the run's measurements is at most
``max_share`` and at most ``shrink`` times :math:`|s|` at the first measurement (the part
vanished; it was not absent from the start).  Cross-entropy, whose
:math:`\partial_z\ell = \mathrm{softmax}(z) - y` shrinks only as the margins grow, is the
negative control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

if TYPE_CHECKING:
    from ..optim.thresholds import Threshold

DAUPHIN2024 = "Dauphin, Agarwala & Mobahi 2024 (arXiv:2401.10809v2)"
SAETHER2026 = "Saether, Kolic, Poggio & Beneventano 2026 (arXiv:2605.16622v1, abstract)"


@CLAIMS.register("settles_below_edge")
def settles_below_edge(run: Run, task: Task, margin: float = 0.2, settle: float = 0.1,
                       window: float = 0.5, min_points: int = 6, citation: str = SAETHER2026,
                       threshold: Threshold | None = None) -> Verdict:  # fmt: skip
    """lambda_max settles at most ``1 - margin`` of the optimizer's threshold while the loss
    still falls (module docstring)."""
    from .eos import _threshold

    name = "settles_below_edge"
    for label, v in (("margin", margin), ("settle", settle), ("window", window)):
        if not 0 < v < 1:
            raise ValueError(f"{label}={v!r}: expected a number in (0, 1)")
    T = _threshold(task, "sharpness", "optimizer", threshold)
    tol = (f"median sharpness/T over the last {window:g} <= {1 - margin:g}; its halves within "
           f"{settle:g}; loss falling")  # fmt: skip
    kw = dict(target=T, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    steps, q = run.values("sharpness")
    start = run.last_step * (1 - window)
    sel = steps >= start
    if sel.sum() < min_points:
        return fail(name, f"{int(sel.sum())} sharpness measurements in the last {window:g} of "
                    f"the run (need {min_points})", "too_few_points", **kw)  # fmt: skip
    ws, wq = steps[sel], q[sel] / T
    mid = start + (run.last_step - start) / 2
    early, late = float(np.median(wq[ws < mid])), float(np.median(wq[ws >= mid]))
    ratio = float(np.median(wq))
    below = ratio <= 1 - margin
    settled = abs(late - early) <= settle * late
    ls, lv = run.values("train_loss")
    lw = lv[ls >= start]
    falling = bool(len(lw) >= 2 and lw[-1] < lw[0])
    detail = (
        f"steps {int(ws[0])}-{int(ws[-1])}: median sharpness/T {ratio:.4f} (T={T:.4g}; below "
        f"{'ok' if below else 'NO'}); halves {early:.4f} -> {late:.4f} (settled "
        f"{'ok' if settled else 'NO'}); loss {lw[0] if len(lw) else float('nan'):.4g} -> "
        f"{lw[-1] if len(lw) else float('nan'):.4g} (falling {'ok' if falling else 'NO'})"
    )
    return Verdict(name, "PASS" if below and settled and falling else "FAIL", ratio * T,
                   detail=detail, **kw,
                   parts={"evaluable": True, "below": below, "settled": settled,
                          "falling": falling, "ratio": ratio, "early": early,
                          "late": late})  # fmt: skip


@CLAIMS.register("nme_vanishes")
def nme_vanishes(run: Run, task: Task, max_share: float = 0.05, shrink: float = 0.5,
                 tail: float = 0.1, citation: str = DAUPHIN2024) -> Verdict:  # fmt: skip
    """The NME part of the sharpness ends below ``max_share`` of it, at most ``shrink`` of its
    first value (module docstring)."""
    name = "nme_vanishes"
    for label, v, lo, hi in (("max_share", max_share, 0, 1), ("shrink", shrink, 0, 1),
                             ("tail", tail, 0, 0.5)):  # fmt: skip
        if not lo < v <= hi:
            raise ValueError(f"{label}={v!r}: expected a number in ({lo}, {hi}]")
    tol = (f"median |v^T N v / lambda_max| over the last {tail:g} <= {max_share:g} and <= "
           f"{shrink:g} x its first value")  # fmt: skip
    kw = dict(target=max_share, tolerance=tol, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    steps, share = run.values("sharpness_nme_share")
    n = max(1, int(round(tail * len(share))))
    if len(share) < max(4, n + 1):
        return fail(name, f"{len(share)} measurements of sharpness_nme_share (need >= 4)",
                    "too_few_points", **kw)  # fmt: skip
    first, last = abs(float(share[0])), float(np.median(np.abs(share[-n:])))
    small = last <= max_share
    shrank = last <= shrink * first
    _, lv = run.values("train_loss")
    loss = f"; training loss {lv[0]:.3g} -> {lv[-1]:.3g}" if len(lv) else ""
    _, gn = run.values("sharpness_gn")
    _, lam = run.values("sharpness")
    gn_part = (f"; lambda_max(G)/lambda_max(H) {gn[0] / lam[0]:.4f} -> {gn[-1] / lam[-1]:.4f}"
               if len(gn) and len(lam) else "")  # fmt: skip
    detail = (
        f"|NME share| {first:.4g} at step {steps[0]}, median {last:.4g} over steps "
        f"{steps[-n]}-{steps[-1]} (small {'ok' if small else 'NO'}, shrank "
        f"{'ok' if shrank else 'NO'}){loss}{gn_part}"
    )
    return Verdict(name, "PASS" if small and shrank else "FAIL", last, detail=detail, **kw,
                   parts={"evaluable": True, "small": small, "shrank": shrank, "first": first,
                          "last": last})  # fmt: skip

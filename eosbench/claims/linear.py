"""Large step sizes on a depth-2 scalar linear network (claim 7 of the suite).

Model :math:`f(x) = abx` (``linear2``), loss :math:`\\frac1{2n}\\sum_i (abx_i - y_i)^2`.
Gradient flow conserves :math:`D = a^2 - b^2`, so from an unbalanced start it
converges to the solution :math:`ab = c^*` with sharpness
:math:`S_{GF} = m_2\\sqrt{D_0^2 + 4c^{*2}}` (:math:`m_2 = \\frac1n\\sum x_i^2`,
:math:`c^* = \\sum x_iy_i/\\sum x_i^2`), recorded at step 0 by the
``linear2_state`` measurement.  GD with a step size :math:`\\eta` for which
:math:`2/\\eta < S_{GF}` still converges, to a flatter solution with sharpness at
most :math:`2/\\eta` (Zhu et al. 2023, "Understanding Edge-of-Stability Training
Dynamics with a Minimalist Example", arXiv:2210.03294v2; Kreisler et al. 2023,
"Gradient Descent Monotonically Decreases the Sharpness of Gradient Flow Solutions
in Scalar Networks and Beyond", arXiv:2305.13064v2; Wang et al. 2022, "Large
Learning Rate Tames Homogeneity", arXiv:2109.03685v3).

Predicate: the run converged (final loss at most ``loss_tol``), its final
sharpness is at most :math:`(1+\\text{tol})\\,2/\\eta`, and it is below
:math:`(1-\\text{margin})\\,S_{GF}`.  Negative control: a small step size
(:math:`2/\\eta \\gg S_{GF}`) tracks gradient flow and ends near :math:`S_{GF}`.
"""

from __future__ import annotations

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

CITATION = "Kreisler et al. 2023 (arXiv:2305.13064v2); Zhu et al. 2023 (arXiv:2210.03294v2)"


@CLAIMS.register("linear_net")
def linear_net(
    run: Run,
    task: Task,
    tol: float = 0.01,
    margin: float = 0.05,
    loss_tol: float = 1e-6,
    citation: str = CITATION,
) -> Verdict:
    lr = task.optimizer.lr
    T = 2 / lr
    name = "linear_net[implicit regularization]"
    tolerance = f"final sharpness <= (1+{tol}) 2/lr and < (1-{margin}) S_GF; loss <= {loss_tol:g}"
    kw = dict(target=T, tolerance=tolerance, citation=citation)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    _, gf = run.values("gf_sharpness")
    _, s = run.values("sharpness")
    _, loss = run.values("train_loss")
    if not len(gf) or not len(s) or not len(loss):
        return fail(
            name, "needs gf_sharpness, sharpness and train_loss measurements", "missing", **kw
        )
    s_gf, s_end, l_end = float(gf[0]), float(s[-1]), float(loss[-1])
    converged = l_end <= loss_tol
    stable = s_end <= (1 + tol) * T
    flatter = s_end < (1 - margin) * s_gf
    detail = (
        f"final loss {l_end:.3g} ({'converged' if converged else 'NOT converged'}); final "
        f"sharpness {s_end:.4g} vs 2/lr = {T:.4g} ({'ok' if stable else 'ABOVE'}) and gradient-"
        f"flow solution S_GF = {s_gf:.4g} ({'flatter' if flatter else 'NOT flatter'})"
    )
    ok = converged and stable and flatter
    return Verdict(
        claim=name,
        verdict="PASS" if ok else "FAIL",
        measured=s_end,
        target=T,
        tolerance=tolerance,
        detail=detail,
        citation=citation,
        parts={"converged": converged, "stable": stable, "flatter": flatter,
               "final_sharpness": s_end, "gf_sharpness": s_gf, "final_loss": l_end},  # fmt: skip
    )

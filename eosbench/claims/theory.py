r"""Claims of the solvable models (the ``theory`` suite), each a pure function of the series.

``support_shrinks``: Beneventano, Pinto & Poggio (arXiv:2406.11110v1, abstract): "mini-batch
SGD effectively learns the support in the first layer of the network by shrinking to zero the
weights associated with irrelevant components of input", while "vanilla GD ... requires an
explicit regularization term" for it; the effect is "proportional to :math:`\eta/b`".  Judged
on ``support_norm``'s ``irrelevant_ratio`` :math:`\rho = \lVert W_1[:, r:]\rVert_F` at the end
over its value at step 0: PASS when :math:`\rho \le` ``max_ratio``.  GD is the negative
control (it converges with :math:`\rho` frozen near 1).  The ordering in :math:`\eta/b` is a
suite comparison (:mod:`.compare`) of the final ``irrelevant_ratio`` over seeds.  The paper's
theorem and its rate constant could not be read offline (only its abstract and the authors'
code), so no rate is claimed.
"""

from __future__ import annotations

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

SUPPORT = "Beneventano, Pinto, Poggio 2024 (arXiv:2406.11110v1)"


@CLAIMS.register("support_shrinks")
def support_shrinks(run: Run, task: Task, max_ratio: float = 0.8) -> Verdict:
    """The irrelevant first-layer weights end at most ``max_ratio`` of their initial norm."""
    name = "support_shrinks"
    if not 0 < max_ratio < 1:
        raise ValueError(f"max_ratio={max_ratio!r}: expected a number in (0, 1)")
    if run.status == "diverged":
        return fail(name, f"diverged at step {run.diverged_at}", "diverged", citation=SUPPORT)
    steps, ratio = run.values("irrelevant_ratio")
    if len(ratio) < 2:
        return fail(name, f"{len(ratio)} measurements of irrelevant_ratio (< 2)",
                    "too_few_points", citation=SUPPORT)  # fmt: skip
    _, irr = run.values("irrelevant_norm")
    _, rel = run.values("relevant_norm")
    end = float(ratio[-1])
    shrinks = end <= max_ratio
    detail = (
        f"||W1[:, irrelevant]||_F {irr[0]:.4g} -> {irr[-1]:.4g} (ratio {end:.4g}) over steps "
        f"{steps[0]}-{steps[-1]}; ||W1[:, relevant]||_F {rel[0]:.4g} -> {rel[-1]:.4g}"
    )
    return Verdict(
        name,
        "PASS" if shrinks else "FAIL",
        end,
        max_ratio,
        f"final / initial irrelevant-weight norm <= {max_ratio:g}",
        detail,
        citation=SUPPORT,
        parts={"evaluable": True, "shrinks": shrinks, "ratio": end,
               "irrelevant_start": float(irr[0]), "irrelevant_end": float(irr[-1])},  # fmt: skip
    )


DEQ = ("Agarwala & Schoenholz 2022 (arXiv:2207.09432v1, abstract); the layer, solver and "
       "experiment are eosbench's")  # fmt: skip


@CLAIMS.register("deq_trains")
def deq_trains(run: Run, task: Task, max_loss: float = 0.1) -> Verdict:
    """A DEQ trains stably: the run does not diverge, its final training loss is at most
    ``max_loss``, and its last recorded equilibrium solves, forward and backward (measurement
    ``deq_solver``), converged to the model's ``tol`` (Agarwala & Schoenholz: orthogonal or
    symmetric initialization "allows for greater stability in training" over "a broader
    range of initial weight scales").  A model that fits only through unconverged solves is
    not a DEQ that trains: it FAILs."""
    from ..models.deq import OPTIONS

    name = "deq_trains"
    if not max_loss > 0:
        raise ValueError(f"max_loss={max_loss!r}: expected a positive number")
    tol = float(dict(task.model.options).get("tol", OPTIONS["tol"]))
    _, fwd = run.values("deq_residual")
    _, bwd = run.values("deq_backward_residual")
    solve = (f"; last solver residuals {fwd[-1]:.2g} forward, {bwd[-1]:.2g} backward (tol "
             f"{tol:g})" if len(fwd) and len(bwd) else "")  # fmt: skip
    if run.status == "diverged":
        return fail(name, f"diverged at step {run.diverged_at}{solve}", "diverged", citation=DEQ)
    steps, loss = run.values("train_loss")
    if len(loss) < 2:
        return fail(name, f"{len(loss)} records of train_loss (< 2)", "too_few_points",
                    citation=DEQ)  # fmt: skip
    if not solve:
        return fail(name, "no deq_residual and deq_backward_residual records (measurement "
                    "deq_solver)", "no_solver_record", citation=DEQ)  # fmt: skip
    fits = float(loss[-1]) <= max_loss
    converged = bool(fwd[-1] <= tol and bwd[-1] <= tol)
    ok = fits and converged
    return Verdict(
        name, "PASS" if ok else "FAIL", float(loss[-1]), max_loss,
        f"final training loss <= {max_loss:g}, converged solves, no divergence",
        f"training loss {loss[0]:.4g} -> {loss[-1]:.4g} over steps {steps[0]}-{steps[-1]}{solve}",
        citation=DEQ, parts={"evaluable": True, "trains": ok, "fits": fits,
                             "converged": converged, "final_loss": float(loss[-1]),
                             "residual": float(fwd[-1]), "backward_residual": float(bwd[-1])},
    )  # fmt: skip

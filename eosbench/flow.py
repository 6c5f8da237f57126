r"""The central flow of gradient descent, integrated beside a GD run.

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows", ICLR 2025 (arXiv:2410.24206v2): the time-averaged trajectory of GD at the edge
of stability follows the ODE (time :math:`t` in GD steps)

.. math::

    \frac{dw}{dt} = -\eta\Big[\nabla L(w) + \tfrac12 \nabla_w \langle \Sigma(t), H(w)\rangle\Big],

with :math:`\Sigma \succeq 0` supported on the eigenspace of the eigenvalues at :math:`2/\eta`
and chosen so that no eigenvalue exceeds :math:`2/\eta`.  Below the edge :math:`\Sigma = 0`:
gradient flow.  With one critical eigenvalue (top eigenvector :math:`u`, sharpness gradient
:math:`\nabla S = D^3L[u, u]`), :math:`\Sigma = \sigma^2 uu^\top`,
:math:`\sigma^2 = 2\langle -\nabla L, \nabla S\rangle / \lVert\nabla S\rVert^2` (clamped at 0),
which makes :math:`dS/dt = 0`.  Predictions: the time average of GD's loss is
:math:`L(w) + \tfrac12\langle\Sigma, H\rangle`, of its squared gradient norm
:math:`\lVert\nabla L(w)\rVert^2 + \langle\Sigma, H^2\rangle` (at the edge,
:math:`L + \operatorname{tr}\Sigma/\eta` and :math:`\lVert\nabla L\rVert^2 +
(2/\eta)^2\operatorname{tr}\Sigma`), and :math:`\sigma^2` is the mean squared displacement of
the GD iterates from the flow along :math:`u`.

**Several critical eigenvalues.**  At the first substep of each GD step the top ``k``
eigenpairs are computed (warm-started from the last step's, signs aligned with them), and those
at least ``critical``:math:`\cdot 2/\eta` are the critical set, eigenvectors :math:`U`
(``c`` columns); at the step's other substeps the same vectors are kept and only the projected
Hessian :math:`M = U^\top H U` is recomputed (``c`` HVPs), as the authors' code recomputes
eigenvectors once per step and uses Rayleigh quotients in between.  Write
:math:`\Sigma = U X U^\top` and :math:`h_{ij} = \nabla_w(u_i^\top H u_j)`
(:meth:`~eosbench.curvature.LossOperator.curvature_gradients`).  Along :math:`dw/dt`,
:math:`\tfrac{d}{dt}M_{ij} = h_{ij}\cdot dw/dt = -\eta\,[b + \tfrac12\mathcal{A}(X)]_{ij}` with
:math:`b_{ij} = h_{ij}\cdot\nabla L` and :math:`\mathcal{A}(X)_{ij} = \sum_{kl}(h_{ij}\cdot
h_{kl})X_{kl}`.  The condition is the authors' code's: the projected Hessian *after the
substep* :math:`\Delta t`, linearized, is at most :math:`2/\eta`,
:math:`2/\eta\,I - M - \Delta t\,\tfrac{dM}{dt} \succeq 0`, with complementarity.  Divided
by :math:`\eta\Delta t` this is the semidefinite complementarity problem
:math:`X \succeq 0`, :math:`F(X) = \tfrac12\mathcal{A}(X) + b + R/\eta \succeq 0`,
:math:`\langle X, F(X)\rangle = 0`, :math:`R = (2/\eta\,I - M)/\Delta t`: the optimality
condition of the convex quadratic program
:math:`\min_{X\succeq 0} \tfrac14\langle X, \mathcal{A}(X)\rangle + \langle b + R/\eta,
X\rangle` (:math:`\mathcal A` is a Gram operator, so positive semidefinite), which
:func:`solve_sdcp` solves by accelerated projected gradient (FISTA with restart; the
projection onto the PSD cone clips eigenvalues at 0) to a stated KKT residual; the authors
solve the same program with CVXPY.  The :math:`R` term makes an eigenvalue that turns critical
below :math:`2/\eta` rise to it and pulls back the Euler drift of one above it; at
:math:`M = 2/\eta\,I` it vanishes and one critical eigenvalue gives the closed form above.
The flow is integrated by explicit Euler with ``substeps`` steps per GD step (the authors'
code: 4, eigenvalues above :math:`1.95/\eta` critical; ``mahyarjn80/centralflows``, a fork
of ``locuslab/central_flows``, read for this, not copied), in the task's ``dtype``.

Gradient flow from the same point is integrated beside it (the negative control), by Euler
with :math:`\max(\text{substeps}, \lceil 2\eta S_{GF}\rceil)` substeps per step (its sharpness
probed every ``gf_probe`` steps; the authors' rule), since gradient flow's sharpness rises
past :math:`2/\eta`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FlowOptions", "advance", "solve_sdcp", "start"]


def _psd(M: np.ndarray) -> np.ndarray:
    """Projection of a symmetric matrix onto the PSD cone (eigenvalues clipped at 0)."""
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    return (V * np.maximum(w, 0.0)) @ V.T


def solve_sdcp(A: np.ndarray, b: np.ndarray, tol: float = 1e-10, max_iter: int = 20000
               ) -> tuple[np.ndarray, float]:  # fmt: skip
    r""":math:`\arg\min_{X\succeq 0}\tfrac14\langle X, \mathcal{A}(X)\rangle + \langle b,
    X\rangle` for the PSD operator ``A`` (``[k, k, k, k]``, :math:`\mathcal{A}(X)_{ij} =
    \sum_{kl} A_{ijkl}X_{kl}`) and symmetric ``b`` (``[k, k]``): the solution of the
    complementarity problem :math:`X \succeq 0`, :math:`F = \tfrac12\mathcal A(X) + b \succeq 0`,
    :math:`\langle X, F\rangle = 0`.  Returns ``(X, residual)`` with the KKT residual
    :math:`\lVert X - \Pi_{\succeq0}(X - F)\rVert` relative to :math:`1 + \lVert X\rVert`.
    ``k = 1`` in closed form; otherwise FISTA with gradient restart."""
    k = b.shape[0]
    if A.shape != (k, k, k, k):
        raise ValueError(f"A must have shape {(k, k, k, k)}, got {A.shape}")
    if k == 1:
        a = float(A[0, 0, 0, 0])
        X = np.array([[max(0.0, -2.0 * float(b[0, 0]) / a)]]) if a > 0 else np.zeros((1, 1))
        F = 0.5 * a * X + b
        return X, float(abs(X - _psd(X - F)).max() / (1 + abs(X).max()))
    Am = A.reshape(k * k, k * k)
    Am = 0.5 * (Am + Am.T)
    lip = 0.5 * float(np.linalg.eigvalsh(Am).max())

    def grad(X: np.ndarray) -> np.ndarray:
        G = 0.5 * (Am @ X.reshape(-1)).reshape(k, k) + b
        return 0.5 * (G + G.T)

    def residual(X: np.ndarray) -> float:
        return float(np.linalg.norm(X - _psd(X - grad(X))) / (1 + np.linalg.norm(X)))

    X = np.zeros((k, k))
    if lip <= 0:
        return X, residual(X)
    Y, t = X.copy(), 1.0
    for it in range(max_iter):
        X_new = _psd(Y - grad(Y) / lip)
        if it % 20 == 0 and residual(X_new) <= tol:
            return X_new, residual(X_new)
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        if np.sum(grad(Y) * (X_new - X)) > 0:  # restart: momentum points uphill
            Y, t = X_new.copy(), 1.0
        else:
            Y = X_new + ((t - 1) / t_new) * (X_new - X)
            t = t_new
        X = X_new
    return X, residual(X)


@dataclass(frozen=True)
class FlowOptions:
    """Settings of the integrators (documented task options of the ``central_flow``
    measurement; see the module docstring)."""

    lr: float
    substeps: int = 4
    critical: float = 0.975  # eigenvalues >= critical * 2/lr are at the edge
    k: int = 2  # eigenpairs computed at a step's first substep (the critical ones among them)
    tol: float = 1e-3  # eigensolver relative residual (the step's first substep)
    max_products: int = 300
    gf_probe: int = 10  # steps between sharpness probes of gradient flow

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"central flow: lr must be positive, got {self.lr}")
        for key in ("substeps", "k", "gf_probe"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"central flow: {key} must be a positive integer, got {v!r}")
        if not 0 < self.critical <= 1:
            raise ValueError(f"central flow: critical must be in (0, 1], got {self.critical}")

    @property
    def edge(self) -> float:
        return 2.0 / self.lr


def start(theta: Tensor, step: int) -> dict[str, Any]:
    """The state of both flows started at the GD iterate ``theta`` at ``step``: plain
    tensors and numbers, so a checkpoint holds it."""
    t = theta.detach().clone()
    return {"start": step, "cf": t, "gf": t.clone(), "cf_vectors": None, "cf_critical": 0,
            "gf_vector": None, "gf_sharpness": None, "gf_substeps": 1}


def _aligned(U: Tensor, previous: Tensor | None) -> Tensor:
    """``U`` with each column's sign matched to the previous column of the same index."""
    if previous is None or previous.shape != U.shape:
        return U
    signs = torch.sign((U * previous).sum(0))
    signs[signs == 0] = 1
    return U * signs


def _central_step(op, state: dict[str, Any], o: FlowOptions, generator, first: bool
                  ) -> dict[str, float]:  # fmt: skip
    r"""One Euler substep of the central flow from ``state['cf']`` (updated in place); the
    quantities at its start point.  ``first`` (a step's first substep): the top ``k``
    eigenpairs are solved for (warm-started) and the critical set revised; at the other
    substeps the projected Hessian :math:`U^\top H U` of the critical eigenvectors is
    recomputed on the step's vectors (``c`` HVPs), as the authors' code does."""
    from .curvature import top_eigenpairs

    at = op.at(state["cf"])
    loss, g = at.value_and_gradient()
    out: dict[str, float] = {"loss": loss, "grad_sq": float(g @ g)}
    if first:
        previous = state["cf_vectors"]
        res = top_eigenpairs(at, k=o.k, tol=o.tol, max_products=o.max_products,
                             init=previous, generator=generator)
        U = _aligned(res.eigenvectors, previous)
        state["cf_vectors"] = U
        lam = res.eigenvalues
        state["cf_critical"] = int((lam >= o.critical * o.edge).sum())
        out.update(sharpness=float(lam[0]), residual=float(res.residuals.max()))
        if o.k > 1:
            out["eig2"] = float(lam[1])
        c = state["cf_critical"]
        M = torch.diag(lam[:c])
    else:
        c = state["cf_critical"]
        U = state["cf_vectors"]
        M = U[:, :c].T @ at.matmat(U[:, :c]) if c else torch.zeros(0, 0)
    out["critical"] = c
    direction = g
    X = np.zeros((0, 0))
    if c:
        D = at.curvature_gradients(U[:, :c])  # [c, c, dim]
        flat = D.reshape(c * c, -1)
        A = (flat @ flat.T).reshape(c, c, c, c).cpu().double().numpy()
        b = (D @ g).cpu().double().numpy()
        Mn = M.cpu().double().numpy()
        # the eigenvalues after this substep, linearized, stay <= 2/lr (module docstring)
        R = (o.edge * np.eye(c) - 0.5 * (Mn + Mn.T)) * o.substeps
        X, kkt = solve_sdcp(A, b + R / o.lr)
        Xt = torch.as_tensor(X, dtype=D.dtype, device=D.device)
        direction = g + 0.5 * torch.einsum("ij,ijd->d", Xt, D)
        gs = D[0, 0]  # the sharpness gradient (top eigenvector)
        perp = gs - U[:, 0] * (U[:, 0] @ gs)
        alpha, beta = float(-(g @ perp)), float(perp @ perp)
        out.update(kkt=kkt, alpha=alpha, beta=beta,
                   delta2=2 * alpha / beta if beta > 0 else math.nan)
        lam_c = np.diag(Mn)
    else:
        lam_c = np.zeros(0)
    diag = np.diag(X) if X.size else np.zeros(0)
    out["sigma2"] = float(X[0, 0]) if X.size else 0.0
    out["trace"] = float(diag.sum())
    out["pred_loss"] = loss + 0.5 * float(diag @ lam_c)
    out["pred_grad_sq"] = out["grad_sq"] + float(diag @ lam_c**2)
    out["hvps"] = float(at.n_products)
    out["third"] = float(at.n_third)
    state["cf"] = state["cf"] - (o.lr / o.substeps) * direction
    return out


def _gradient_step(op, state: dict[str, Any], o: FlowOptions, generator, probe: bool) -> float:
    """Advance gradient flow by one GD step's time; its loss at the start point."""
    from .curvature import top_eigenpairs

    if probe:
        at = op.at(state["gf"])
        res = top_eigenpairs(at, k=1, tol=1e-3, max_products=o.max_products,
                             init=state["gf_vector"], generator=generator)
        state["gf_vector"] = res.eigenvectors
        state["gf_sharpness"] = float(res.eigenvalues[0])
        # Euler is stable for lr * S * dt < 2; keep it at most 1/2, as the authors' code
        state["gf_substeps"] = max(o.substeps, math.ceil(2 * o.lr * state["gf_sharpness"]))
    n = state["gf_substeps"]
    first = None
    for _ in range(n):
        loss, g = op.at(state["gf"]).value_and_gradient()
        first = loss if first is None else first
        state["gf"] = state["gf"] - (o.lr / n) * g
    return first


def advance(op, state: dict[str, Any], o: FlowOptions, step: int, theta: Tensor,
            generator) -> dict[str, float]:  # fmt: skip
    r"""Record both flows at time ``step`` against the GD iterate ``theta`` of that step, then
    advance each to ``step + 1`` (``state`` updated in place).

    Keys: ``cf_*`` the central flow at its current point (``loss``, ``sharpness``, ``eig2``,
    ``critical``, ``sigma2`` :math:`= u_1^\top\Sigma u_1`, ``trace``
    :math:`= \operatorname{tr}\Sigma`, ``pred_loss``, ``grad_sq``, ``pred_grad_sq``, ``kkt``,
    ``alpha``, ``beta``, ``delta2``), ``gf_loss`` (and ``gf_sharpness`` when probed);
    ``cf_dist_raw``/``gf_dist_raw``, :math:`\lVert w_t - w(t)\rVert`; ``cf_dist``/``gf_dist``
    the distance of the smoothed iterate :math:`(w_{t-1} + 2w_t + w_{t+1})/4` at step
    ``step - 1`` (known one step late), from the second step on; ``ss_x``
    :math:`= u_1\cdot(w_t - w_{CF}(t))` (Damian et al.'s displacement along the flow's top
    eigenvector) and ``ss_x_gf`` :math:`= u_1\cdot(w_t - w_{GF}(t))`; cost ``cf_hvps``, ``cf_third`` (third-order pair products),
    ``cf_gradients``, ``gf_substeps``, ``cf_seconds``."""
    t0 = time.perf_counter()
    theta = theta.detach().to(state["cf"].dtype)
    cf_now, gf_now = state["cf"], state["gf"]
    rec: dict[str, float] = {
        "cf_dist_raw": float((theta - cf_now).norm()),
        "gf_dist_raw": float((theta - gf_now).norm()),
    }
    prev = state.get("previous")  # (w_{t-2}, w_{t-1}, cf(t-1), gf(t-1)) where known
    if prev is not None and prev[0] is not None:
        smooth = 0.25 * (prev[0] + 2 * prev[1] + theta)
        rec["cf_dist"] = float((smooth - prev[2]).norm())
        rec["gf_dist"] = float((smooth - prev[3]).norm())
    state["previous"] = (None if prev is None else prev[1], theta, cf_now, gf_now)
    third = hvps = 0.0
    for i in range(o.substeps):
        q = _central_step(op, state, o, generator, first=i == 0)
        hvps += q.pop("hvps")
        third += q.pop("third")
        if i == 0:
            rec.update({f"cf_{k}": v for k, v in q.items()})
            u = state["cf_vectors"][:, 0]
            rec["ss_x"] = float(u @ (theta - cf_now))
            rec["ss_x_gf"] = float(u @ (theta - gf_now))
    probe = (step - state["start"]) % o.gf_probe == 0
    rec["gf_loss"] = _gradient_step(op, state, o, generator, probe)
    if probe:
        rec["gf_sharpness"] = state["gf_sharpness"]
    rec["gf_substeps"] = float(state["gf_substeps"])
    rec["cf_hvps"], rec["cf_third"] = hvps, third
    rec["cf_gradients"] = float(o.substeps + state["gf_substeps"])
    rec["cf_seconds"] = time.perf_counter() - t0
    return rec


# -- measurements: the flow beside a GD run, and the sharpness at the smoothed iterate ----------
# Registered with the other measurements (:mod:`eosbench.measure`, which imports this module).

from .curvature import LossOperator  # noqa: E402
from .measure import (  # noqa: E402
    MEASUREMENTS,
    Context,
    Measurement,
    _needs_plain_gd,
    _operator,
    _top,
)
from .task import Task  # noqa: E402

_begin = start  # central_flow's option ``start`` shadows this module's start() inside it


@MEASUREMENTS.register("central_flow")
def central_flow(
    start: float = 0.9,
    substeps: int = 4,
    critical: float = 0.975,
    k: int = 2,
    tol: float = 1e-3,
    gf_probe: int = 10,
    sharpness_tol: float = 1e-3,
    max_products: int = 300,
    dtype: str = "float32",
) -> Measurement:
    r"""GD's central flow and gradient flow integrated beside the run, and the
    self-stabilization quantities (this module; Cohen et al. 2025,
    arXiv:2410.24206v2; Damian, Nichani & Lee 2023, arXiv:2209.15594v2).  Needs plain GD
    (``sgd``, full batch, no momentum or weight decay, constant step) and ``every=1``.

    At every step it records GD's ``sharpness`` (top eigenvalue, warm-started, relative
    residual ``sharpness_tol``; a task with this measurement has no separate ``sharpness``
    one), GD's squared gradient norm ``grad_sq`` and ``ss_y`` :math:`= S - 2/\eta`.  Once the
    sharpness first reaches ``start`` :math:`\cdot 2/\eta` (``cf_start`` = that step, recorded
    there) both flows start at that GD iterate and are advanced one step's time per step
    (``substeps``, ``critical``, ``k``, ``tol``, ``gf_probe``: :class:`FlowOptions`),
    in ``dtype``; the keys are :func:`advance`'s.  Cost per step once started:
    ``substeps`` x (a gradient, a warm eigensolve of ``k`` pairs, and :math:`c(c+1)/2`
    third-order products with ``c`` critical eigenvalues) for the central flow plus
    ``gf_substeps`` gradients for gradient flow (``cf_hvps``, ``cf_third``, ``cf_gradients``);
    ``benchmarks/bench_flow.py`` measures it.  Models with BatchNorm are refused (PyTorch's
    fused kernel has wrong third derivatives: :mod:`eosbench.models.norms`).
    """
    o = FlowOptions(lr=1.0, substeps=substeps, critical=critical, k=k, tol=tol, max_products=max_products, gf_probe=gf_probe)  # validates
    if not 0 < start <= critical:
        raise ValueError(f"central_flow: start must be in (0, critical={critical}], got {start}")
    dt = {"float64": torch.float64, "float32": torch.float32}.get(dtype)
    if dt is None:
        raise ValueError(f"central_flow: dtype must be 'float64' or 'float32', not {dtype!r}")
    built: dict[str, LossOperator] = {}  # the flows' operator: a function of the data only

    def check(task: Task, spec) -> None:
        if spec.every != 1:
            raise ValueError("central_flow must be measured every step (every=1)")
        _needs_plain_gd("central_flow", task, spec)
        if task.model.batchnorm:
            raise ValueError("central_flow needs third derivatives, which PyTorch's fused "
                             "BatchNorm kernel gets wrong (model.batchnorm=true)")

    def measure(ctx: Context) -> dict[str, float]:
        opts = FlowOptions(**{**o.__dict__, "lr": ctx.task.optimizer.lr})
        op = _operator(ctx)
        out = _top(ctx, "sharpness", op, 1, sharpness_tol, max_products)
        _, g = op.value_and_gradient()
        out["grad_sq"] = float(g @ g)
        out["ss_y"] = out["sharpness"] - opts.edge
        state = ctx.cache.get("central_flow")
        if state is None:
            if out["sharpness"] < start * opts.edge:
                return out
            state = ctx.cache["central_flow"] = _begin(op.params().to(dt), ctx.step)
            out["cf_start"] = float(ctx.step)
        if "op" not in built:
            built["op"] = LossOperator(ctx.model, ctx.loss_fn, ctx.x_train, ctx.y_train,
                                       physical_batch_size=ctx.physical_batch_size, dtype=dt)
        out.update(advance(built["op"], state, opts, ctx.step, op.params(), ctx.generator))
        return out

    measure.check = check
    return measure


@MEASUREMENTS.register("smoothed_sharpness")
def smoothed_sharpness(tol: float = 1e-3, max_products: int = 500) -> Measurement:
    r"""The sharpness at the smoothed GD iterate :math:`\bar w_{t+1} = (w_t + 2w_{t+1} +
    w_{t+2})/4`, the central flow's point as the central-flows authors estimate it from GD
    (Cohen et al. 2025, arXiv:2410.24206v2; their code compares the flow with this average):
    GD's period-2 oscillation along the top eigenvector cancels in it, so where the iterates'
    own sharpness is lifted by the oscillation (:math:`S(w + xu) \approx S(w) +
    \tfrac12 x^2\,u^\top\nabla^2 S\,u` for :math:`\nabla S\cdot u = 0`), this one reads
    the flow's, which the central flow pins at :math:`2/\eta`.  With several eigenvalues at
    the edge GD's oscillation is not one period-2 cycle and the average need not reach the
    flow's point (``results/architectures``: the ViT's stays at 1.09-1.21 x :math:`2/\eta`
    with 2-3 eigenvalues there).  Needs plain GD (``sgd``, full batch, no momentum or weight
    decay, constant step).

    Recorded at step ``t`` (the parameters before that step's update are :math:`w_t`),
    centered on ``t + 1``: the measurement takes GD's next two iterates itself (two
    full-batch gradients on a copy; the run is not touched), then a warm-started top
    eigenpair at :math:`\bar w` (relative residual ``tol``).  Keys ``smoothed_sharpness``,
    ``_residual``, ``_hvps`` (the eigensolve's HVPs; the two gradients are extra) and
    ``_seconds`` (all of it)."""

    def check(task: Task, spec) -> None:
        _needs_plain_gd("smoothed_sharpness", task, spec)

    def measure(ctx: Context) -> dict[str, float]:
        t0 = time.perf_counter()
        lr = ctx.task.optimizer.lr
        op = _operator(ctx)
        w0 = op.params()
        w1 = w0 - lr * op.gradient()
        w2 = w1 - lr * op.at(w1).gradient()
        out = _top(ctx, "smoothed_sharpness", op.at(0.25 * (w0 + 2 * w1 + w2)), 1, tol,
                   max_products)
        out["smoothed_sharpness_seconds"] = time.perf_counter() - t0
        return out

    measure.check = check
    return measure

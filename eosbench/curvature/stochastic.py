"""Curvature seen by mini-batch methods (Andreyev & Beneventano, "Edge of Stochastic Stability:
Revisiting the Edge of Stability for SGD", arXiv:2412.20553).

* :func:`batch_sharpness` -- *Batch Sharpness* (the paper's quantity from v3 on, its
  Definition 3):

  .. math:: \\mathrm{BS}(\\theta) = \\mathbb{E}_{B}\\left[
     \\frac{\\nabla L_B^\\top\\, \\nabla^2 L_B\\, \\nabla L_B}{\\|\\nabla L_B\\|^2}\\right],

  the expected curvature of the mini-batch loss along its own gradient, the SGD step direction;
  under SGD with step size :math:`\\eta` it stabilizes at :math:`2/\\eta` (EoSS).
* :func:`minibatch_sharpness` -- the v1 quantity *MiniBS*,
  :math:`\\mathbb{E}_B[\\lambda_{\\max}(\\nabla^2 L_B)]`.

In both, :math:`B` is a uniform random mini-batch of ``batch_size`` distinct examples (drawn
without replacement within the batch, independently across batches), and :math:`L_B` is the
mean loss over it.  The expectation is a Monte Carlo mean with adaptive stopping on its
relative standard error.  Mini-batch losses are training-mode losses, as in
:class:`~eosbench.curvature.operators.LossOperator`.

For SGD with momentum, arXiv:2604.14108 (Andreyev et al. 2026) reports, from its abstract,
plateaus of this same Batch Sharpness at :math:`2(1-\\beta)/\\eta` (small batches) and
:math:`2(1+\\beta)/\\eta` (large batches).  The authors' code also measures a momentum-aware
variant along the update direction, :func:`batch_sharpness` with ``momentum_term`` (see there
for its definition and where it comes from); the abstract's plateaus are stated for "Batch
Sharpness", and we could not confirm from the paper which of the two its figures plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from .eigen import top_eigenpairs
from .operators import LossFn, LossOperator, training_mode


@dataclass(frozen=True)
class StochasticResult:
    mean: float  # Monte Carlo estimate of the expectation over mini-batches
    stderr: float  # its standard error (sample std / sqrt(n_batches))
    n_batches: int  # mini-batches drawn
    n_products: int  # Hessian-vector products used


def _check(n: int, batch_size: int, min_batches: int, max_batches: int, rel_se: float) -> None:
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    if not 2 <= min_batches <= max_batches:
        raise ValueError(f"need 2 <= min_batches <= max_batches, got {min_batches}, "
                         f"{max_batches}")
    if rel_se <= 0:
        raise ValueError(f"rel_se must be positive, got {rel_se}")


def _draw(n: int, batch_size: int, count: int, generator: torch.Generator) -> Tensor:
    """``[count, batch_size]`` indices, each row a uniform subset of ``range(n)``."""
    return torch.stack([torch.randperm(n, generator=generator, device=generator.device)
                        [:batch_size] for _ in range(count)])


def _stop(values: list[float], min_batches: int, rel_se: float) -> bool:
    if len(values) < min_batches:
        return False
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.std() / math.sqrt(len(t))) <= rel_se * abs(float(t.mean()))


def _result(values: list[float], n_products: int) -> StochasticResult:
    t = torch.tensor(values, dtype=torch.float64)
    return StochasticResult(float(t.mean()), float(t.std() / math.sqrt(len(t))), len(t),
                            n_products)


def batch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    min_batches: int = 16,
    max_batches: int = 1024,
    rel_se: float = 0.02,
    dtype: torch.dtype | None = None,
    momentum_term: Tensor | None = None,
) -> StochasticResult:
    """Batch Sharpness :math:`\\mathbb{E}_B[g_B^\\top H_B g_B / \\|g_B\\|^2]` by Monte Carlo,
    or, given ``momentum_term`` :math:`m`, its momentum-aware variant along the update
    direction :math:`s_B = g_B + m`:

    .. math:: \\mathrm{BS}_{\\mathrm{upd}}(\\theta) = \\mathbb{E}_B\\left[
       \\frac{s_B^\\top H_B\\, s_B}{s_B^\\top g_B}\\right],\\qquad s_B = g_B + m .

    ``momentum_term`` is the flat vector :math:`m = \\beta b_t` (in the order of the model's
    trainable parameters), :math:`b_t` the heavy-ball buffer of ``torch.optim.SGD`` at the
    measurement point (before the step).  Since PyTorch's heavy ball (no dampening) steps
    :math:`b_{t+1} = \\beta b_t + g_t`, :math:`\\theta_{t+1} = \\theta_t - \\eta b_{t+1}`,
    :math:`s_B` is the direction of the step SGD would take if ``B`` were its batch
    (:math:`\\theta_{t+1} - \\theta_t = -\\eta s_B`).  :math:`m = 0` gives the plain value.

    Source of the definition: the authors' public code, ``utils/measure.py`` of
    github.com/arseniqum/edge-of-stochastic-stability (functions
    ``compute_momentum_step_sharpness``, per batch, and ``calculate_momentum_batch_sharpness``,
    the average; ``training.py`` flag ``--momentum-bs``, measured before
    ``optimizer.step()``, with ``torch.optim.SGD(lr, momentum)`` from ``utils/nets.py``).
    There, per batch, ``s = g + mu * v`` with ``g`` the batch-loss gradient, ``v`` the
    optimizer's ``state[p]['momentum_buffer']`` (zero where missing, i.e. before the first step)
    and ``mu = param_groups[0]['momentum']``; numerator ``s . (H s)`` and denominator
    ``s . g`` (the gradient, not ``s . s``); the estimate is the MEAN OF THE PER-BATCH RATIOS
    (not a ratio of means), with adaptive stopping on the relative standard error of that mean
    (at least 20, at most 1000 batches, rel. s.e. 0.005 in ``training.py``).  Differences and
    ambiguities: they drop batches with ``|s . g| < 1e-12`` or a non-finite ratio; here only
    non-finite ratios are dropped (``s . g`` exactly zero), not counted in ``n_batches`` but in
    ``n_products``.  They use one ``mu`` for all parameter groups and ignore dampening, Nesterov
    and weight decay (absent from their optimizer); the caller builds :math:`m` (see
    :func:`eosbench.measure.batch_sharpness`, which refuses those settings).  Their batches
    come from an unseeded generator; ours from ``generator``.  :math:`s_B^\\top g_B` may be
    small or negative, so the per-batch ratios can be heavy-tailed: the standard error
    reported is the usual one and assumes a finite variance.

    Draws mini-batches in groups of 8 (one vmapped pass per group when the model allows it)
    until, after at least ``min_batches``, ``stderr <= rel_se * |mean|``, or ``max_batches``.
    Cost: one gradient and one HVP per mini-batch, i.e. ``n_products`` = batches drawn HVPs.
    """
    n = len(x)
    _check(n, batch_size, min_batches, max_batches, rel_se)
    op = LossOperator(model, loss_fn, x, y, dtype=dtype)
    theta = op.params()
    m = None
    if momentum_term is not None:
        if momentum_term.shape != (op.dim,):
            raise ValueError(
                f"momentum_term must be a flat vector of {op.dim} entries, got "
                f"shape {tuple(momentum_term.shape)}"
            )
        m = momentum_term.detach().to(device=op.device, dtype=op.dtype)

    def quotient(xb: Tensor, yb: Tensor) -> Tensor:
        g0 = op._grad_fn(theta, xb, yb)
        if m is None:
            g, hg = jvp(lambda t: op._grad_fn(t, xb, yb), (theta,), (g0,))
            return (g @ hg) / (g @ g)
        s = g0 + m
        g, hs = jvp(lambda t: op._grad_fn(t, xb, yb), (theta,), (s,))
        return (s @ hs) / (s @ g)

    values: list[float] = []
    drawn = 0
    vectorized = True
    with training_mode(model), torch.no_grad():
        while drawn < max_batches and not _stop(values, min_batches, rel_se):
            count = min(8, max_batches - drawn)
            idx = _draw(n, batch_size, count, generator).to(op._x.device)
            drawn += count
            xs, ys = op._x[idx], op._y[idx]
            q = None
            if vectorized:
                try:
                    q = vmap(quotient)(xs, ys)
                except RuntimeError:
                    vectorized = False
            if q is None:
                q = torch.stack([quotient(xb, yb) for xb, yb in zip(xs, ys, strict=True)])
            if m is not None:
                q = q[torch.isfinite(q)]
            values.extend(q.tolist())
    return _result(values, drawn)


def minibatch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    min_batches: int = 16,
    max_batches: int = 1024,
    rel_se: float = 0.02,
    dtype: torch.dtype | None = None,
    tol: float = 1e-3,
) -> StochasticResult:
    """Mini-batch sharpness :math:`\\mathbb{E}_B[\\lambda_{\\max}(H_B)]` by Monte Carlo.

    Each :math:`\\lambda_{\\max}(H_B)` comes from :func:`top_eigenpairs` to relative residual
    ``tol``, warm-started from the previous mini-batch's top eigenvector (the estimate is the
    converged value, so the warm start only saves products).  Same stopping rule as
    :func:`batch_sharpness`.  Cost: the sum of the eigensolver's products, typically 10--40
    HVPs per mini-batch.
    """
    n = len(x)
    _check(n, batch_size, min_batches, max_batches, rel_se)
    op = LossOperator(model, loss_fn, x, y, dtype=dtype)
    values: list[float] = []
    products = 0
    vec: Tensor | None = None
    while len(values) < max_batches and not _stop(values, min_batches, rel_se):
        idx = _draw(n, batch_size, 1, generator)[0].to(op._x.device)
        sub = op.restricted(op._x[idx], op._y[idx])
        res = top_eigenpairs(sub, 1, tol=tol, init=vec, generator=generator)
        products += res.n_products
        vec = res.eigenvectors
        values.append(float(res.eigenvalues[0]))
    return _result(values, products)


def noise_variance(d: Tensor, batch_size: int | None) -> float:
    r"""The variance over mini-batches of the mean of ``d`` over a batch: for
    :math:`B` a uniform subset of ``batch_size`` of the :math:`n` entries (drawn without
    replacement, as :func:`batch_sharpness` and the runner's batches are),
    :math:`\operatorname{Var}_B[\bar d_B] = \frac{s^2}{b}\,\frac{n-b}{n-1}` with
    :math:`s^2 = \frac1n\sum_i (d_i-\bar d)^2` (the finite-population correction; zero for
    the full batch, ``batch_size`` None or :math:`\ge n`)."""
    n = d.numel()
    if batch_size is None or batch_size >= n:
        return 0.0
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    d = d.double()
    s2 = float((d - d.mean()).pow(2).mean())
    return s2 / batch_size * (n - batch_size) / (n - 1)


@dataclass(frozen=True)
class GapResult:
    sharpness: float  # S = lambda_max(H), to relative residual tol
    residual: float  # its relative residual
    alpha: float  # -grad L . grad S_perp, the progressive-sharpening rate
    beta: float  # ||grad S_perp||^2, the self-stabilization strength
    sigma2: float  # Var_B(u . g_B), the gradient noise along the top eigenvector u
    predicted: float  # lr beta sigma2 / (4 alpha); nan when alpha <= 0
    measured: float  # 2/lr - S
    eigenvector: Tensor  # u, for the next measurement's warm start
    n_products: int  # HVPs (the eigensolver's)
    n_third: int  # third-order products (one: grad S)


def sharpness_gap(
    op: LossOperator,
    lr: float,
    batch_size: int | None,
    *,
    generator: torch.Generator,
    tol: float = 1e-3,
    max_products: int = 500,
    init: Tensor | None = None,
) -> GapResult:
    r"""The stochastic sharpness gap of Liao, Kolomvaki & Kyrillidis, "SGD at the Edge of
    Stability: The Stochastic Sharpness Gap", arXiv:2604.21016v1: under SGD with step
    ``lr`` :math:`=\eta` the full-batch sharpness :math:`S` settles below :math:`2/\eta` by

    .. math:: \Delta S = \frac{\eta\,\beta\,\sigma_u^2}{4\alpha},

    with (the abstract's words) :math:`\alpha` the progressive-sharpening rate,
    :math:`\beta` the self-stabilization strength and :math:`\sigma_u^2` the gradient-noise
    variance projected onto the top eigenvector.  :math:`\alpha, \beta` are taken as in the
    self-stabilization paper the abstract builds on (Damian, Nichani & Lee,
    arXiv:2209.15594v2), as :mod:`eosbench.flow` records them:
    :math:`\alpha = -\nabla L^\top \nabla S_\perp`, :math:`\beta = \lVert\nabla S_\perp
    \rVert^2`, :math:`\nabla S_\perp` the part of :math:`\nabla S = \nabla^3 L[u, u]`
    orthogonal to :math:`u`; :math:`\sigma_u^2 = \operatorname{Var}_B(u^\top g_B)` over the
    task's mini-batches of ``batch_size`` (:func:`noise_variance` of the per-example
    derivatives :math:`u^\top\nabla\ell_i`).  Only the abstract could be read offline: these
    definitions are the ones under which the formula follows from the self-stabilization
    model (a derivation, not the paper's text): with :math:`x` the displacement along
    :math:`u` and :math:`y = S - 2/\eta`, :math:`x_{t+1} = -(1+\eta y)x_t - \eta\xi_t`
    (:math:`\operatorname{Var}\xi = \sigma_u^2`) and :math:`y_{t+1} = y_t + \eta(\alpha -
    \beta x_t^2/2)`; stationarity of :math:`y` needs :math:`\mathbb{E}x^2 = 2\alpha/\beta`,
    and that of :math:`x` to first order in :math:`\eta y`, :math:`\mathbb{E}x^2 =
    -\eta\sigma_u^2/(2y)`; so :math:`-y = \eta\beta\sigma_u^2/(4\alpha)`.  Everything is at
    the current iterate, not at the paper's projected reference point; the oscillation along
    :math:`u` drops out of :math:`\alpha` because :math:`\nabla S_\perp \perp u`.

    Cost: the top eigenpair (warm-started from ``init``, to relative residual ``tol``), one
    gradient (free with one chunk: the recorded one), one third-order product
    (:meth:`LossOperator.curvature_gradients`) and one forward-mode pass for the per-example
    derivatives (:meth:`LossOperator.example_derivatives`).
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    res = top_eigenpairs(op, k=1, tol=tol, max_products=max_products, init=init,
                         generator=generator)  # fmt: skip
    u = res.eigenvectors[:, 0]
    g = op.recorded_gradient()
    if g is None:
        g = op.gradient()
    gs = op.curvature_gradients(u[:, None])[0, 0]
    perp = gs - u * (u @ gs)
    alpha, beta = float(-(g @ perp)), float(perp @ perp)
    sigma2 = noise_variance(op.example_derivatives(u), batch_size)
    S = float(res.eigenvalues[0])
    predicted = lr * beta * sigma2 / (4 * alpha) if alpha > 0 else math.nan
    return GapResult(S, float(res.residuals.max()), alpha, beta, sigma2, predicted, 2 / lr - S,
                     res.eigenvectors, res.n_products, op.n_third)  # fmt: skip

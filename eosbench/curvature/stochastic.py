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
:math:`2(1+\\beta)/\\eta` (large batches); we could not confirm from the paper whether it also
defines a separate momentum-aware curvature, so none is provided here.
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
) -> StochasticResult:
    """Batch Sharpness :math:`\\mathbb{E}_B[g_B^\\top H_B g_B / \\|g_B\\|^2]` by Monte Carlo.

    Draws mini-batches in groups of 8 (one vmapped pass per group when the model allows it)
    until, after at least ``min_batches``, ``stderr <= rel_se * |mean|``, or ``max_batches``.
    Cost: one gradient and one HVP per mini-batch, i.e. ``n_products = n_batches`` HVPs.
    """
    n = len(x)
    _check(n, batch_size, min_batches, max_batches, rel_se)
    op = LossOperator(model, loss_fn, x, y, dtype=dtype)
    theta = op.params()

    def quotient(xb: Tensor, yb: Tensor) -> Tensor:
        g, hg = jvp(lambda t: op._grad_fn(t, xb, yb), (theta,), (op._grad_fn(theta, xb, yb),))
        return (g @ hg) / (g @ g)

    values: list[float] = []
    vectorized = True
    with training_mode(model), torch.no_grad():
        while len(values) < max_batches and not _stop(values, min_batches, rel_se):
            idx = _draw(n, batch_size, min(8, max_batches - len(values)), generator)
            idx = idx.to(op._x.device)
            xs, ys = op._x[idx], op._y[idx]
            q = None
            if vectorized:
                try:
                    q = vmap(quotient)(xs, ys)
                except RuntimeError:
                    vectorized = False
            if q is None:
                q = torch.stack([quotient(xb, yb) for xb, yb in zip(xs, ys, strict=True)])
            values.extend(q.tolist())
    return _result(values, len(values))


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

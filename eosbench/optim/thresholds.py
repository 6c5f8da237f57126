r"""Stability thresholds ("edges of stability") of the optimizers, as pure functions.

Every threshold is the largest curvature at which the optimizer's update, applied to
the quadratic :math:`f(\theta) = \tfrac12 \theta^\top H \theta` (the local quadratic
model of the loss), is still stable.  Above it the iterates grow along the top
eigenvector; Cohen et al. (2021, 2022) observed that neural-network training drives
the measured curvature up to this value and then hovers there.

Conventions used by every function here:

* :math:`H` is the Hessian of the *training loss* :math:`L` (what the sharpness
  measurements compute), not of :math:`L + \tfrac{\omega}{2}\lVert\theta\rVert^2`.  A
  coupled L2 coefficient :math:`\omega` (``weight_decay``, added to the gradient by
  the torch optimizers) shifts every curvature by :math:`\omega`, so the edge on
  :math:`\lambda_{\max}(H)` is the optimizer's edge minus :math:`\omega` (exact for
  the non-adaptive methods; for adaptive ones the shift is :math:`\omega P^{-1}`,
  which is not a scalar, so no threshold on :math:`\lambda_{\max}(P^{-1}H)` exists).
* Adaptive methods are analysed with a frozen preconditioner :math:`P`: the
  threshold bounds :math:`\lambda_{\max}(P^{-1}H)` (Cohen et al. 2022, "frozen"
  Adam/RMSProp).  With a slowly varying :math:`P` it is the local edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError

COHEN2021 = (
    "Cohen, Kaur, Li, Kolter, Talwalkar (2021), Gradient Descent on Neural Networks "
    "Typically Occurs at the Edge of Stability, arXiv:2103.00065"
)
COHEN2021_MOMENTUM = COHEN2021 + ", appendix on momentum (PyTorch heavy-ball/Nesterov form)"
COHEN2022 = (
    "Cohen, Ghorbani, Krishnan, Agarwal, Medapati, Badura, Suo, Cardoze, Nado, Dahl, "
    "Gilmer (2022), Adaptive Gradient Methods at the Edge of Stability, arXiv:2207.14484"
)
AGARWALA2023 = (
    "Agarwala & Dauphin (2023), SAM operates far from home: eigenvalue regularization "
    "as a dynamical phenomenon, arXiv:2302.08692"
)
LONG2023 = (
    "Long & Bartlett (2023), Sharpness-Aware Minimization and the Edge of Stability, "
    "arXiv:2309.12488"
)

SHARPNESS = "sharpness"  # lambda_max(H)
PRECONDITIONED_SHARPNESS = "preconditioned_sharpness"  # lambda_max(P^{-1} H)


@dataclass(frozen=True)
class Threshold:
    """The value that ``quantity`` cannot exceed for the update to stay stable."""

    quantity: str  # "sharpness" (lambda_max(H)) | "preconditioned_sharpness" (of P^{-1}H)
    value: float  # per step, in the units of the Hessian of the training loss
    formula: str  # LaTeX, in the optimizer's hyperparameters
    reference: str  # where the formula comes from


class ThresholdError(UserError, ValueError):
    """No closed-form threshold exists for this optimizer configuration."""


def gd(lr: float) -> float:
    r"""Gradient descent: :math:`|1 - \eta\lambda| \le 1 \iff \lambda \le 2/\eta`."""
    return 2.0 / lr


def heavy_ball(lr: float, beta: float) -> float:
    r"""PyTorch heavy ball :math:`b \leftarrow \beta b + g,\ \theta \leftarrow \theta - \eta b`.

    Characteristic polynomial :math:`z^2 - (1 + \beta - \eta\lambda) z + \beta`; the root
    :math:`z = -1` appears at :math:`\eta\lambda = 2 + 2\beta`.
    """
    return (2.0 + 2.0 * beta) / lr


def nesterov(lr: float, beta: float) -> float:
    r"""Nesterov, PyTorch form :math:`b \leftarrow \beta b + g,\ \theta -= \eta(g + \beta b)`.

    Characteristic polynomial :math:`z^2 - (1+\beta)(1-\eta\lambda) z + \beta(1-\eta\lambda)`;
    the root :math:`z = -1` appears at :math:`\eta\lambda = (2+2\beta)/(1+2\beta)`.
    """
    return (2.0 + 2.0 * beta) / ((1.0 + 2.0 * beta) * lr)


def ema_momentum(lr: float, beta1: float) -> float:
    r"""Frozen Adam: :math:`m \leftarrow \beta_1 m + (1-\beta_1) g,\ \theta -= \eta P^{-1} m`.

    In the eigenbasis of :math:`P^{-1}H` this is heavy ball with step
    :math:`\eta(1-\beta_1)` and momentum :math:`\beta_1`, hence
    :math:`\lambda_{\max}(P^{-1}H) \le (2+2\beta_1)/((1-\beta_1)\eta)` (``38/lr`` at 0.9).
    """
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def sam_edge(
    lr: float, rho: float, grad_norm: float | None = None, base: float | None = None
) -> float:
    r"""The SAM edge: the largest :math:`\lambda` with :math:`\lambda + r\lambda^2 \le T`.

    On the quadratic, SAM's gradient at the ascent point is
    :math:`(H + rH^2)\theta` with :math:`r = \rho` for unnormalized SAM (USAM) and
    :math:`r = \rho/\lVert g\rVert` for SAM with the normalized ascent step (the
    gradient norm held fixed over a step), so SAM is the base method applied to the
    curvature :math:`\lambda + r\lambda^2`.  With the gradient-descent base
    :math:`T = 2/\eta`:

    .. math::

        \lambda^* = \frac{-1 + \sqrt{1 + 8 r/\eta}}{2 r},\qquad
        \eta\lambda^*(1 + r\lambda^*) = 2 .

    ``grad_norm=None`` gives the unnormalized edge (Agarwala & Dauphin 2023); a
    gradient norm gives the normalized SAM-edge of Long & Bartlett (2023), which
    moves with :math:`\lVert g\rVert`.  ``base`` replaces :math:`T = 2/\eta` by another
    base threshold (heavy ball, Nesterov, or one lowered by weight decay) — the same
    linearization, not a formula from those papers.
    """
    t = gd(lr) if base is None else base
    if grad_norm is not None and not grad_norm > 0:
        raise ThresholdError(
            f"the normalized SAM edge needs a positive gradient norm, got {grad_norm}"
        )
    r = rho if grad_norm is None else rho / grad_norm
    if t <= 0:
        return 0.0
    return 2.0 * t / (1.0 + math.sqrt(1.0 + 4.0 * r * t))  # = (sqrt(1+4rt) - 1)/(2r), stable


ANDREYEV2024 = (
    "Andreyev & Beneventano (2024), Edge of Stochastic Stability: Revisiting the Edge of "
    "Stability for SGD, arXiv:2412.20553v3; momentum levels from Andreyev et al. (2026)"
)


@dataclass(frozen=True)
class BatchTarget:
    """A level that the *batch* sharpness of mini-batch SGD hovers at (EoSS)."""

    name: str  # the claim option naming it
    formula: str  # plain text, as claims and figure legends print it
    level: Callable[[float, float], float]  # (lr, momentum) -> level


BATCH_TARGETS = {
    t.name: t
    for t in (
        BatchTarget("sgd", "2/lr", lambda lr, beta: 2.0 / lr),
        # momentum SGD: the small-batch level 2(1-beta)/lr and the large-batch one 2(1+beta)/lr
        BatchTarget("momentum-small-batch", "2(1-beta)/lr", lambda lr, beta: 2 * (1 - beta) / lr),
        BatchTarget("momentum-large-batch", "2(1+beta)/lr", lambda lr, beta: 2 * (1 + beta) / lr),
    )
}
MOMENTUM_BATCH_TARGETS = ("momentum-small-batch", "momentum-large-batch")

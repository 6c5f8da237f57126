r"""Adam and RMSProp (:class:`torch.optim.Adam`, :class:`torch.optim.RMSprop`).

Both are preconditioned methods :math:`\theta \leftarrow \theta - \eta P^{-1} u` with a
diagonal :math:`P` built from a running average of squared gradients.  Their edge of
stability is on the *preconditioned sharpness* :math:`\lambda_{\max}(P^{-1}H)`
(Cohen et al. 2022, arXiv:2207.14484), derived with :math:`P` frozen.
:func:`adam_preconditioner` and :func:`rmsprop_preconditioner` return the current
:math:`P` so that measurements can compute that quantity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..task import OptimizerSpec
from . import thresholds as th
from .thresholds import Threshold, ThresholdError


def build_adam(spec: OptimizerSpec, params: Iterable[Any]) -> torch.optim.Adam:
    r"""Adam (Kingma & Ba 2015), ``torch.optim.Adam`` with coupled L2 ``weight_decay``.

    Update, with :math:`g_t = \nabla L(\theta_t) + \omega\theta_t` and step count
    :math:`t = 1, 2, \dots`:

    .. math::

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
        \hat v_t = \frac{v_t}{1-\beta_2^t} \\
        \theta_{t+1} = \theta_t - \eta P_t^{-1} m_t,\qquad
        P_t = (1-\beta_1^t)\,\mathrm{diag}\big(\sqrt{\hat v_t} + \epsilon\big),

    which is the usual :math:`\theta - \eta\,\hat m_t / (\sqrt{\hat v_t}+\epsilon)` with
    the bias correction of :math:`m` folded into :math:`P` (Cohen et al. 2022 write
    Adam in this preconditioned-momentum form).  Threshold, for a frozen :math:`P`:

    .. math::

        \lambda_{\max}(P^{-1}H) \le \frac{2 + 2\beta_1}{(1-\beta_1)\,\eta}
        \quad (= 38/\eta \text{ at } \beta_1 = 0.9).

    With :math:`P` fixed, :math:`m \leftarrow \beta_1 m + (1-\beta_1)Hx,\ x \leftarrow x -
    \eta P^{-1}m` is heavy ball on :math:`P^{-1}H` with step :math:`\eta(1-\beta_1)` and
    momentum :math:`\beta_1`.  In training :math:`P` drifts slowly (:math:`\beta_2` close
    to 1), and Cohen et al. observe :math:`\lambda_{\max}(P^{-1}H)` equilibrating at this
    value ("Adaptive Edge of Stability").  Reference: Cohen et al. (2022), Adaptive
    Gradient Methods at the Edge of Stability, arXiv:2207.14484.
    """
    if spec.momentum != 0:
        raise UserError(
            f"optimizer.momentum={spec.momentum} does not apply to adam; "
            "its momentum is optimizer.beta1"
        )
    return torch.optim.Adam(
        params,
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )


def adam_threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """Threshold of :func:`build_adam` on :math:`\\lambda_{\\max}(P^{-1}H)`."""
    _no_weight_decay(spec)
    return Threshold(
        th.PRECONDITIONED_SHARPNESS,
        th.ema_momentum(spec.lr, spec.beta1),
        r"\frac{2+2\beta_1}{(1-\beta_1)\,\eta}",
        th.COHEN2022,
    )


def adam_preconditioner(optimizer: torch.optim.Adam) -> list[Tensor] | None:
    r""":math:`P = (1-\beta_1^t)(\sqrt{v_t/(1-\beta_2^t)} + \epsilon)` per parameter.

    Exactly the :math:`P` of the last step: that step moved each parameter by
    :math:`-\eta P^{-1} m_t` (``exp_avg``).  Parameters in ``param_groups`` order; None
    before the first step; ``inf`` (no movement) for a parameter that has no state yet.
    """
    out: list[Tensor] = []
    seen = False
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                out.append(torch.full_like(p, math.inf))
                continue
            seen = True
            step = float(state["step"])
            v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
            denom = v.sqrt() / math.sqrt(1.0 - beta2**step) + group["eps"]
            out.append(denom * (1.0 - beta1**step))
    return out if seen else None


def build_rmsprop(spec: OptimizerSpec, params: Iterable[Any]) -> torch.optim.RMSprop:
    r"""RMSProp (Tieleman & Hinton 2012), ``torch.optim.RMSprop``, decay ``alpha = beta2``.

    Update, with :math:`g_t = \nabla L(\theta_t) + \omega\theta_t` (no bias correction):

    .. math::

        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\qquad
        P_t = \mathrm{diag}\big(\sqrt{v_t} + \epsilon\big) \\
        \mu = 0:\ \theta_{t+1} = \theta_t - \eta P_t^{-1} g_t,\qquad
        \mu > 0:\ b_{t+1} = \mu b_t + P_t^{-1} g_t,\ \theta_{t+1} = \theta_t - \eta b_{t+1}.

    Threshold, for a frozen :math:`P` (gradient descent resp. heavy ball on
    :math:`P^{-1}H`):

    .. math::

        \lambda_{\max}(P^{-1}H) \le \frac{2}{\eta}\ (\mu = 0),\qquad
        \frac{2+2\mu}{\eta}\ (\mu > 0).

    Reference: Cohen et al. (2022), arXiv:2207.14484 (RMSProp, :math:`2/\eta`); the
    momentum case is the same frozen-:math:`P` linearization with the heavy-ball edge.
    """
    if spec.nesterov:
        raise UserError("optimizer.nesterov=true is not available for rmsprop")
    return torch.optim.RMSprop(
        params,
        lr=spec.lr,
        alpha=spec.beta2,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        momentum=spec.momentum,
    )


def rmsprop_threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """Threshold of :func:`build_rmsprop` on :math:`\\lambda_{\\max}(P^{-1}H)`."""
    _no_weight_decay(spec)
    if spec.momentum == 0:
        value, formula = th.gd(spec.lr), r"\frac{2}{\eta}"
    else:
        value, formula = th.heavy_ball(spec.lr, spec.momentum), r"\frac{2+2\mu}{\eta}"
    return Threshold(th.PRECONDITIONED_SHARPNESS, value, formula, th.COHEN2022)


def rmsprop_preconditioner(optimizer: torch.optim.RMSprop) -> list[Tensor] | None:
    r""":math:`P = \sqrt{v_t} + \epsilon` (centered: :math:`\sqrt{v_t - \bar g_t^2} + \epsilon`).

    Same conventions as :func:`adam_preconditioner`.
    """
    out: list[Tensor] = []
    seen = False
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "square_avg" not in state:
                out.append(torch.full_like(p, math.inf))
                continue
            seen = True
            v = state["square_avg"]
            if group.get("centered"):
                v = v - state["grad_avg"] ** 2
            out.append(v.sqrt() + group["eps"])
    return out if seen else None


def _no_weight_decay(spec: OptimizerSpec) -> None:
    if spec.weight_decay:
        raise ThresholdError(
            f"{spec.name} with weight_decay={spec.weight_decay} has no threshold on "
            "lambda_max(P^-1 H): coupled L2 adds weight_decay * P^-1 (not a multiple of the "
            "identity) to the preconditioned Hessian; use weight_decay=0"
        )

r"""Gradient descent, heavy-ball and Nesterov momentum: :class:`torch.optim.SGD`.

``sgd`` is full-batch gradient descent when ``batch_size`` is None (the batch size
does not enter the update rule).  With momentum :math:`\beta>0` it is PyTorch's
heavy ball, with ``nesterov`` PyTorch's Nesterov form.  ``weight_decay`` :math:`\omega`
adds :math:`\omega\theta` to the gradient.  ``clip_norm`` :math:`c` clips the step's gradient to
norm :math:`c` first (:class:`ClippedSGD`); the thresholds below hold where it does not clip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..errors import UserError
from ..task import OptimizerSpec
from . import thresholds as th
from .thresholds import Threshold


def build(spec: OptimizerSpec, params: Iterable[Any]) -> torch.optim.SGD:
    r"""Gradient descent with optional momentum (``torch.optim.SGD``).

    Update, with :math:`g_t = \nabla L(\theta_t) + \omega\theta_t` on the step's batch:

    .. math::

        \text{GD:}\quad & \theta_{t+1} = \theta_t - \eta g_t \\
        \text{heavy ball:}\quad & b_{t+1} = \beta b_t + g_t,\quad
            \theta_{t+1} = \theta_t - \eta b_{t+1} \\
        \text{Nesterov:}\quad & b_{t+1} = \beta b_t + g_t,\quad
            \theta_{t+1} = \theta_t - \eta (g_t + \beta b_{t+1})

    (:math:`b_1 = g_0`, as in PyTorch).  Stability thresholds on
    :math:`\lambda_{\max}(\nabla^2 L)`, from the quadratic model:

    .. math::

        \text{GD: } \frac{2}{\eta} - \omega,\qquad
        \text{heavy ball: } \frac{2+2\beta}{\eta} - \omega,\qquad
        \text{Nesterov: } \frac{2+2\beta}{(1+2\beta)\eta} - \omega .

    References: Cohen et al. (2021), Gradient Descent on Neural Networks Typically
    Occurs at the Edge of Stability, arXiv:2103.00065 (GD: Sec. 3; momentum in the
    PyTorch form: appendix).  Verified on quadratics in ``tests/test_optim.py``.
    """
    if spec.nesterov and spec.momentum == 0:
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0")
    kw = dict(lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
              weight_decay=spec.weight_decay)  # fmt: skip
    if spec.clip_norm is None:
        return torch.optim.SGD(params, **kw)
    return ClippedSGD(params, clip_norm=float(spec.clip_norm), **kw)


class ClippedSGD(torch.optim.SGD):
    r"""SGD on the clipped gradient :math:`g \min(1, c / \lVert g \rVert_2)`, the norm taken
    over all parameters before weight decay (``torch.nn.utils.clip_grad_norm_``, as
    Beneventano et al.'s and Marshall et al.'s experiments clip).  ``last_grad_norm`` is the
    norm before clipping."""

    def __init__(self, params: Iterable[Any], clip_norm: float, **kw: Any):
        super().__init__(params, **kw)
        self.clip_norm = clip_norm
        self.last_grad_norm: float | None = None

    def step(self, closure=None):
        loss = loss_before(closure, needs="ClippedSGD")
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip_norm))
        super().step()
        return loss

    def step_record(self) -> dict[str, float]:
        """Recorded every step: the gradient norm before clipping."""
        return {} if self.last_grad_norm is None else {"grad_norm": self.last_grad_norm}


def edge(spec: OptimizerSpec) -> tuple[float, str]:
    """The threshold on the loss Hessian and its LaTeX formula (shared with SAM)."""
    beta = spec.momentum
    if beta == 0:
        value, formula = th.gd(spec.lr), r"\frac{2}{\eta}"
    elif spec.nesterov:
        value, formula = th.nesterov(spec.lr, beta), r"\frac{2+2\beta}{(1+2\beta)\,\eta}"
    else:
        value, formula = th.heavy_ball(spec.lr, beta), r"\frac{2+2\beta}{\eta}"
    if spec.weight_decay:
        value, formula = value - spec.weight_decay, formula + r" - \omega"
    return value, formula


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """Threshold on the sharpness :math:`\\lambda_{\\max}(\\nabla^2 L)` (see :func:`build`)."""
    value, formula = edge(spec)
    ref = th.COHEN2021 if spec.momentum == 0 else th.COHEN2021_MOMENTUM
    return Threshold(th.SHARPNESS, value, formula, ref)


def loss_before(closure, needs: str | None = None):
    """The loss at the parameters before a step: ``closure()``, run with gradients enabled
    (it computes the gradient too).  Without a closure: None, or a ValueError where the step
    ``needs`` one (the optimizer's name)."""
    if closure is None:
        if needs:
            raise ValueError(f"{needs}.step needs a closure that computes the loss and gradient")
        return None
    with torch.enable_grad():
        return closure()

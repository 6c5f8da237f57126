r"""Sharpness-Aware Minimization (Foret et al. 2021) over an SGD or Adam base update.

The step needs a closure ``closure(update_bn: bool = True) -> loss`` that zeroes the
gradients, evaluates the loss of the step's batch at the current parameters, calls
``backward`` and returns the detached loss.  SAM calls it once at :math:`\theta` and once,
with ``update_bn=False``, at the ascent point, so that BatchNorm running statistics are
updated once per step; :func:`call_without_buffer_updates` is one way for the closure
to honour the flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..task import OptimizerSpec
from . import adaptive, sgd
from . import thresholds as th
from .sgd import loss_before
from .thresholds import Threshold, ThresholdError

BASES = ("sgd", "adam")
Base = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


class OverBase(torch.optim.Optimizer):
    """An update that changes the gradient and lets a base optimizer step on it (SAM, TRACER).

    ``base(param_groups)`` builds the base; the two share their parameter groups (a
    schedule that sets ``lr`` sets the base's), a group added later takes this optimizer's
    defaults, and the base's state is the state that a checkpoint keeps.
    """

    def __init__(self, params: Iterable[Any], base: Base, defaults: dict[str, Any]):
        super().__init__(params, defaults)
        self.base_optimizer = base(self.param_groups)
        self.param_groups = self.base_optimizer.param_groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base_optimizer" not in self.__dict__:  # during __init__
            super().add_param_group(param_group)
            return
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        self.base_optimizer.add_param_group(param_group)  # shares self.param_groups

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def base_of(spec: OptimizerSpec) -> Base:
    """The base optimizer that ``spec.base`` names (``sgd`` or ``adam``), built from ``spec``."""
    if spec.base not in BASES:
        raise UserError(f"optimizer.base={spec.base!r} is not one of {', '.join(BASES)}")
    build = sgd.build if spec.base == "sgd" else adaptive.build_adam
    return lambda groups: build(spec, groups)


class SAM(OverBase):
    r"""SAM: the base update applied to the gradient at an ascent point.

    With :math:`g = \nabla L_B(\theta)` on the step's batch :math:`B`:

    .. math::

        \varepsilon = \rho\,\frac{g}{\lVert g\rVert}\ \text{(normalized, Foret et al. 2021)}
        \quad\text{or}\quad \varepsilon = \rho\, g\ \text{(unnormalized, USAM)},\\
        \tilde g = \nabla L_B(\theta + \varepsilon),\qquad
        \theta \leftarrow \mathrm{Base}(\theta, \tilde g).

    :math:`\lVert g\rVert` is the norm over all parameters; the ascent uses the loss
    gradient only (weight decay enters the base update at :math:`\theta`).
    :attr:`last_grad_norm` keeps :math:`\lVert g\rVert` of the last step (a tensor,
    for the normalized SAM-edge :func:`~eosbench.optim.thresholds.sam_edge`).

    Thresholds (sharpness :math:`\lambda_{\max}(H)`, base gradient descent): USAM is
    gradient descent on the curvature :math:`\lambda + \rho\lambda^2`, stable iff
    :math:`\eta\lambda(1+\rho\lambda) \le 2`, i.e.

    .. math::

        \lambda \le \frac{-1 + \sqrt{1 + 8\rho/\eta}}{2\rho}

    (Agarwala & Dauphin 2023, arXiv:2302.08692).  Normalized SAM with the gradient norm
    held fixed replaces :math:`\rho` by :math:`\rho/\lVert g\rVert`:
    :math:`\eta\lambda(1 + \rho\lambda/\lVert g\rVert) \le 2`, an edge that moves with
    :math:`\lVert g\rVert` (Long & Bartlett 2023, arXiv:2309.12488).  Reference for the
    algorithm: Foret, Kleiner, Mobahi, Neyshabur (2021), Sharpness-Aware Minimization
    for Efficiently Improving Generalization, arXiv:2010.01412; USAM: Andriushchenko &
    Flammarion (2022), Towards Understanding Sharpness-Aware Minimization,
    arXiv:2206.06232.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base: Base,
        rho: float,
        normalized: bool = True,
    ):
        if rho < 0:
            raise ValueError(f"SAM radius rho must be >= 0, got {rho}")
        super().__init__(params, base, {"rho": rho, "normalized": normalized})
        self.last_grad_norm: Tensor | None = None

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One SAM step; returns the loss at the unperturbed parameters."""
        loss = loss_before(closure, needs="SAM")
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        norm = global_norm([p.grad for p in params])
        self.last_grad_norm = norm
        tiny = torch.finfo(norm.dtype).tiny
        shifts: list[tuple[Tensor, Tensor]] = []
        for group in self.param_groups:
            scale = group["rho"] / norm.clamp_min(tiny) if group["normalized"] else group["rho"]
            shifts += [(p, p.grad * scale) for p in group["params"] if p.grad is not None]
        gradient_at(closure, shifts)
        self.base_optimizer.step()
        return loss


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The Euclidean norm of the concatenation of ``tensors``."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@torch.no_grad()
def gradient_at(closure: Callable[..., Tensor], shifts: list[tuple[Tensor, Tensor]]) -> None:
    """Fill ``.grad`` with the gradient at the parameters moved by their shifts, ``(p, dp)``
    pairs, evaluated by ``closure(update_bn=False)``; the parameters are then restored
    exactly (from copies, not by subtraction)."""
    saved = [(p, p.clone()) for p, _ in shifts]
    for p, dp in shifts:
        p.add_(dp)
    with torch.enable_grad():
        closure(update_bn=False)
    for p, w in saved:
        p.copy_(w)


def build(spec: OptimizerSpec, params: Iterable[Any]) -> SAM:
    """SAM over ``spec.base`` (``sgd`` or ``adam``, built from the same spec); see :class:`SAM`."""
    base = base_of(spec)
    if spec.rho < 0:
        raise UserError(f"optimizer.rho={spec.rho} must be >= 0")
    return SAM(params, base, spec.rho, spec.normalized)


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    r"""SAM edge on :math:`\lambda_{\max}(\nabla^2 L)` for the SGD base.

    Unnormalized: :math:`\lambda^*` with :math:`\lambda + \rho\lambda^2 = T`, :math:`T` the
    base threshold (:math:`2/\eta` for GD; heavy ball, Nesterov and weight decay by the
    same linearization).  Normalized: needs ``grad_norm`` (:math:`\lVert g\rVert` at the
    step, e.g. :attr:`SAM.last_grad_norm`), else :class:`ThresholdError`.  The Adam base
    has no closed form (:math:`P^{-1}(H + \rho H^2)` is not a function of
    :math:`P^{-1}H`): :class:`ThresholdError`.
    """
    if spec.base != "sgd":
        raise ThresholdError(
            f"SAM with base={spec.base!r} has no closed-form threshold; only base='sgd' has one"
        )
    if spec.normalized and grad_norm is None:
        raise ThresholdError(
            "the edge of normalized SAM depends on the gradient norm (Long & Bartlett 2023): "
            "call threshold(spec, grad_norm=...) or thresholds.sam_edge(lr, rho, grad_norm)"
        )
    base, base_formula = sgd.edge(spec)
    r = r"\rho/\lVert g\rVert" if spec.normalized else r"\rho"
    formula = rf"\frac{{-1+\sqrt{{1+4 r T}}}}{{2 r}},\ r={r},\ T={base_formula}"
    value = th.sam_edge(spec.lr, spec.rho, grad_norm if spec.normalized else None, base)
    ref = th.LONG2023 if spec.normalized else th.AGARWALA2023
    return Threshold(th.SHARPNESS, value, formula, ref)


def call_without_buffer_updates(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` on copies of its buffers, so BatchNorm running
    statistics (and ``num_batches_tracked``) are left as they were; gradients still
    flow to the module's parameters.  For a closure's ``update_bn=False`` call."""
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    return torch.func.functional_call(module, buffers, args, kwargs)

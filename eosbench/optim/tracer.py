r"""TRACER: a Fisher-metric curvature penalty over an SGD or Adam base update
(SGD-TRACER / Adam-TRACER, after G-TRACER, Williams & Roberts 2023, arXiv:2306.13914).

What the paper states, and what this module implements
-----------------------------------------------------
G-TRACER augments the loss with a penalty that its authors describe as the *metric trace
of the Hessian with respect to the Fisher information metric*, :math:`\operatorname{tr}(F^{-1}H)`,
derived as a natural-gradient approximation of a generalized (variational) Bayes objective:
for a Gaussian posterior with covariance :math:`\propto F^{-1}`, the expected loss is
:math:`L + \tfrac{\sigma^2}{2}\operatorname{tr}(F^{-1}H) + O(\sigma^4)` ("expected
sharpness").  The paper's pseudocode and hyperparameters could not be read offline when
this module was written, so the update below is eosbench's own discretization of that
stated penalty, not a transcription of the authors' code; results obtained with it are
labelled *eosbench TRACER* in the tables.

With :math:`g = \nabla L_B(\theta)` on the step's batch :math:`B`, a diagonal Fisher
estimate :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g\odot g`, bias-corrected
:math:`\hat v_t = v_t/(1-\beta_2^t)`, and damping :math:`\delta` (``eps``):

.. math::

    \hat F = \operatorname{diag}(\hat v_t) + \delta I,\qquad
    R(\theta) = \tfrac12\, g^\top \hat F^{-1} g
      = \tfrac12 \operatorname{tr}\big(\hat F^{-1}\, g g^\top\big),

the Fisher-metric trace of the batch's rank-one Gauss-Newton (empirical Fisher) estimate
of :math:`H`, with :math:`\hat F` held fixed within the step.  Its gradient is
:math:`\nabla R = H u`, :math:`u = \hat F^{-1} g`, obtained by a forward difference of
two gradients on the same batch (so a step costs two gradients, as SAM):

.. math::

    H u \approx \frac{\nabla L_B(\theta + h u) - g}{h},\qquad
    h = \frac{r\,\max(\lVert\theta\rVert, 1)}{\lVert u\rVert},\ r = 10^{-3},

and the base optimizer steps on :math:`\tilde g = g + \rho\, H u` (weight decay, momentum
and Adam's moments act on :math:`\tilde g` as in the base).  :math:`\rho` (``rho``) is the
regularization strength; :math:`\rho = 0` is the base optimizer exactly (one gradient per
step).  :attr:`TRACER.last_penalty_ratio` keeps
:math:`\rho\lVert Hu\rVert/\lVert g\rVert` of the last step, the size of the penalty's
pull relative to the loss gradient.

The closure protocol is SAM's (:mod:`eosbench.optim.sam`): ``closure(update_bn=True)``
zeroes the gradients, evaluates the batch loss, calls ``backward`` and returns the loss;
the second call uses ``update_bn=False`` so BatchNorm statistics are updated once per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..task import OptimizerSpec
from .sam import Base, OverBase, base_of, global_norm, gradient_at
from .sgd import loss_before
from .thresholds import Threshold, ThresholdError

FD_RADIUS = 1e-3  # relative finite-difference step r (see the module docstring)


class TRACER(OverBase):
    """The base update applied to :math:`g + \\rho H \\hat F^{-1} g` (module docstring)."""

    def __init__(
        self,
        params: Iterable[Any],
        base: Base,
        rho: float,
        beta2: float = 0.999,
        damping: float = 1e-8,
    ):
        if rho < 0:
            raise ValueError(f"TRACER strength rho must be >= 0, got {rho}")
        if not 0 <= beta2 < 1:
            raise ValueError(f"TRACER beta2 must be in [0, 1), got {beta2}")
        if damping < 0:
            raise ValueError(f"TRACER damping must be >= 0, got {damping}")
        super().__init__(params, base, {"rho": rho, "fisher_beta": beta2, "damping": damping})
        self.fisher_steps = 0
        self.fisher: dict[Tensor, Tensor] = {}  # v_t per parameter (the base's state is its own)
        self.last_penalty_ratio: Tensor | None = None

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _fisher(self, p: Tensor) -> Tensor:
        if p not in self.fisher:
            self.fisher[p] = torch.zeros_like(p)
        return self.fisher[p]

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One TRACER step; returns the loss at the unperturbed parameters."""
        loss = loss_before(closure, needs="TRACER")
        self.fisher_steps += 1
        items: list[tuple[dict[str, Any], Tensor, Tensor, Tensor]] = []  # group, p, g, u
        for group in self.param_groups:
            beta = group["fisher_beta"]
            correction = 1 - beta**self.fisher_steps
            for p in group["params"]:
                if p.grad is None:
                    continue
                v = self._fisher(p)
                v.mul_(beta).addcmul_(p.grad, p.grad, value=1 - beta)
                u = p.grad / (v / correction + group["damping"])
                items.append((group, p, p.grad.clone(), u))
        if not items or all(g["rho"] == 0 for g, *_ in items):
            self.base_optimizer.step()
            return loss
        u_norm = global_norm([u for *_, u in items])
        w_norm = global_norm([p for _, p, *_ in items])
        tiny = torch.finfo(u_norm.dtype).tiny
        h = FD_RADIUS * w_norm.clamp_min(1.0) / u_norm.clamp_min(tiny)
        gradient_at(closure, [(p, u * h) for _, p, _, u in items])
        g_norm = global_norm([g for _, _, g, _ in items])
        hu_sq = torch.zeros((), dtype=u_norm.dtype, device=u_norm.device)
        for group, p, g, _ in items:
            hu = (p.grad - g) / h
            hu_sq += torch.linalg.vector_norm(group["rho"] * hu) ** 2
            p.grad.copy_(g.add_(hu, alpha=group["rho"]))
        self.last_penalty_ratio = hu_sq.sqrt() / g_norm.clamp_min(tiny)
        self.base_optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d["tracer"] = {
            "fisher_steps": self.fisher_steps,
            "fisher": {
                i: self.fisher[p].clone() for i, p in enumerate(self._params()) if p in self.fisher
            },
        }
        return d

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        tr = state_dict.pop("tracer", {"fisher_steps": 0, "fisher": {}})
        super().load_state_dict(state_dict)
        params = self._params()
        self.fisher_steps = int(tr["fisher_steps"])
        self.fisher = {
            params[int(i)]: v.to(device=params[int(i)].device, dtype=params[int(i)].dtype).clone()
            for i, v in tr["fisher"].items()
        }


def build(spec: OptimizerSpec, params: Iterable[Any]) -> TRACER:
    """TRACER over ``spec.base`` with strength ``rho``, Fisher decay ``beta2`` and damping
    ``eps`` (for the Adam base, ``eps`` is also Adam's); see :class:`TRACER`."""
    return TRACER(params, base_of(spec), spec.rho, spec.beta2, spec.eps)


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """No closed-form stability threshold is known for TRACER."""
    raise ThresholdError(
        "TRACER has no closed-form stability threshold (its penalty gradient is not a "
        "linear function of the parameters on a quadratic)"
    )

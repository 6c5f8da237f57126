r"""Step-size tuners: the step :math:`\eta_t` chosen at every step from local information.

Registered as ``armijo``, ``polyak`` and ``cdat`` (:mod:`eosbench.optim`).  Every tuner
takes the step :math:`\theta_{t+1} = \theta_t + \eta_t u_t` along the base direction
:math:`u_t` and keeps the step it took in :attr:`TunedStep.last_lr` (the runner records it,
through :meth:`TunedStep.step_record`, as ``lr`` in the series) and what it cost beyond the step's gradient in
:attr:`TunedStep.last_cost` (``lr_evaluations``: extra closure calls, each a loss and a
gradient over the step's batch, which the run's ``gradient_evaluations`` include;
``lr_hvps``: Hessian-vector products).  ``optimizer.lr`` is the cap
:math:`\eta_{\max}` of every rule (and Armijo's first trial step).

Base directions (``optimizer.base``): ``sgd`` -- :math:`u = -g` (GD), with ``momentum``
:math:`\beta` the heavy-ball :math:`u = -b`, :math:`b \leftarrow \beta b + g` (PyTorch's
form, :math:`b_1 = g_0`), with ``nesterov`` :math:`u = -(g + \beta b)`; ``adam`` --
:math:`u = -\hat m/(\sqrt{\hat v} + \epsilon)`, Adam's update at unit step
(:math:`= -P^{-1} m` with :math:`P` as in :func:`~eosbench.optim.adaptive.adam_preconditioner`).
The papers define Armijo and Polyak for the gradient direction; here they take base
``sgd`` without momentum only.  CDAT takes every base.

No tuner has a fixed stability threshold (:func:`threshold` raises): "at the edge" is the
normalized sharpness :math:`\eta_t\lambda_{\max}(t)/2 = 1`, judged by
:mod:`eosbench.claims.tuners` from the recorded ``lr`` and ``sharpness``.

The papers' own code is not public; the update rules below are those the papers state,
in eosbench's implementation.  The defaults of Armijo's constants could not be read from
the paper offline; they are those of the stochastic line search of Vaswani et al. (2019)
in full batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..task import OptimizerSpec
from .sgd import loss_before
from .thresholds import Threshold, ThresholdError

ROULET2023 = (
    "Roulet, Agarwala, Pedregosa (2023), On the Interplay Between Stepsize Tuning and "
    "Progressive Sharpening, arXiv:2312.00209v3"
)
ROULET2024 = (
    "Roulet, Agarwala, Grill, Swirszcz, Blondel, Pedregosa (2024), Stepping on the Edge: "
    "Curvature Aware Learning Rate Tuners, arXiv:2407.06183v1"
)
VASWANI2019 = (
    "Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien (2019), Painless Stochastic "
    "Gradient: Interpolation, Line-Search, and Convergence Rates, arXiv:1905.09997"
)
LOIZOU2021 = (
    "Loizou, Vaswani, Laradji, Lacoste-Julien (2021), Stochastic Polyak Step-size for SGD, "
    "arXiv:2002.10542"
)

MAX_BACKTRACKS = 200  # Armijo: trials before the last (tiny) one is taken regardless
FD_STEP = 1e-3  # CDAT: length of the finite-difference displacement along u, times max(1, |theta|)

Closure = Callable[..., Tensor]


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


class TunedStep(torch.optim.Optimizer):
    """The shared machinery: the base direction, the step along it, state and cost."""

    def __init__(self, params: Iterable[Any], spec: OptimizerSpec):
        super().__init__(params, {"lr": spec.lr})
        self.spec = spec
        self.scalars: dict[str, float] = {"steps": 0.0}  # the tuner's own state
        self.last_lr: float | None = None
        self.last_cost: dict[str, float] = {}

    # -- what a tuner defines ----------------------------------------------------------

    def tune(self, closure: Closure, loss: float, g: list[Tensor], u: list[Tensor]) -> float:
        raise NotImplementedError

    # -- the step ----------------------------------------------------------------------

    def step_record(self) -> dict[str, float]:
        """What the runner records of the last step: the step taken (``lr``) and its cost."""
        return {} if self.last_lr is None else {"lr": self.last_lr, **self.last_cost}

    def cap(self) -> float:
        """:math:`\\eta_{\\max}`: ``optimizer.lr``, as the schedule sets it this step."""
        return float(self.param_groups[0]["lr"])

    def params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One tuned step; returns the loss at the parameters before it."""
        loss = loss_before(closure, needs=type(self).__name__)
        params = self.params()
        g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        self.scalars["steps"] += 1
        u = self.direction(params, g)
        self.last_cost = {"lr_evaluations": 0.0}
        eta = self.tune(closure, float(loss), g, u)
        self.last_lr = float(eta)
        return loss

    @torch.no_grad()
    def move(self, origin: list[Tensor], u: list[Tensor], eta: float) -> None:
        """Set the parameters to ``origin + eta * u`` (from the copies: exactly)."""
        for p, w, d in zip(self.params(), origin, u, strict=True):
            p.copy_(w)
            p.add_(d, alpha=eta)

    def gradient_at(self, closure: Closure) -> tuple[float, list[Tensor]]:
        """Loss and gradient at the current parameters by one more closure call."""
        with torch.enable_grad():
            loss = closure(update_bn=False)
        self.last_cost["lr_evaluations"] += 1
        g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for p in self.params()]  # fmt: skip
        return float(loss), g

    # -- base directions ---------------------------------------------------------------

    def direction(self, params: list[Tensor], g: list[Tensor]) -> list[Tensor]:
        r"""The base update :math:`u_t` at unit step (module docstring); updates the base's
        state (momentum buffer, Adam moments) exactly as the base optimizer would."""
        s = self.spec
        if s.base == "adam":
            t = self.scalars["steps"]
            out = []
            for p, gi in zip(params, g, strict=True):
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(s.beta1).add_(gi, alpha=1 - s.beta1)
                v.mul_(s.beta2).addcmul_(gi, gi, value=1 - s.beta2)
                denom = (v / (1 - s.beta2**t)).sqrt_().add_(s.eps)
                out.append(-(m / (1 - s.beta1**t)) / denom)
            return out
        if s.momentum == 0:
            return [-gi for gi in g]
        out = []
        for p, gi in zip(params, g, strict=True):
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = gi.clone()
            else:
                st["momentum_buffer"].mul_(s.momentum).add_(gi)
            b = st["momentum_buffer"]
            out.append(-(gi + s.momentum * b) if s.nesterov else -b)
        return out

    def preconditioner(self) -> list[Tensor] | None:
        r""":math:`P = (1-\beta_1^t)(\sqrt{\hat v_t} + \epsilon)` of the last step for the
        ``adam`` base (:math:`u = -P^{-1} m`); None for ``sgd`` and before the first step."""
        if self.spec.base != "adam" or self.scalars["steps"] == 0:
            return None
        s, t = self.spec, self.scalars["steps"]
        out = []
        for p in self.params():
            v = self.state[p].get("exp_avg_sq")
            if v is None:
                out.append(torch.full_like(p, math.inf))
                continue
            out.append(((v / (1 - s.beta2**t)).sqrt() + s.eps) * (1 - s.beta1**t))
        return out

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": super().state_dict(), "scalars": dict(self.scalars)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["optimizer"])
        self.scalars = dict(state_dict["scalars"])


class Armijo(TunedStep):
    r"""Armijo backtracking line search along the gradient (full batch).

    From the trial :math:`\eta = \min(\gamma\,\eta_{t-1}, \eta_{\max})` (:math:`\eta_{\max}`
    at the first step), :math:`\eta \leftarrow \beta\eta` until the sufficient-decrease
    condition

    .. math::

        L(\theta_t - \eta g_t) \le L(\theta_t) - c\,\eta\,\lVert g_t\rVert^2

    holds; :math:`\eta_t` is the first trial that satisfies it (after ``MAX_BACKTRACKS``
    trials the last one is taken).  Parameters: ``armijo_c`` :math:`c`,
    ``armijo_backtrack`` :math:`\beta`, ``armijo_growth`` :math:`\gamma` (the initial-step
    rule: :math:`\gamma = 1` restarts from the previous step, large :math:`\gamma` from the
    cap), ``lr`` :math:`\eta_{\max}`.  Every trial is one closure call (loss and gradient:
    ``lr_evaluations``).  On a quadratic with curvature :math:`\kappa = g^\top Hg/\lVert
    g\rVert^2` along :math:`g` the condition reads :math:`\eta \le 2(1-c)/\kappa`.

    References: the rule and its study at the edge, Roulet, Agarwala & Pedregosa (2023),
    arXiv:2312.00209v3 (Armijo "tends to ever-increase the sharpness" in full batch); the
    default constants (:math:`c = 0.1`, :math:`\beta = 0.9`, :math:`\gamma = 2`), the
    stochastic line search of Vaswani et al. (2019), arXiv:1905.09997, with one batch.
    """

    def tune(self, closure: Closure, loss: float, g: list[Tensor], u: list[Tensor]) -> float:
        s = self.spec
        slope = _dot(g, u)  # = -|g|^2
        prev = self.scalars.get("prev_lr")
        cap = self.cap()
        eta = cap if prev is None else min(s.armijo_growth * prev, cap)
        origin = [p.detach().clone() for p in self.params()]
        for _ in range(MAX_BACKTRACKS):
            self.move(origin, u, eta)
            trial, _ = self.gradient_at(closure)
            if trial <= loss + s.armijo_c * eta * slope:
                break
            eta *= s.armijo_backtrack
        else:
            self.move(origin, u, eta)
        self.scalars["prev_lr"] = eta
        return eta


class Polyak(TunedStep):
    r"""Polyak step size with a cap (SPS\ :sub:`max` with :math:`c = 1`, full batch):

    .. math::

        \eta_t = \min\Big(\frac{\max(L(\theta_t) - L^*, 0)}{\lVert g_t\rVert^2},\
            \eta_{\max}\Big),\qquad \theta_{t+1} = \theta_t - \eta_t g_t,

    with ``polyak_loss_star`` :math:`L^*` (0 by default: the interpolation value of the
    training loss) and ``lr`` :math:`\eta_{\max}`; :math:`\eta_t = 0` where :math:`g_t = 0`.
    No extra evaluations.  On :math:`L = \tfrac12\theta^\top H\theta` (:math:`L^* = 0`)
    the step is :math:`\theta^\top H\theta / (2\,\theta^\top H^2\theta)`.

    References: Polyak (1987), Introduction to Optimization; the capped stochastic form,
    Loizou et al. (2021), arXiv:2002.10542; its behaviour at the edge (at or slightly
    beyond it), Roulet, Agarwala & Pedregosa (2023), arXiv:2312.00209v3.
    """

    def tune(self, closure: Closure, loss: float, g: list[Tensor], u: list[Tensor]) -> float:
        s = self.spec
        gg = _dot(g, g)
        gap = max(loss - s.polyak_loss_star, 0.0)
        eta = min(gap / gg, self.cap()) if gg > 0 else 0.0
        for p, d in zip(self.params(), u, strict=True):
            p.add_(d, alpha=eta)
        return eta


class CDAT(TunedStep):
    r"""Curvature Dynamics Aware Tuning (CDAT) and the quadratically greedy step.

    With :math:`u_t` the base direction (module docstring), :math:`g_t` the gradient and
    :math:`H_t` the Hessian of the step's loss:

    .. math::

        n_t = \max(-g_t^\top u_t, 0),\qquad d_t = |u_t^\top H_t u_t| + \epsilon,\qquad
        \eta_t = \min\Big(\sigma\,\frac{\bar n_t}{\bar d_t},\ \eta_{\max}\Big),

    :math:`\bar n_t = \beta\bar n_{t-1} + (1-\beta) n_t` and likewise :math:`\bar d_t`
    (``cdat_ema`` :math:`\beta`; :math:`\beta = 0`: no smoothing, :math:`\bar n = n`; the
    ratio needs no bias correction), ``cdat_sigma`` :math:`\sigma`: 1 is the quadratically
    greedy step (the minimizer of the quadratic model along :math:`u_t`), 2 "on edge" (the
    largest step at which the quadratic model along :math:`u_t` does not increase);
    ``eps`` :math:`\epsilon` (also Adam's), ``lr`` :math:`\eta_{\max}`.  For GD on a
    quadratic along an eigenvector of eigenvalue :math:`\lambda`, :math:`\sigma = 2` gives
    :math:`\eta\lambda = 2`: the step at the edge of stability.

    :math:`u^\top H u` is one Hessian-vector product (``lr_hvps``), computed here as the
    central difference of two gradients, :math:`u^\top(g(\theta + r u) - g(\theta - r u))
    / (2r)` with :math:`r\lVert u\rVert =` ``FD_STEP`` :math:`\max(1, \lVert\theta\rVert)`
    (exact on quadratics up to rounding; two closure calls, ``lr_evaluations``), since the
    optimizer sees the loss through the step's closure only.

    Reference: Roulet, Agarwala, Grill, Swirszcz, Blondel & Pedregosa (2024), Stepping on
    the Edge: Curvature Aware Learning Rate Tuners, NeurIPS 2024, arXiv:2407.06183v1
    (CDAT, its EMA, :math:`\sigma = 1` greedy and :math:`\sigma = 2` on edge).
    """

    def tune(self, closure: Closure, loss: float, g: list[Tensor], u: list[Tensor]) -> float:
        s = self.spec
        n = max(-_dot(g, u), 0.0)
        d = abs(self.curvature(closure, u)) + s.eps
        self.last_cost["lr_hvps"] = 1.0
        b = s.cdat_ema
        n_bar = b * self.scalars.get("n_bar", 0.0) + (1 - b) * n
        d_bar = b * self.scalars.get("d_bar", 0.0) + (1 - b) * d
        self.scalars["n_bar"], self.scalars["d_bar"] = n_bar, d_bar
        eta = min(s.cdat_sigma * n_bar / d_bar, self.cap())
        for p, di in zip(self.params(), u, strict=True):
            p.add_(di, alpha=eta)
        return eta

    @torch.no_grad()
    def curvature(self, closure: Closure, u: list[Tensor]) -> float:
        """:math:`u^\\top H u` by central differences of the gradient (class docstring)."""
        params = self.params()
        un = math.sqrt(_dot(u, u))
        if un == 0:
            return 0.0
        wn = math.sqrt(sum(float((p * p).sum()) for p in params))
        r = FD_STEP * max(1.0, wn) / un
        origin = [p.detach().clone() for p in params]
        self.move(origin, u, r)
        _, g_plus = self.gradient_at(closure)
        self.move(origin, u, -r)
        _, g_minus = self.gradient_at(closure)
        self.move(origin, u, 0.0)
        return (_dot(u, g_plus) - _dot(u, g_minus)) / (2 * r)


def _check(spec: OptimizerSpec, gradient_only: bool) -> None:
    def num(name: str) -> float:
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise UserError(f"optimizer.{name}={v!r} must be a finite number")
        return float(v)

    if spec.weight_decay:
        raise UserError(f"optimizer.weight_decay={spec.weight_decay}: {spec.name} tunes the "
                        "step on the training loss; use weight_decay=0")  # fmt: skip
    if gradient_only and (spec.base != "sgd" or spec.momentum):
        raise UserError(f"{spec.name} is defined along the gradient: use base=sgd, momentum=0")
    if not 0 < num("armijo_c") < 1:
        raise UserError(f"optimizer.armijo_c={spec.armijo_c} must be in (0, 1)")
    if not 0 < num("armijo_backtrack") < 1:
        raise UserError(f"optimizer.armijo_backtrack={spec.armijo_backtrack} must be in (0, 1)")
    if num("armijo_growth") < 1:
        raise UserError(f"optimizer.armijo_growth={spec.armijo_growth} must be >= 1")
    num("polyak_loss_star")
    if num("cdat_sigma") <= 0:
        raise UserError(f"optimizer.cdat_sigma={spec.cdat_sigma} must be > 0")
    if not 0 <= num("cdat_ema") < 1:
        raise UserError(f"optimizer.cdat_ema={spec.cdat_ema} must be in [0, 1)")


def build_armijo(spec: OptimizerSpec, params: Iterable[Any]) -> Armijo:
    """:class:`Armijo` (base sgd without momentum)."""
    _check(spec, gradient_only=True)
    return Armijo(params, spec)


def build_polyak(spec: OptimizerSpec, params: Iterable[Any]) -> Polyak:
    """:class:`Polyak` (base sgd without momentum)."""
    _check(spec, gradient_only=True)
    return Polyak(params, spec)


def build_cdat(spec: OptimizerSpec, params: Iterable[Any]) -> CDAT:
    """:class:`CDAT` over ``spec.base`` (sgd: GD / heavy ball / Nesterov; adam)."""
    _check(spec, gradient_only=False)
    return CDAT(params, spec)


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """No fixed threshold: the step varies (judge :math:`\\eta_t\\lambda_t/2`)."""
    raise ThresholdError(
        f"{spec.name} tunes its step every step, so no fixed threshold exists; its edge is "
        "eta_t * lambda_max(t) / 2 = 1 on the recorded lr and sharpness (claims.tuners)"
    )


def _base_name(o: OptimizerSpec) -> str:
    if o.base == "adam":
        return "Adam"
    if o.momentum:
        return rf"{'Nesterov' if o.nesterov else 'HB'} $\beta$={o.momentum:g}"
    return "GD"


def label(o: OptimizerSpec) -> str:
    """Display label (mathtext) of a tuned optimizer, without the cap."""
    if o.name == "armijo":
        return rf"Armijo, c={o.armijo_c:g}"
    if o.name == "polyak":
        return "Polyak"
    kind = "greedy" if o.cdat_sigma == 1 else "CDAT"
    ema = rf", EMA {o.cdat_ema:g}" if o.cdat_ema else ""
    return rf"{kind}({_base_name(o)}), $\sigma$={o.cdat_sigma:g}{ema}"

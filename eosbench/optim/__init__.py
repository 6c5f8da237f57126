r"""Optimizers: a documented update rule plus its stability threshold.

Registered names (``OPTIMIZERS``, entry point group ``eosbench.optimizers``):

* ``sgd`` -- GD when full batch, heavy ball when ``momentum > 0``, Nesterov when
  ``nesterov`` (``torch.optim.SGD``; ``clip_norm`` clips the gradient first); threshold :math:`2/\eta`,
  :math:`(2+2\beta)/\eta`, :math:`(2+2\beta)/((1+2\beta)\eta)` on the sharpness.
* ``adam`` -- ``torch.optim.Adam``; :math:`\lambda_{\max}(P^{-1}H) \le
  (2+2\beta_1)/((1-\beta_1)\eta)`.
* ``rmsprop`` -- ``torch.optim.RMSprop`` with decay ``beta2``;
  :math:`\lambda_{\max}(P^{-1}H) \le 2/\eta`.
* ``sam`` -- SAM (normalized) or USAM over ``base`` sgd or adam; the SAM edge
  :math:`\eta\lambda(1+r\lambda) = 2` with :math:`r = \rho` or :math:`\rho/\lVert g\rVert`.

* ``tracer`` -- SGD-TRACER / Adam-TRACER: the base update on the gradient of
  :math:`L + \tfrac{\rho}{2} g^\top \hat F^{-1} g`, eosbench's discretization of the
  Fisher-metric trace penalty of G-TRACER (Williams & Roberts 2023,
  arXiv:2306.13914); see :mod:`.tracer` for what is and is not taken from the paper.
  No closed-form threshold.
* ``armijo``, ``polyak``, ``cdat`` -- step-size tuners (:mod:`.tuners`): Armijo backtracking
  line search and the capped Polyak step along the gradient (Roulet, Agarwala & Pedregosa
  2023, arXiv:2312.00209v3), CDAT :math:`\eta_t = \sigma\max(-g^\top u, 0)/(|u^\top H u|
  + \epsilon)` over a GD, momentum or Adam direction :math:`u` (Roulet et al. 2024,
  arXiv:2407.06183v1; :math:`\sigma = 1` quadratically greedy, 2 on edge).  No fixed
  threshold: the edge is :math:`\eta_t\lambda_{\max}/2 = 1`; each records its step as ``lr``.
* ``signsgd`` -- sign descent (full batch) / signSGD (:mod:`.sign`); full batch:
  :math:`2/\eta` on :math:`S_\infty/\lVert g\rVert_1` (Islamov et al. 2026), none on
  :math:`\lambda_{\max}`.
* ``linf``, ``spectral``, ``block_cd``, ``muon``, ``lion`` -- steepest descent in a norm and
  the optimizers built on it (:mod:`.steepest`): :math:`\ell_\infty` descent, spectral
  descent, block coordinate descent (:math:`2/\eta` on the generalized sharpness of their
  norm, Islamov, Crawshaw, Cohen & Gower, arXiv:2603.05002v1), Muon (without momentum:
  :math:`2/\eta` on :math:`S/\lVert g\rVert_*`; with momentum none stated) and Lion (none
  stated).

A third-party optimizer is an :class:`OptimizerEntry` (or any object with the same
``build``/``threshold`` attributes) published under the entry point group.  Its
optimizer may define ``preconditioner() -> list[Tensor] | None`` for
:func:`preconditioner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..registry import Registry
from ..task import OptimizerSpec
from . import adaptive, sam, sgd, sign, steepest, tracer, tuners
from .sam import SAM, call_without_buffer_updates
from .thresholds import Threshold, ThresholdError, sam_edge
from .tracer import TRACER

__all__ = [
    "departures",
    "OPTIMIZERS",
    "SAM",
    "TRACER",
    "OptimizerEntry",
    "Threshold",
    "ThresholdError",
    "build_optimizer",
    "label",
    "call_without_buffer_updates",
    "preconditioner",
    "sam_edge",
    "threshold",
    "validate",
]


@dataclass(frozen=True)
class OptimizerEntry:
    """What a registered optimizer provides."""

    build: Callable[[OptimizerSpec, list[Any]], torch.optim.Optimizer]
    threshold: Callable[..., Threshold]  # (spec, grad_norm=None); grad_norm only if given
    summary: str = ""
    # the display label of a configuration in figures (mathtext), without the step size
    label: Callable[[OptimizerSpec], str] | None = None


def _sgd_label(o: OptimizerSpec) -> str:
    if o.momentum == 0:
        return "SGD"
    return rf"{'Nesterov' if o.nesterov else 'heavy-ball'} SGD, $\beta$={o.momentum:g}"


def _wrapper_label(o: OptimizerSpec) -> str:
    return rf"{o.name.upper()}({o.base}), $\rho$={o.rho:g}"


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", "eosbench.optimizers")
OPTIMIZERS.register(
    "sgd", OptimizerEntry(sgd.build, sgd.threshold, "GD / heavy ball / Nesterov", _sgd_label)
)
OPTIMIZERS.register(
    "adam",
    OptimizerEntry(
        adaptive.build_adam,
        adaptive.adam_threshold,
        "Adam (torch)",
        lambda o: rf"Adam, $\beta_1$={o.beta1:g}",
    ),
)
OPTIMIZERS.register(
    "rmsprop",
    OptimizerEntry(
        adaptive.build_rmsprop, adaptive.rmsprop_threshold, "RMSProp (torch)", lambda o: "RMSProp"
    ),
)
OPTIMIZERS.register(
    "sam", OptimizerEntry(sam.build, sam.threshold, "SAM / USAM over sgd or adam", _wrapper_label)
)
OPTIMIZERS.register(
    "tracer",
    OptimizerEntry(
        tracer.build, tracer.threshold, "SGD-/Adam-TRACER (Fisher-trace penalty)", _wrapper_label
    ),
)

OPTIMIZERS.register(
    "signsgd",
    OptimizerEntry(sign.build, steepest.sign_threshold, "sign descent / signSGD",
                   lambda o: "signSGD"),
)
for _name, _what in (("linf", "l_inf steepest descent"), ("spectral", "spectral descent"),
                     ("block_cd", "block coordinate descent (greedy block)"),
                     ("muon", "Muon: normalized spectral descent, optional momentum")):
    OPTIMIZERS.register(_name, OptimizerEntry(steepest.builder(_name), steepest.threshold,
                                              _what, steepest.label))
OPTIMIZERS.register(
    "lion", OptimizerEntry(steepest.build_lion, steepest.threshold, "Lion", steepest.label)
)
OPTIMIZERS.register(
    "armijo",
    OptimizerEntry(tuners.build_armijo, tuners.threshold, "Armijo line search", tuners.label),
)
OPTIMIZERS.register(
    "polyak",
    OptimizerEntry(tuners.build_polyak, tuners.threshold, "Polyak step (capped)", tuners.label),
)
OPTIMIZERS.register(
    "cdat",
    OptimizerEntry(tuners.build_cdat, tuners.threshold, "CDAT / greedy step", tuners.label),
)


def departures(task, allow: tuple[str, ...] = ()) -> list[str]:
    """What makes ``task``'s step more than its optimizer's plain constant-step update, as
    ``field=value`` strings: momentum, Nesterov, weight decay, gradient clipping and a
    non-constant step-size schedule (the fields named in ``allow`` are not counted).  A
    measurement or claim that holds for the plain method only (GD's central flow, the
    streaming risk ODEs) refuses a task with any."""
    o, lr_schedule = task.optimizer, task.schedule.lr_schedule
    found = {
        "optimizer.momentum": (o.momentum != 0, o.momentum),
        "optimizer.nesterov": (o.nesterov, o.nesterov),
        "optimizer.weight_decay": (o.weight_decay != 0, o.weight_decay),
        "optimizer.clip_norm": (o.clip_norm is not None, o.clip_norm),
        "schedule.lr_schedule": (lr_schedule != "constant", lr_schedule),
    }
    return [f"{k}={v!r}" for k, (on, v) in found.items() if on and k.split(".")[1] not in allow]


def label(spec: OptimizerSpec) -> str:
    r"""The display label of ``spec`` with its step size, e.g. ``SGD, $\eta$=0.1``: its
    registry entry's label (the optimizer's name for an entry without one), the weight
    decay and a sampling other than per-epoch permutations where set."""
    entry = OPTIMIZERS.get(spec.name)
    base = entry.label(spec) if getattr(entry, "label", None) else spec.name
    if spec.weight_decay:
        base += f", wd={spec.weight_decay:g}"
    if spec.sampling != "epoch":
        base += f", {spec.sampling} batches"
    return rf"{base}, $\eta$={spec.lr:g}"


SAMPLINGS = ("epoch", "iid")  # OptimizerSpec.sampling (the runner's mini-batches)


def validate(spec: OptimizerSpec) -> None:
    """Raise :class:`UserError` for hyperparameters no optimizer accepts."""

    def finite(name: str) -> float:
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"optimizer.{name}={v!r} must be a finite number")
        return float(v)

    dtype = torch.finfo(torch.get_default_dtype())  # the dtype of the parameters
    if not dtype.tiny <= finite("lr") <= dtype.max:
        raise UserError(f"optimizer.lr={spec.lr} must be in [{dtype.tiny:.3g}, {dtype.max:.3g}] "
                        f"(> 0 and finite in {dtype.dtype})")  # fmt: skip
    if not 0 <= finite("momentum") < 1:
        raise UserError(f"optimizer.momentum={spec.momentum} must be in [0, 1)")
    if spec.nesterov and spec.momentum == 0:
        raise UserError("optimizer.nesterov=true needs optimizer.momentum > 0")
    for name in ("beta1", "beta2"):
        if not 0 <= finite(name) < 1:
            raise UserError(f"optimizer.{name}={getattr(spec, name)} must be in [0, 1)")
    for name in ("weight_decay", "eps", "rho"):
        if not 0 <= finite(name) <= dtype.max:
            raise UserError(f"optimizer.{name}={getattr(spec, name)} must be >= 0 and "
                            f"finite in {dtype.dtype}")  # fmt: skip
        if spec.lr * getattr(spec, name) > dtype.max:
            raise UserError(f"optimizer.lr * optimizer.{name} = {spec.lr * getattr(spec, name):.3g} "
                            f"is not finite in {dtype.dtype}")  # fmt: skip
    if spec.base not in sam.BASES:
        raise UserError(f"optimizer.base={spec.base!r} is not one of {', '.join(sam.BASES)}")
    if spec.clip_norm is not None:
        if spec.name != "sgd":
            raise UserError(f"optimizer.clip_norm: only sgd clips its gradient, not {spec.name!r}")
        if not 0 < finite("clip_norm") <= dtype.max:
            raise UserError(f"optimizer.clip_norm={spec.clip_norm} must be > 0 and finite")
    if spec.orthogonalizer not in steepest.ORTHOGONALIZERS:
        raise UserError(f"optimizer.orthogonalizer={spec.orthogonalizer!r} is not one of "
                        f"{', '.join(steepest.ORTHOGONALIZERS)}")  # fmt: skip
    if spec.orthogonalizer != "svd" and spec.name not in ("spectral", "muon"):
        raise UserError(f"optimizer.orthogonalizer: only spectral and muon orthogonalize, not "
                        f"{spec.name!r}")  # fmt: skip
    if spec.batch_size is not None and spec.batch_size < 1:
        raise UserError(f"optimizer.batch_size={spec.batch_size} must be >= 1 (or none)")
    if spec.sampling not in SAMPLINGS:
        raise UserError(f"optimizer.sampling={spec.sampling!r} is not one of "
                        f"{', '.join(SAMPLINGS)}")  # fmt: skip
    if spec.sampling != "epoch" and spec.batch_size is None:
        raise UserError(f"optimizer.sampling={spec.sampling!r} needs optimizer.batch_size: "
                        "full-batch steps sample nothing")  # fmt: skip


def build_optimizer(spec: OptimizerSpec, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer ``spec.name`` over ``params`` (tensors or param-group dicts).

    Raises :class:`~eosbench.errors.UnknownNameError` for an unknown name and
    :class:`~eosbench.errors.UserError` for invalid hyperparameters.
    """
    entry = OPTIMIZERS.get(spec.name)
    validate(spec)
    return entry.build(spec, list(params))


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """The stability threshold of ``spec`` (see each optimizer's docstring).

    ``grad_norm`` is only used by normalized SAM, whose edge depends on the gradient
    norm; without it that case raises :class:`ThresholdError` (a ``UserError`` and a
    ``ValueError``), as do configurations without a closed form.
    """
    entry = OPTIMIZERS.get(spec.name)
    validate(spec)
    return entry.threshold(spec) if grad_norm is None else entry.threshold(spec, grad_norm)


def preconditioner(optimizer: torch.optim.Optimizer) -> list[Tensor] | None:
    r"""The current diagonal :math:`P` per parameter, or None for a non-adaptive method.

    For Adam and RMSProp (also as SAM's base) the last step was
    :math:`\theta \leftarrow \theta - \eta P^{-1} u` with :math:`u` the first moment
    (Adam) or the gradient (RMSProp); tensors are in ``param_groups`` order with the
    parameters' shapes.  None as well before the first step.  Other optimizers may
    define a ``preconditioner()`` method.
    """
    if isinstance(optimizer, SAM | TRACER):
        return preconditioner(optimizer.base_optimizer)
    if isinstance(optimizer, torch.optim.Adam):
        return adaptive.adam_preconditioner(optimizer)
    if isinstance(optimizer, torch.optim.RMSprop):
        return adaptive.rmsprop_preconditioner(optimizer)
    if isinstance(optimizer, torch.optim.SGD):
        return None
    method = getattr(optimizer, "preconditioner", None)
    if callable(method):
        return method()
    raise TypeError(
        f"no preconditioner known for {type(optimizer).__name__}; "
        "define a preconditioner() method returning list[Tensor] | None"
    )

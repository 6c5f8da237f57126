r"""Steepest descent in a norm, and the optimizers built on it (Islamov, Crawshaw, Cohen &
Gower, "Non-Euclidean Gradient Descent Operates at the Edge of Stability", arXiv:2603.05002v1).

For a norm :math:`\|\cdot\|` with dual :math:`\|\cdot\|_*` and
:math:`g^\sharp = \arg\max_{\|d\| \le 1} \langle g, d\rangle` (the linear minimization oracle,
:func:`lmo`), the paper's non-Euclidean GD (its Definition 1.1) and its normalized form
(Definition 1.2) are

.. math::  \theta_{t+1} = \theta_t - \eta\,\|g_t\|_*\,g_t^\sharp, \qquad
           \theta_{t+1} = \theta_t - \eta\,g_t^\sharp .

Along the step the loss changes by :math:`-\eta(1 - \tfrac\eta2 D_t)\|g_t\|_*^2` (unnormalized)
with :math:`D_t` the directional smoothness, so the loss can only fall while the curvature in
the norm stays below :math:`2/\eta`; the normalized form needs :math:`D_t \le 2\|g_t\|_*/\eta`.
The curvature the paper tracks is the generalized sharpness
:math:`S(\theta) = \max_{\|d\| = 1} d^\top \nabla^2 L(\theta)\, d` (its Definition 2.2, the
measurement ``generalized_sharpness``), and its thresholds are :math:`S \le 2/\eta` and
:math:`S/\|g\|_* \le 2/\eta` (normalized).  The norms (``NORMS``), over the trainable tensors
:math:`\theta = (\theta_1, \dots, \theta_B)` in ``model.parameters()`` order:

* ``l2``: :math:`\|d\|_2` (GD; :math:`S = \lambda_{\max}`);
* ``linf``: :math:`\|d\|_\infty`, dual :math:`\|g\|_1`, :math:`g^\sharp = \operatorname{sign} g`
  (steepest :math:`\ell_\infty` descent; normalized: sign descent);
* ``spectral``: :math:`\max_b \|\theta_b\|_{2\to2}` with each tensor a matrix (a matrix as it is,
  a vector as one column, a higher-order tensor as ``(shape[0], -1)``), dual
  :math:`\sum_b \|g_b\|_{\text{nuc}}`, :math:`g^\sharp_b = U_b V_b^\top` (the polar factor of
  each block: spectral descent; normalized: Muon without momentum);
* ``block``: :math:`\sum_b \|\theta_b\|_2`, dual :math:`\max_b \|g_b\|_2`, :math:`g^\sharp` the
  unit-normalized gradient of the block with the largest gradient norm, zero elsewhere
  (block coordinate descent with the greedy block rule: the unnormalized step moves only
  that block, by :math:`-\eta g_b`).

Registered here: ``linf`` (unnormalized :math:`\ell_\infty`), ``spectral`` (unnormalized
spectral), ``block_cd`` (block coordinate descent), ``muon`` (normalized spectral, with optional
momentum: Jordan et al. 2024's Muon, ``momentum`` and ``nesterov`` as in ``sgd``) and ``lion``
(Chen et al. 2023, arXiv:2302.06675v4, Algorithm 2: the sign of an interpolated momentum,
``beta1`` and ``beta2``).  Normalized :math:`\ell_\infty` descent is ``signsgd``
(:mod:`.sign`).  The polar factor is an exact SVD by default; ``orthogonalizer:
newton-schulz`` takes Jordan et al.'s quintic Newton-Schulz iteration (5 steps, coefficients
(3.4445, -4.7750, 2.0315), on the Frobenius-normalized matrix), which approximates it with
singular values in roughly [0.7, 1.2] rather than exactly 1.  Every tensor, biases included,
is a block of the norm (no separate optimizer for vectors, and no per-shape scaling of the
update as in some Muon implementations), as in the paper's definition.

Thresholds (``threshold``): ``linf``, ``spectral``, ``block_cd``: :math:`2/\eta` on the
generalized sharpness of their norm; ``muon`` without momentum and ``signsgd`` full-batch:
:math:`2/\eta` on :math:`S/\|g\|_*` (the paper's normalized case).  No threshold is stated in
the literature for Muon with momentum, Lion or signSGD with batches, and none with weight
decay: those raise :class:`ThresholdError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..task import OptimizerSpec
from .sgd import loss_before
from .thresholds import Threshold, ThresholdError

ISLAMOV2026 = (
    "Islamov, Crawshaw, Cohen & Gower (2026), Non-Euclidean Gradient Descent Operates at the "
    "Edge of Stability, arXiv:2603.05002v1"
)
NORMS = ("l2", "linf", "spectral", "block")
ORTHOGONALIZERS = ("svd", "newton-schulz")
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024 (Muon), 5 steps
NS_STEPS = 5


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: expected one of {', '.join(NORMS)}")
    return norm


def as_matrix(t: Tensor) -> Tensor:
    """The block ``t`` as the matrix the spectral norm acts on (a view)."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(-1, 1)
    return t.reshape(t.shape[0], -1)


def polar(m: Tensor, orthogonalizer: str = "svd") -> Tensor:
    r"""The polar factor :math:`UV^\top` of the matrix ``m`` (reduced SVD), or Jordan et al.'s
    Newton-Schulz approximation of it; zero for a zero matrix."""
    if orthogonalizer == "svd":
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        keep = (s > s.max() * max(m.shape) * torch.finfo(m.dtype).eps).to(m.dtype)
        return (u * keep) @ vh
    if orthogonalizer != "newton-schulz":
        raise ValueError(f"orthogonalizer={orthogonalizer!r}: expected one of "
                         f"{', '.join(ORTHOGONALIZERS)}")  # fmt: skip
    a, b, c = NS_COEFFICIENTS
    x = m / (m.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(NS_STEPS):
        xx = x @ x.T
        x = a * x + (b * xx + c * xx @ xx) @ x
    return x.T if tall else x


def nuclear(m: Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord="nuc"))


def spectral_norm(m: Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2))


def dual_norm(norm: str, blocks: Sequence[Tensor]) -> float:
    r""":math:`\|g\|_*` of the gradient blocks ``blocks`` in the dual of ``norm``."""
    check_norm(norm)
    if norm == "l2":
        return math.sqrt(sum(float(b.square().sum()) for b in blocks))
    if norm == "linf":
        return sum(float(b.abs().sum()) for b in blocks)
    if norm == "spectral":
        return sum(nuclear(as_matrix(b)) for b in blocks)
    return max(float(b.norm()) for b in blocks)


def primal_norm(norm: str, blocks: Sequence[Tensor]) -> float:
    r""":math:`\|d\|` of the direction blocks ``blocks``."""
    check_norm(norm)
    if norm == "l2":  # self-dual
        return dual_norm("l2", blocks)
    if norm == "linf":
        return max(float(b.abs().max()) if b.numel() else 0.0 for b in blocks)
    if norm == "spectral":
        return max(spectral_norm(as_matrix(b)) for b in blocks)
    return sum(float(b.norm()) for b in blocks)


def lmo(norm: str, blocks: Sequence[Tensor], orthogonalizer: str = "svd") -> list[Tensor]:
    r""":math:`g^\sharp = \arg\max_{\|d\| \le 1} \langle g, d\rangle` for the blocks of ``g``
    (module docstring; zero blocks where :math:`g = 0`)."""
    check_norm(norm)
    if norm == "l2":
        n = dual_norm("l2", blocks)
        return [b / n if n > 0 else torch.zeros_like(b) for b in blocks]
    if norm == "linf":
        return [torch.sign(b) for b in blocks]
    if norm == "spectral":
        return [polar(as_matrix(b), orthogonalizer).reshape(b.shape) for b in blocks]
    norms = [float(b.norm()) for b in blocks]
    top = max(range(len(blocks)), key=norms.__getitem__)
    return [b / norms[i] if i == top and norms[i] > 0 else torch.zeros_like(b)
            for i, b in enumerate(blocks)]  # fmt: skip


class Steepest(torch.optim.Optimizer):
    r"""Steepest descent in ``norm`` over all parameters of the optimizer (module docstring):
    :math:`\theta \leftarrow \theta - \eta\,\|g\|_*\,g^\sharp` (``normalized=False``) or
    :math:`\theta - \eta\,g^\sharp` (``normalized=True``), with :math:`g` the gradient plus
    ``weight_decay`` :math:`\cdot\,\theta`, and with heavy-ball (or Nesterov) momentum on
    :math:`g` before the oracle where ``momentum > 0`` (Muon's form: the buffer
    :math:`b \leftarrow \mu b + g`, the oracle of :math:`b`, or of :math:`g + \mu b` with
    Nesterov).  The norm couples every parameter (``linf`` excepted), so there is one
    parameter group."""

    def __init__(self, params: Iterable[Any], lr: float, norm: str, normalized: bool,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 orthogonalizer: str = "svd"):  # fmt: skip
        check_norm(norm)
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay})  # fmt: skip
        if len(self.param_groups) != 1:
            raise ValueError("steepest descent in a norm takes one parameter group")
        self.norm, self.normalized, self.orthogonalizer = norm, normalized, orthogonalizer

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # a checkpoint of the former signsgd class lacks these
            group.setdefault("momentum", 0.0)
            group.setdefault("nesterov", False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = loss_before(closure)
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        grads = []
        for p in params:
            g = p.grad
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                buf = g.clone() if buf is None else buf.mul_(group["momentum"]).add_(g)
                self.state[p]["momentum_buffer"] = buf
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            grads.append(g)
        scale = group["lr"]
        if not self.normalized:
            scale *= dual_norm(self.norm, grads)
        for p, d in zip(params, lmo(self.norm, grads, self.orthogonalizer), strict=True):
            p.add_(d, alpha=-scale)
        return loss


class Lion(torch.optim.Optimizer):
    r"""Lion (Chen et al. 2023, arXiv:2302.06675v4, Algorithm 2):
    :math:`\theta \leftarrow \theta - \eta(\operatorname{sign}(\beta_1 m + (1-\beta_1) g) +
    \omega\theta)`, then :math:`m \leftarrow \beta_2 m + (1-\beta_2) g` (``m`` starts at 0;
    ``weight_decay`` :math:`\omega` decoupled, as in the paper)."""

    def __init__(self, params: Iterable[Any], lr: float, beta1: float, beta2: float,
                 weight_decay: float = 0.0):  # fmt: skip
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2,
                                  "weight_decay": weight_decay})  # fmt: skip

    @torch.no_grad()
    def step(self, closure=None):
        loss = loss_before(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = torch.sign(m * group["beta1"] + p.grad * (1 - group["beta1"]))
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                m.mul_(group["beta2"]).add_(p.grad, alpha=1 - group["beta2"])
        return loss


def _check(spec: OptimizerSpec) -> None:
    if spec.name != "muon" and (spec.momentum or spec.nesterov):
        raise UserError(f"optimizer.momentum: {spec.name} has no momentum (muon has)")


NORM_OF = {"linf": "linf", "spectral": "spectral", "block_cd": "block", "muon": "spectral",
           "signsgd": "linf"}  # fmt: skip
NORMALIZED = ("signsgd", "muon")  # the normalized form: threshold on S / |g|_*


def quantity(method: str) -> str:
    """The recorded quantity that ``method``'s threshold bounds (measurement
    ``generalized_sharpness``): ``sharpness_<norm>``, ``_normalized`` for a normalized one."""
    return f"sharpness_{NORM_OF[method]}" + ("_normalized" if method in NORMALIZED else "")


def builder(name: str):
    def build(spec: OptimizerSpec, params: Iterable[Any]) -> Steepest:
        _check(spec)
        return Steepest(params, spec.lr, NORM_OF[name], normalized=name == "muon",
                        momentum=spec.momentum, nesterov=spec.nesterov,
                        weight_decay=spec.weight_decay,
                        orthogonalizer=spec.orthogonalizer)  # fmt: skip

    build.__doc__ = f"``{name}``: steepest descent in the {NORM_OF[name]} norm (module docstring)."
    return build


def build_lion(spec: OptimizerSpec, params: Iterable[Any]) -> Lion:
    return Lion(params, spec.lr, spec.beta1, spec.beta2, spec.weight_decay)


def threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """:math:`2/\\eta` on the generalized sharpness of the optimizer's norm (normalized
    methods: on the sharpness over the dual gradient norm); module docstring."""
    if spec.name == "lion":
        raise ThresholdError("lion has no stated stability threshold (none in Chen et al. "
                             "2023 or Islamov et al. 2026)")  # fmt: skip
    if spec.weight_decay:
        raise ThresholdError(f"{spec.name} with weight decay has no stated threshold")
    if spec.name == "muon" and spec.momentum:
        raise ThresholdError("muon with momentum has no stated stability threshold (Islamov "
                             "et al. 2026 study it without momentum)")  # fmt: skip
    normalized = spec.name in NORMALIZED
    return Threshold(
        quantity=quantity(spec.name),
        value=2.0 / spec.lr,
        formula=r"S_{\|\cdot\|}/\|g\|_* \le 2/\eta" if normalized else r"S_{\|\cdot\|} \le 2/\eta",
        reference=ISLAMOV2026,
    )


def sign_threshold(spec: OptimizerSpec, grad_norm: float | None = None) -> Threshold:
    """Full-batch sign descent: :math:`2/\\eta` on :math:`S_\\infty/\\|g\\|_1`."""
    if spec.batch_size is not None:
        raise ThresholdError("signsgd with batches has no stated threshold; full-batch sign "
                             "descent has 2/eta on sharpness_linf_normalized")  # fmt: skip
    if spec.weight_decay:
        raise ThresholdError("signsgd with weight decay has no stated threshold")
    return Threshold(quantity("signsgd"), 2.0 / spec.lr,
                     r"S_\infty/\|g\|_1 \le 2/\eta", ISLAMOV2026)  # fmt: skip


def label(spec: OptimizerSpec) -> str:
    names = {"linf": r"$\ell_\infty$ descent", "spectral": "spectral descent",
             "block_cd": "block CD", "lion": "Lion"}  # fmt: skip
    if spec.name == "muon":
        return "Muon" if spec.momentum else "Muon (no momentum)"
    return names[spec.name]

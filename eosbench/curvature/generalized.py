r"""Generalized sharpness :math:`S_{\|\cdot\|}(\theta) = \max_{\|d\| = 1} d^\top H d` in a norm
(Islamov, Crawshaw, Cohen & Gower, arXiv:2603.05002v1, Definition 2.2; the norms of
:mod:`eosbench.optim.steepest`).  For the :math:`\ell_2` norm it is :math:`\lambda_{\max}`; for
:math:`\ell_\infty` it is a Max-Cut-like problem (NP-hard in general), so like the paper this
module estimates it by Frank-Wolfe on the relaxed problem over the unit ball:
:math:`d_{k+1} = d_k + \gamma_k(s_k - d_k)`, :math:`s_k = \arg\max_{\|s\| \le 1}\langle H d_k,
s\rangle` (the norm's linear minimization oracle), :math:`\gamma_k = 2/(k+2)`, ``iters``
steps from each of ``restarts`` starts (a warm start, then Gaussian ones), each projected onto
the unit sphere; or, with ``step="power"``, :math:`\gamma_k = 1` (:math:`d_{k+1} = s_k`, the
generalized power method, whose objective never falls when :math:`H` is PSD, since the
objective is convex and :math:`s_k` maximizes its linearization).  ``step="auto"`` takes
``power`` for ``linf`` and ``spectral`` and Frank-Wolfe for ``l2`` and ``block``.  Measured by
``benchmarks/bench_generalized.py`` (fc-tanh on digits, at initialization and after 600 steps
at the edge, same operator, same budgets; ``benchmarks/README.md``): on ``linf`` and
``spectral`` the power step's 42-product estimate is within 0.1-2.6% of the best of every
setting and above Frank-Wolfe's 255-product one in all 4 cases.  On ``block`` the two tie at
initialization and the power step is ahead at the edge (4.85 against 4.65 at 42 products), so
``auto`` keeps Frank-Wolfe there only because the recorded ``block`` runs used it; that choice
is open.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Size, Tensor

from ..optim.steepest import check_norm, dual_norm, lmo, primal_norm


@dataclass(frozen=True)
class GeneralizedResult:
    value: float  # the estimate of S, a lower bound
    direction: Tensor  # the maximizing d, on the unit sphere of the norm (flat)
    n_products: int  # HVPs
    restart_values: tuple[float, ...]  # best value of each restart


def split(v: Tensor, shapes: Sequence[Size]) -> list[Tensor]:
    """The flat vector ``v`` as blocks of ``shapes`` (views)."""
    sizes = [math.prod(s) for s in shapes]
    return [t.view(s) for t, s in zip(v.split(sizes), shapes, strict=True)]


def flat_norm(norm: str, v: Tensor, shapes: Sequence[Size]) -> float:
    return primal_norm(norm, split(v, shapes))


def flat_dual_norm(norm: str, v: Tensor, shapes: Sequence[Size]) -> float:
    return dual_norm(norm, split(v, shapes))


STEPS = ("auto", "fw", "power")
AUTO_STEP = {"l2": "fw", "block": "fw", "linf": "power", "spectral": "power"}


def check_options(norm: str, iters: int, restarts: int, tol: float, step: str = "auto") -> None:
    """``ValueError`` for a bad option of :func:`generalized_sharpness`."""
    check_norm(norm)
    if step not in STEPS:
        raise ValueError(f"step={step!r}: expected one of {', '.join(STEPS)}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters={iters!r}: expected an integer >= 0")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts={restarts!r}: expected a positive integer")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
        raise ValueError(f"tol={tol!r}: expected a finite number >= 0")


def generalized_sharpness(
    op,
    shapes: Sequence[Size],
    norm: str,
    *,
    iters: int = 50,
    restarts: int = 5,
    tol: float = 0.0,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    step: str = "auto",
) -> GeneralizedResult:
    """Estimate :math:`S_{\\|\\cdot\\|}` of the symmetric operator ``op`` (``matvec`` on flat
    vectors of ``sum(prod(shapes))`` entries) in ``norm`` (module docstring)."""
    check_options(norm, iters, restarts, tol, step)
    power = (AUTO_STEP[norm] if step == "auto" else step) == "power"
    dim = sum(math.prod(s) for s in shapes)
    dtype, device = op.dtype, op.device
    best, best_d, n, per = -math.inf, None, 0, []
    for r in range(restarts):
        if r == 0 and init is not None:
            d = init.detach().to(dtype=dtype, device=device).reshape(-1).clone()
        else:
            d = torch.randn(dim, generator=generator, dtype=dtype, device="cpu").to(device)
        size = flat_norm(norm, d, shapes)
        if not size > 0:
            d = torch.ones(dim, dtype=dtype, device=device)
            size = flat_norm(norm, d, shapes)
        d = d / size
        top = -math.inf
        for k in range(iters + 1):
            h = op.matvec(d)
            n += 1
            dh = float(d @ h)
            size = flat_norm(norm, d, shapes)
            value = dh / size**2
            if value > top:
                top = value
                if value > best:
                    best, best_d = value, d / size
            if k == iters:
                break
            s = torch.cat([b.reshape(-1) for b in lmo(norm, split(h, shapes))])
            gap = float(h @ s) - dh
            if gap <= tol * abs(dh):
                break
            d = s if power else d + (2.0 / (k + 2)) * (s - d)
        per.append(top)
    return GeneralizedResult(float(best), best_d, n, tuple(per))

"""Trace, spectral density and effective dimension of a symmetric operator.

* :func:`hutchinson_trace`: :math:`\\mathrm{tr}(A)` by Hutchinson's estimator
  :math:`\\tfrac1m\\sum_j z_j^\\top A z_j` with Rademacher :math:`z_j` (Hutchinson 1990), or by
  Hutch++ (Meyer, Musco, Musco & Woodruff 2021), which first deflates the dominant range of
  :math:`A`: with :math:`Q = \\mathrm{orth}(A S)`,
  :math:`\\mathrm{tr}(A) = \\mathrm{tr}(Q^\\top A Q) + \\mathrm{tr}((I-QQ^\\top)A(I-QQ^\\top))`,
  the second term estimated by Hutchinson.
* :func:`slq_density`: stochastic Lanczos quadrature (Golub & Meurant; Ubaru, Chen & Saad 2017;
  Ghorbani, Krishnan & Xiao 2019): the spectral density
  :math:`\\phi(t) = \\tfrac1d\\sum_i \\delta(t-\\lambda_i)` approximated by
  :math:`\\sum_j w_j \\delta(t - t_j)` from ``n_steps`` Lanczos steps per random start vector.
* :func:`effective_dimension`: :math:`\\sum_i \\lambda_i/(\\lambda_i+\\alpha)` (MacKay 1992;
  Moody 1992; Wang & Roberts' SANE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .eigen import SymmetricOperator, random_matrix

_BLOCK = 16  # random vectors pushed through one matmat


@dataclass(frozen=True)
class TraceResult:
    estimate: float  # estimate of tr(A)
    stderr: float  # standard error of the stochastic part (0 when it is exact)
    n_products: int  # operator-vector products used


def _hutchinson(op: SymmetricOperator, budget: int, generator: torch.Generator | None,
                rel_se: float | None, Q: Tensor | None, offset: float) -> tuple[float, float, int]:
    """Mean and standard error of ``z^T P A P z`` (``P = I - QQ^T``) over Rademacher ``z``,
    drawing blocks until ``budget`` products or relative stderr of ``offset + mean``."""
    samples: list[Tensor] = []
    used = 0
    while used < budget:
        Z = random_matrix(op.dim, min(_BLOCK, budget - used), generator, op.device, op.dtype,
                          rademacher=True)
        if Q is not None:
            Z = Z - Q @ (Q.T @ Z)
        samples.append((Z * op.matmat(Z)).sum(0))
        used += Z.shape[1]
        s = torch.cat(samples)
        if rel_se is not None and len(s) >= 8:
            se = float(s.std() / math.sqrt(len(s)))
            if se <= rel_se * abs(offset + float(s.mean())):
                break
    if not samples:
        return 0.0, 0.0, 0
    s = torch.cat(samples)
    se = float(s.std() / math.sqrt(len(s))) if len(s) > 1 else math.inf
    return float(s.mean()), se, used


def hutchinson_trace(
    op: SymmetricOperator,
    n_samples: int = 99,
    *,
    method: str = "hutch++",
    generator: torch.Generator | None = None,
    rel_se: float | None = None,
) -> TraceResult:
    """Stochastic estimate of :math:`\\mathrm{tr}(A)`.

    Args:
        op: symmetric operator.
        n_samples: budget of operator-vector products.  ``"hutchinson"``: that many Rademacher
            probes.  ``"hutch++"``: ``s = n_samples // 3`` sketch columns (``s`` products for
            :math:`AS`, ``s`` for :math:`AQ`), the rest Hutchinson probes of the deflated
            operator.
        method: ``"hutch++"`` or ``"hutchinson"``.
        generator: source of the random probes.
        rel_se: if given, stop drawing Hutchinson probes (after at least 8) once
            ``stderr <= rel_se * |estimate|``.

    Returns:
        :class:`TraceResult`; ``stderr`` is the sample standard error of the Hutchinson part
        (conditional on the sketch for Hutch++, whose deflated part has much smaller variance).
        Cost: at most ``n_samples`` HVPs.
    """
    if method not in ("hutch++", "hutchinson"):
        raise ValueError(f"method must be 'hutch++' or 'hutchinson', not {method!r}")
    if n_samples < (3 if method == "hutch++" else 2):
        raise ValueError(f"n_samples={n_samples} is too small for {method}")
    start = op.n_products
    if method == "hutchinson":
        mean, se, _ = _hutchinson(op, n_samples, generator, rel_se, None, 0.0)
        return TraceResult(mean, se, op.n_products - start)
    s = min(n_samples // 3, op.dim)
    S = random_matrix(op.dim, s, generator, op.device, op.dtype, rademacher=True)
    Q, _ = torch.linalg.qr(op.matmat(S))
    exact = float((Q * op.matmat(Q)).sum())
    if s == op.dim:  # the sketch spans everything: tr(Q^T A Q) is the trace
        return TraceResult(exact, 0.0, op.n_products - start)
    budget = n_samples - 2 * s
    mean, se, _ = _hutchinson(op, budget, generator, rel_se, Q, exact)
    return TraceResult(exact + mean, se, op.n_products - start)


def lanczos(op: SymmetricOperator, v0: Tensor, n_steps: int) -> tuple[Tensor, Tensor]:
    """``n_steps`` Lanczos steps from ``v0`` with full reorthogonalization.

    Returns the tridiagonal's diagonal ``alpha`` and off-diagonal ``beta`` (early stop on an
    invariant subspace).  Cost: ``len(alpha)`` HVPs.
    """
    n_steps = min(n_steps, op.dim)
    Vs = [v0 / v0.norm()]
    alpha: list[Tensor] = []
    beta: list[Tensor] = []
    for j in range(n_steps):
        w = op.matmat(Vs[j][:, None])[:, 0]
        alpha.append(Vs[j] @ w)
        B = torch.stack(Vs, 1)
        for _ in range(2):
            w = w - B @ (B.T @ w)
        if j == n_steps - 1:
            break
        bj = w.norm()
        if bj <= 1e3 * torch.finfo(w.dtype).eps * alpha[0].abs().clamp_min(1.0):
            break
        beta.append(bj)
        Vs.append(w / bj)
    a = torch.stack(alpha)
    return a, torch.stack(beta) if beta else a.new_zeros(0)


def slq_density(
    op: SymmetricOperator,
    n_vectors: int,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Stochastic Lanczos quadrature of the spectral density of ``op``.

    For each of ``n_vectors`` normalized Rademacher vectors ``v``, ``n_steps`` Lanczos steps
    give a tridiagonal :math:`T = U\\,\\mathrm{diag}(t)\\,U^\\top`; the Gauss quadrature nodes are
    ``t`` and the weights :math:`U_{1j}^2`, exact for :math:`v^\\top p(A) v` with ``p`` of degree
    :math:`\\le 2\\,n_{steps}-1`.  Weights are divided by ``n_vectors`` so they sum to 1, and
    :math:`\\tfrac1d\\mathrm{tr} f(A) \\approx \\sum_j w_j f(t_j)`.

    Returns:
        ``(nodes, weights)``, 1-D tensors of equal length (at most ``n_vectors * n_steps``).
        Cost: ``n_vectors * n_steps`` HVPs.
    """
    if n_vectors < 1 or n_steps < 1:
        raise ValueError("n_vectors and n_steps must be positive")
    nodes, weights = [], []
    Z = random_matrix(op.dim, n_vectors, generator, op.device, op.dtype, rademacher=True)
    for i in range(n_vectors):
        a, b = lanczos(op, Z[:, i], n_steps)
        T = torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)
        t, U = torch.linalg.eigh(T)
        nodes.append(t)
        weights.append(U[0] ** 2 / n_vectors)
    return torch.cat(nodes), torch.cat(weights)


def effective_dimension(eigenvalues: Tensor, alpha: float) -> float:
    """:math:`\\sum_i \\lambda_i / (\\lambda_i + \\alpha)` over the given eigenvalues, negatives
    clipped at 0 (MacKay 1992; Moody 1992; Wang & Roberts' SANE).  No product."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64).clamp_min(0.0)
    return float((lam / (lam + alpha)).sum())


def per_example_ntk_trace(model: torch.nn.Module, x: Tensor, *, memory_mb: int = 8) -> float:
    r"""The empirical NTK's trace per example, :math:`\frac1n\sum_i\lVert J_i\rVert_F^2`
    with :math:`J_i = \partial f(x_i)/\partial\theta` over the trainable parameters (all
    outputs), exactly: per-example Jacobians by ``vmap(jacrev)`` in chunks of at most
    ``memory_mb`` MiB.  Evaluated in training mode with dropout off, like the loss operators;
    a model whose forward couples the examples (BatchNorm) has no per-example Jacobian."""
    from torch.func import functional_call, jacrev, vmap

    from .operators import training_mode

    named = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    fixed = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    fixed.update({k: b.detach() for k, b in model.named_buffers()})
    n_params = sum(p.numel() for p in named.values())

    def f(params: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, {**params, **fixed}, (xi[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))
    total = 0.0
    with training_mode(model), torch.no_grad():
        n_out = f(named, x[0]).numel()
        per_example = n_out * n_params * x.element_size()
        chunk = max(1, (memory_mb << 20) // max(1, per_example))
        for i in range(0, len(x), chunk):
            J = jac(named, x[i:i + chunk])
            total += float(sum(j.double().pow(2).sum() for j in J.values()))
    return total / len(x)

"""Top eigenpairs of a symmetric operator: sharpness :math:`\\lambda_{\\max}(H)`.

:func:`top_eigenpairs` finds the ``k`` *algebraically* largest eigenvalues of a symmetric
operator (anything with ``dim``, ``device``, ``dtype`` and ``matmat``) by a block
Krylov--Davidson iteration with Rayleigh--Ritz and thick restart, written in torch and run
entirely on the operator's device:

1. keep an orthonormal basis :math:`V` (and :math:`AV`, so no product is ever repeated);
2. Rayleigh--Ritz: :math:`T = V^\\top A V = Y \\Theta Y^\\top`, Ritz pairs
   :math:`(\\theta_i, x_i = V y_i)` sorted by decreasing :math:`\\theta_i` (algebraic order, so
   a large negative eigenvalue is never mistaken for the top one);
3. stop when every one of the top ``k`` pairs has
   :math:`\\|A x_i - \\theta_i x_i\\| \\le \\mathrm{tol}\\,|\\theta_i|`, computed exactly from
   the stored :math:`AV`;
4. otherwise expand :math:`V` with the residuals of the unconverged pairs (orthogonalized
   against :math:`V`, twice where needed) and apply :math:`A` to that block in one batched
   ``matmat``;
5. when :math:`V` reaches ``max_basis`` columns, restart from the leading Ritz vectors
   (their images :math:`AVY` are free).

Without a preconditioner the residual of a Ritz vector lies in the next Krylov space, so this
is mathematically block Lanczos with full reorthogonalization and thick restart (Wu & Simon
2000; Stathopoulos, Saad & Wu 1998, the Davidson view), as sample-efficient as Lanczos, but
simpler and numerically robust because :math:`AV` is stored rather than recurred.  A warm start
``init`` (e.g. last step's eigenvector) is the initial basis: if it is still accurate to
``tol`` the solver stops after ``k`` products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class SymmetricOperator(Protocol):
    dim: int
    device: torch.device
    dtype: torch.dtype
    n_products: int

    def matmat(self, V: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class EigResult:
    eigenvalues: Tensor  # [k], descending
    eigenvectors: Tensor  # [dim, k], orthonormal columns
    residuals: Tensor  # [k], ||A v - lambda v|| / |lambda|
    n_products: int  # operator-vector products used by this call
    converged: bool  # every residual <= tol
    iterations: int  # Rayleigh-Ritz steps


def random_matrix(dim: int, cols: int, generator: torch.Generator | None,
                  device: torch.device, dtype: torch.dtype, *, rademacher: bool = False
                  ) -> Tensor:
    """``[dim, cols]`` standard normal (or Rademacher ±1) entries drawn from ``generator``
    on the generator's device, then moved to ``device``."""
    gdev = generator.device if generator is not None else device
    if rademacher:
        M = torch.randint(0, 2, (dim, cols), generator=generator, device=gdev).to(dtype) * 2 - 1
    else:
        M = torch.randn(dim, cols, generator=generator, device=gdev, dtype=dtype)
    return M.to(device)


def _mm(A: Tensor, B: Tensor) -> Tensor:
    """``A @ B``, as a matrix-vector product when ``B`` has one column (BLAS GEMM packs a
    tall ``A`` even for one or two columns, which costs more than the product itself)."""
    if B.shape[1] == 1:
        return torch.mv(A, B[:, 0])[:, None]
    return A @ B


def _orthonormalize(W: Tensor, V: Tensor | None) -> Tensor:
    """Columns of ``W`` made orthonormal and orthogonal to the orthonormal ``V``; columns that
    are (numerically) in the span already are dropped."""
    thresh = 1e3 * torch.finfo(W.dtype).eps
    W = W / W.norm(dim=0).clamp_min(torch.finfo(W.dtype).tiny)
    if V is not None and V.shape[1]:
        # classical Gram-Schmidt; a second pass only where the first removed more than half
        # of the norm (Daniel, Gragg, Kaufman & Stewart 1976: "twice is enough")
        W = W - _mm(V, _mm(V.T, W))
        if bool((W.norm(dim=0) < 0.7).any()):
            W = W - _mm(V, _mm(V.T, W))
    if W.shape[1] == 1:
        norm = W.norm()
        return W / norm if norm > thresh else W[:, :0]
    Q, R = torch.linalg.qr(W)
    Q = Q[:, R.diagonal().abs() > thresh]
    if V is not None and V.shape[1] and Q.shape[1]:
        Q = Q - _mm(V, _mm(V.T, Q))
        Q = Q / Q.norm(dim=0)
    return Q


def _ritz(V: Tensor, AV: Tensor, theta: Tensor, Y: Tensor, lo: int, hi: int
          ) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz vectors ``lo:hi``, their residuals ``A x - theta x`` and relative residual norms
    (relative to ``|theta|``, floored at machine precision times the largest ``|theta|``)."""
    floor = torch.finfo(V.dtype).tiny + theta.abs().max() * torch.finfo(V.dtype).eps
    X = _mm(V, Y[:, lo:hi].contiguous())
    R = _mm(AV, Y[:, lo:hi].contiguous()) - X * theta[lo:hi]
    return X, R, R.norm(dim=0) / torch.maximum(theta[lo:hi].abs(), floor)


class _Basis:
    """Orthonormal basis ``V`` and its image ``AV``, stored row-wise (``V.T`` contiguous, so
    products with ``V`` and ``V.T`` stream only the columns in use) in buffers of up to ``cap``
    columns (grown geometrically on accelerators)."""

    def __init__(self, V: Tensor, AV: Tensor, cap: int):
        self.cap, self.m = cap, V.shape[1]
        # on the CPU, reserve everything at once: untouched pages cost nothing, while every
        # reallocation page-faults its fresh memory again (a large share of the solver's time)
        size = cap if V.device.type == "cpu" else min(cap, max(8, 2 * self.m))
        self.Vr = V.new_empty(size, V.shape[0])
        self.AVr = V.new_empty(size, V.shape[0])
        self.Vr[:self.m], self.AVr[:self.m] = V.T, AV.T

    @property
    def V(self) -> Tensor:
        return self.Vr[:self.m].T

    @property
    def AV(self) -> Tensor:
        return self.AVr[:self.m].T

    def append(self, W: Tensor, AW: Tensor) -> None:
        need = self.m + W.shape[1]
        if need > self.Vr.shape[0]:
            size = min(self.cap, max(need, 2 * self.Vr.shape[0]))
            grow = size - self.Vr.shape[0]
            self.Vr = torch.cat([self.Vr, self.Vr.new_empty(grow, self.Vr.shape[1])])
            self.AVr = torch.cat([self.AVr, self.AVr.new_empty(grow, self.AVr.shape[1])])
        self.Vr[self.m:need], self.AVr[self.m:need] = W.T, AW.T
        self.m = need

    def rotate(self, Y: Tensor) -> None:
        """Replace ``V`` by ``V Y`` (and ``AV`` by ``AV Y``), ``Y`` with fewer columns."""
        V, AV = _mm(self.V, Y), _mm(self.AV, Y)
        self.m = Y.shape[1]
        self.Vr[:self.m], self.AVr[:self.m] = V.T, AV.T


def top_eigenpairs(
    op: SymmetricOperator,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_products: int = 1000,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
) -> EigResult:
    """The ``k`` algebraically largest eigenpairs of the symmetric operator ``op``.

    Args:
        op: symmetric operator (:class:`~eosbench.curvature.operators.LossOperator`, ...).
        k: number of eigenpairs.
        tol: stop when every relative residual :math:`\\|Av-\\lambda v\\|/|\\lambda|\\le` tol.
        max_products: budget of operator-vector products for this call.
        init: warm start, ``[dim]`` or ``[dim, k']`` (e.g. the previous eigenvectors); padded
            with random columns when ``k' < k``.
        generator: source of the random starting columns.
        block_size: at most this many new directions per iteration (default ``k``); larger
            blocks use more products but fewer, better-vectorized passes.
        max_basis: basis size that triggers a thick restart (default ``max(40, 3 b + k)``
            capped at ``dim``); memory is ``2 * max_basis * dim`` numbers.

    Returns:
        :class:`EigResult`.  Cost: ``n_products`` HVPs -- for ``k=1``, ``tol=1e-3`` on fc-tanh
        / digits 17 from a cold start and 2 warm-started from the previous GD step's vector
        (``benchmarks/README.md``); a network at the edge of stability, whose top eigenvector
        turns at every step, gains less from the warm start.
    """
    dim = op.dim
    if not 1 <= k <= dim:
        raise ValueError(f"k must be in [1, {dim}], got {k}")
    b = min(block_size or k, dim)
    m_max = min(dim, max_basis or max(40, 3 * b + k))
    if m_max < k + 1 and m_max < dim:
        raise ValueError(f"max_basis={m_max} must exceed k={k}")
    dev, dt = op.device, op.dtype
    start = op.n_products

    cols = [] if init is None else [init.reshape(dim, -1).to(device=dev, dtype=dt)]
    n_init = cols[0].shape[1] if cols else 0
    if n_init < k:
        cols.append(random_matrix(dim, k - n_init, generator, dev, dt))
    V = _orthonormalize(torch.cat(cols, dim=1), None)
    while V.shape[1] < k:  # degenerate init: fill with random directions
        V = torch.cat([V, _orthonormalize(random_matrix(dim, k, generator, dev, dt), V)], 1)
    V = V[:, :max(k, min(V.shape[1], m_max))]
    basis = _Basis(V, op.matmat(V), m_max)
    T = V.T @ basis.AV
    iterations = 0
    while True:
        iterations += 1
        V, AV = basis.V, basis.AV
        theta, Y = torch.linalg.eigh(0.5 * (T + T.T))
        theta, Y = theta.flip(0), Y.flip(1)
        X, R, rel = _ritz(V, AV, theta, Y, 0, k)
        done = rel <= tol
        used = op.n_products - start
        if bool(done.all()) or used >= max_products or V.shape[1] >= dim:
            break
        # new directions: residuals of the unconverged top-k pairs, then of the next pairs
        W = R[:, ~done]
        extra = min(b - W.shape[1], V.shape[1] - k)
        if extra > 0:
            W = torch.cat([W, _ritz(V, AV, theta, Y, k, k + extra)[1]], 1)
        W = W[:, :max_products - used]
        if V.shape[1] + W.shape[1] > m_max:
            if m_max >= dim:  # the basis can only grow to the whole space: no restart
                W = W[:, :dim - V.shape[1]]
            else:  # thick restart from the leading Ritz vectors (their images are free)
                keep = max(k, min(m_max // 2, m_max - W.shape[1]))
                W = W[:, :m_max - keep]
                basis.rotate(Y[:, :keep])
                T = torch.diag(theta[:keep])
                V = basis.V
        W = _orthonormalize(W, V)
        if W.shape[1] == 0:  # Krylov space exhausted or stagnation: add a random direction
            W = _orthonormalize(random_matrix(dim, 1, generator, dev, dt), V)
            if W.shape[1] == 0:
                break
        AW = op.matmat(W)
        VtAW = _mm(V.T, AW)
        T = torch.cat([torch.cat([T, VtAW], 1), torch.cat([VtAW.T, W.T @ AW], 1)], 0)
        basis.append(W, AW)
    return EigResult(
        eigenvalues=theta[:k].clone(),
        eigenvectors=X[:, :k].clone(),
        residuals=rel[:k].clone(),
        n_products=op.n_products - start,
        converged=bool(done.all()),
        iterations=iterations,
    )

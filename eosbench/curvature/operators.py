"""Curvature matrices of a training loss as matrix-free symmetric linear operators.

:class:`LossOperator` represents, over the flat vector :math:`\\theta \\in \\mathbb{R}^d` of the
trainable parameters (those with ``requires_grad=True``), either

* the Hessian of the mean loss over a data set,
  :math:`H = \\nabla^2_\\theta \\tfrac1n \\sum_{i=1}^n \\ell(f(x_i; \\theta), y_i)`, or
* the generalized Gauss-Newton matrix :math:`G = \\tfrac1n \\sum_i J_i^\\top (\\nabla^2_f \\ell) J_i`
  (Schraudolph 2002; Martens 2020), :math:`J_i = \\partial f(x_i;\\theta)/\\partial\\theta`,

optionally preconditioned by a positive diagonal :math:`P` as
:math:`P^{-1/2} H P^{-1/2}`, which is similar to :math:`P^{-1} H` and so has the same
eigenvalues: Adam's *preconditioned sharpness* (Cohen et al. 2022, "Adaptive gradient methods at
the edge of stability").

Products are computed with :mod:`torch.func` over the flat parameter vector (a
``functional_call`` of the model).  The data set is cut into chunks of ``physical_batch_size``
examples and the chunk products are summed with weights :math:`|chunk|/n`, so the result is
exactly the curvature of the mean loss over all ``n`` examples, whatever the chunk size (for
models whose output of one example does not depend on the others, see BatchNorm below).

* Several chunks: forward-over-reverse, :math:`Hv = \\mathrm{jvp}(\nabla L, \theta; v)`, for
  each chunk at every call (keeping all chunks' graphs would hold the activations of the whole
  data set); one product costs about two gradient evaluations.
* One chunk (``physical_batch_size`` None or :math:`\\ge n`): the gradient's reverse pass is
  recorded once, at the first product, with ``torch.func.vjp(grad(L))``, and every later
  product is one pullback through it, :math:`Hv = (\\partial\nabla L/\\partial\theta)^\top v`
  (reverse-over-reverse; the same matrix since :math:`H` is symmetric).  This keeps one
  chunk's graph alive for the operator's lifetime -- the memory of one training step of that
  physical batch size -- and halves the cost of a product (measured in
  ``benchmarks/bench_sharpness.py``).
* GGN: :math:`J^\top (H_\\ell (J v))` by ``jvp`` of the model, ``jvp`` of the loss's gradient
  in the outputs, and ``vjp`` of the model, per chunk and call.

A block of ``k`` vectors is pushed through ``torch.func.vmap`` in one pass per chunk, so the
primal computation is shared by the block (falling back to a loop over the vectors for models
that ``vmap`` cannot handle); it counts as ``k`` products in :attr:`LossOperator.n_products`.

Measuring never changes the model: the parameters are read once into a detached flat copy, and
no buffer of the model is written.

**Mode, BatchNorm and dropout.**  The operator is the curvature of the *training-mode* loss, the
loss whose gradient the optimizer follows: during every product the model runs with
``train()`` semantics, except that dropout layers are switched off (the Hessian of a loss with
freshly drawn masks at every product is not one operator).  BatchNorm layers therefore
normalize with the statistics of the physical batch they see, exactly as in a training step
whose physical batches are the chunks here, and the Hessian includes the dependence of those
statistics on the parameters.  Their running statistics are neither read nor updated (they are
replaced by ``None`` inside ``functional_call``), so ``running_mean``, ``running_var`` and
``num_batches_tracked`` of the model are left untouched.  The module flags ``training`` are
restored after each call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jvp, vjp, vmap

LossFn = Callable[[Tensor, Tensor], Tensor]

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)


@contextlib.contextmanager
def training_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in training mode with dropout off; restore every module's flag after."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        for m in model.modules():
            m.training = not isinstance(m, _DROPOUT)
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _norm_stat_buffers(model: nn.Module) -> set[str]:
    """Names of the running-statistics buffers of every BatchNorm-like layer."""
    names = set()
    for prefix, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                names.add(f"{prefix}.{b}" if prefix else b)
    return names


class LossOperator:
    """Symmetric operator ``v -> C v`` for the curvature ``C`` of the mean loss over ``(x, y)``.

    Args:
        model: the network; its trainable parameters define the coordinates.
        loss_fn: ``loss_fn(outputs, targets)`` returning the MEAN loss over the examples given.
        x, y: the whole data set, already on the model's device.
        physical_batch_size: examples per chunk (``None``: the whole set in one chunk).
        kind: ``"hessian"`` or ``"ggn"`` (generalized Gauss-Newton :math:`J^\\top H_\\ell J`).
        preconditioner: per-parameter positive tensors :math:`P` shaped like the trainable
            parameters; the operator becomes :math:`P^{-1/2} C P^{-1/2}`.
        dtype: compute in this floating dtype (a cast copy of parameters, buffers and data).

    Cost: :meth:`matvec` is one Hessian-vector product (HVP), :meth:`matmat` on ``k`` columns is
    ``k`` HVPs done as one vectorized pass per chunk, :meth:`gradient` is about half an HVP.
    With a single chunk the first product also records the gradient's graph (one extra
    gradient evaluation), which the operator keeps until it is deleted.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        x: Tensor,
        y: Tensor,
        *,
        physical_batch_size: int | None = None,
        kind: str = "hessian",
        preconditioner: list[Tensor] | None = None,
        dtype: torch.dtype | None = None,
    ):
        if kind not in ("hessian", "ggn"):
            raise ValueError(f"kind must be 'hessian' or 'ggn', not {kind!r}")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must hold the same positive number of examples, "
                             f"got {len(x)} and {len(y)}")
        if physical_batch_size is not None and physical_batch_size < 1:
            raise ValueError(f"physical_batch_size must be positive, got {physical_batch_size}")
        if getattr(model, "second_order", True) is False:
            raise ValueError(f"{type(model).__name__} declares second_order = False: its "
                             "gradient is not one torch.func can differentiate")  # fmt: skip
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameter")
        ref = named[0][1]
        self.dtype: torch.dtype = dtype or ref.dtype
        self.device: torch.device = ref.device
        self.kind = kind
        self.model = model
        self.loss_fn = loss_fn
        self.physical_batch_size = physical_batch_size
        self.n_products = 0
        self.n_third = 0  # third-order products (curvature_gradients), one per pair
        self._names = [k for k, _ in named]
        self._shapes = [p.shape for _, p in named]
        self._numels = [p.numel() for _, p in named]
        self.dim: int = sum(self._numels)
        with torch.no_grad():
            self._theta = torch.cat([p.detach().reshape(-1) for _, p in named]).to(self.dtype)
        # Everything that is not a trainable parameter is held fixed: frozen parameters and
        # buffers are copied (cast to dtype if floating); BatchNorm running statistics are None.
        stats = _norm_stat_buffers(model)
        fixed = [(k, p) for k, p in model.named_parameters() if not p.requires_grad]
        fixed += list(model.named_buffers())
        self._fixed: dict[str, Tensor | None] = {}
        for k, t in fixed:
            if k in stats:
                self._fixed[k] = None
            else:
                t = t.detach()
                self._fixed[k] = t.to(self.dtype).clone() if t.is_floating_point() else t.clone()
        self._x, self._y = self._cast(x), self._cast(y)
        self._pinv_sqrt: Tensor | None = None
        if preconditioner is not None:
            if [tuple(p.shape) for p in preconditioner] != [tuple(s) for s in self._shapes]:
                raise ValueError("preconditioner must hold one tensor per trainable parameter, "
                                 "shaped like it")
            flat = torch.cat([p.detach().reshape(-1) for p in preconditioner]).to(
                device=self.device, dtype=self.dtype)
            if not bool((flat > 0).all()):
                raise ValueError("preconditioner entries must be positive")
            self._pinv_sqrt = flat.rsqrt()
        self._vmap_ok = True
        self._grad_fn = grad(self._loss)
        self._recorded: Callable | None = None  # vjp of the gradient, when one chunk
        self._recorded_grad: Tensor | None = None  # the gradient that recording computed

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(self.dtype) if t.is_floating_point() else t

    # -- the pure functions of theta ----------------------------------------------------------

    def _unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        chunks = torch.split(theta, self._numels)
        return {k: c.view(s) for k, c, s in zip(self._names, chunks, self._shapes, strict=True)}

    def _forward(self, theta: Tensor, xb: Tensor) -> Tensor:
        return functional_call(self.model, {**self._unflatten(theta), **self._fixed}, (xb,))

    def _loss(self, theta: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return self.loss_fn(self._forward(theta, xb), yb)

    def _hvp(self, v: Tensor, xb: Tensor, yb: Tensor, theta: Tensor | None = None) -> Tensor:
        """:math:`H v` on one chunk at ``theta`` (default: the operator's parameters),
        forward-over-reverse."""
        at = self._theta if theta is None else theta
        return jvp(lambda t: self._grad_fn(t, xb, yb), (at,), (v,))[1]

    def _ggnvp(self, v: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        def f(t: Tensor) -> Tensor:
            return self._forward(t, xb)

        out, jv = jvp(f, (self._theta,), (v,))
        hjv = jvp(grad(lambda o: self.loss_fn(o, yb)), (out,), (jv,))[1]
        return vjp(f, self._theta)[1](hjv)[0]

    # -- public interface ---------------------------------------------------------------------

    def chunks(self) -> Iterator[tuple[Tensor, Tensor, float]]:
        """Yield ``(x_chunk, y_chunk, weight)`` with ``weight = len(chunk) / n``."""
        n = len(self._x)
        size = self.physical_batch_size or n
        for i in range(0, n, size):
            xb, yb = self._x[i:i + size], self._y[i:i + size]
            yield xb, yb, len(xb) / n

    def matmat(self, V: Tensor) -> Tensor:
        """``C V`` for ``V`` of shape ``[dim, k]``; cost ``k`` HVPs (one vmapped pass per chunk)."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a [{self.dim}, k] matrix, got shape {tuple(V.shape)}")
        W = V.to(device=self.device, dtype=self.dtype)
        if self._pinv_sqrt is not None:
            W = W * self._pinv_sqrt[:, None]
        product = self._hvp if self.kind == "hessian" else self._ggnvp
        with training_mode(self.model), torch.no_grad():
            if self.kind == "hessian" and self._single_chunk():
                vjp_fn = self._record()
                out = self._block(lambda v, xb, yb: vjp_fn(v)[0], W, self._x, self._y)
            else:
                out = torch.zeros_like(W)
                for xb, yb, w in self.chunks():
                    out.add_(self._block(product, W, xb, yb), alpha=w)
        if self._pinv_sqrt is not None:
            out = out * self._pinv_sqrt[:, None]
        self.n_products += V.shape[1]
        return out

    def _record(self) -> Callable:
        """The pullback through the gradient's recorded reverse pass (one chunk), recording
        it at the first call; the gradient it computed is kept (:meth:`recorded_gradient`)."""
        if self._recorded is None:
            xs, ys = self._x, self._y
            with training_mode(self.model), torch.no_grad():
                self._recorded_grad, self._recorded = vjp(
                    lambda t: self._grad_fn(t, xs, ys), self._theta)
        return self._recorded

    def recorded_gradient(self) -> Tensor | None:
        """The full-batch gradient that recording the products' graph computes (one chunk,
        Hessian: recorded now if not yet, the cost the first product pays anyway); ``None``
        where products are not recorded (several chunks, GGN).  Not preconditioned."""
        if self.kind != "hessian" or not self._single_chunk():
            return None
        self._record()
        return self._recorded_grad

    def _single_chunk(self) -> bool:
        return self.physical_batch_size is None or self.physical_batch_size >= len(self._x)

    def _block(self, product: Callable, W: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        if self._vmap_ok and W.shape[1] > 1:
            try:
                return vmap(product, in_dims=(1, None, None), out_dims=1)(W, xb, yb)
            except RuntimeError:  # e.g. a module with an in-place update vmap cannot batch
                self._vmap_ok = False
        return torch.stack([product(W[:, j], xb, yb) for j in range(W.shape[1])], dim=1)

    def matvec(self, v: Tensor) -> Tensor:
        """``C v`` for ``v`` of shape ``[dim]``; cost one HVP."""
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def gradient(self) -> Tensor:
        """Full-batch gradient :math:`\\nabla_\\theta \\tfrac1n\\sum_i \\ell_i` (never
        preconditioned), same chunks and training mode as the products; cost ~half an HVP."""
        return self.value_and_gradient()[1]

    def loss(self) -> float:
        """Mean training-mode loss over the data (same chunks); no product."""
        total = 0.0
        with training_mode(self.model), torch.no_grad():
            for xb, yb, w in self.chunks():
                total += w * float(self._loss(self._theta, xb, yb))
        return total

    def value_and_gradient(self) -> tuple[float, Tensor]:
        """The mean training-mode loss and its gradient (never preconditioned) in one pass
        per chunk; cost one gradient evaluation."""
        g = torch.zeros_like(self._theta)
        total = 0.0
        fn = grad_and_value(self._loss)
        with training_mode(self.model), torch.no_grad():
            for xb, yb, w in self.chunks():
                gb, lb = fn(self._theta, xb, yb)
                g.add_(gb, alpha=w)
                total += w * float(lb)
        return total, g

    def example_derivatives(self, v: Tensor) -> Tensor:
        r"""The directional derivative of every example's loss, :math:`d_i = \nabla_\theta
        \ell(f(x_i;\theta), y_i)^\top v`, shape ``[n]`` (their mean is :math:`\nabla L^\top
        v`).  One forward-mode pass per chunk (``torch.func.jvp`` of the per-example losses):
        about one gradient evaluation.  Each example's loss is ``loss_fn`` on that example
        alone, so a model whose outputs couple the examples of a batch (BatchNorm in training
        mode) is refused: its per-example gradients do not exist.  Hessian operators only, not
        preconditioned."""
        if self.kind != "hessian" or self._pinv_sqrt is not None:
            raise ValueError("example_derivatives needs the unpreconditioned Hessian operator")
        if any(isinstance(m, nn.modules.batchnorm._NormBase) for m in self.model.modules()):
            raise ValueError("example_derivatives: a model with BatchNorm has no per-example "
                             "gradients (the batch statistics couple the examples)")
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape [{self.dim}], got {tuple(v.shape)}")
        w = v.to(device=self.device, dtype=self.dtype)

        def one(o: Tensor, t: Tensor) -> Tensor:
            return self.loss_fn(o[None], t[None])

        parts = []
        with training_mode(self.model), torch.no_grad():
            for xb, yb, _ in self.chunks():
                def losses(theta: Tensor, xb=xb, yb=yb) -> Tensor:
                    return vmap(one)(self._forward(theta, xb), yb)

                parts.append(jvp(losses, (self._theta,), (w,))[1])
        return torch.cat(parts)

    def curvature_gradients(self, U: Tensor) -> Tensor:
        r"""Third-order products: ``D[i, j]`` :math:`= \nabla_\theta\,(u_i^\top H(\theta)
        u_j)` for the columns :math:`u_i` of ``U`` (``[dim, k]``) held fixed, shape
        ``[k, k, dim]`` and symmetric in ``(i, j)``.  For the top eigenvector ``u``
        (a simple eigenvalue), ``D[0, 0]`` is the gradient of the sharpness,
        :math:`\nabla S = D^3L(\theta)[u, u]` (Damian, Nichani & Lee 2023,
        arXiv:2209.15594v2).

        Each entry is the reverse-mode gradient of :math:`u_i^\top H u_j`, the Hessian-vector
        product taken as the operator's own forward-over-reverse ``jvp`` of the gradient:
        reverse-over-forward-over-reverse, one vmapped pass per chunk over the
        :math:`k(k+1)/2` pairs :math:`i \le j`.  Not forward-over-forward: PyTorch 2.13's
        ``layer_norm``, ``batch_norm`` and ``instance_norm`` have wrong forward-over-forward
        second derivatives and wrong third derivatives by that route and by
        reverse-over-reverse-over-reverse, while this one is right for all of them (tested
        against finite differences of dense Hessians; Cohen et al. 2025's central-flows code
        notes the same of LayerNorm's third derivatives).  Hessian only, not preconditioned.
        Cost: counted in :attr:`n_third` (one per pair); measured in gradient and HVP units in
        ``benchmarks/bench_flow.py``."""
        if self.kind != "hessian" or self._pinv_sqrt is not None:
            raise ValueError("curvature_gradients needs the unpreconditioned Hessian operator")
        from ..models.norms import fused_norms

        fused = fused_norms(self.model)
        if fused:
            raise ValueError(
                f"curvature_gradients: module {fused[0]!r} runs PyTorch's fused normalization "
                "kernel, whose third derivatives are wrong; use "
                "eosbench.models.norms.LayerNorm or a model without it")
        if U.ndim != 2 or U.shape[0] != self.dim:
            raise ValueError(f"expected a [{self.dim}, k] matrix, got shape {tuple(U.shape)}")
        W = U.to(device=self.device, dtype=self.dtype)
        k = W.shape[1]
        pairs = [(i, j) for i in range(k) for j in range(i, k)]
        A = W[:, [i for i, _ in pairs]].T.contiguous()
        B = W[:, [j for _, j in pairs]].T.contiguous()

        def mixed(theta: Tensor, a: Tensor, b: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
            return a @ self._hvp(b, xb, yb, theta)

        third = grad(mixed)
        flat = torch.zeros(len(pairs), self.dim, device=self.device, dtype=self.dtype)
        with training_mode(self.model), torch.no_grad():
            for xb, yb, w in self.chunks():
                if len(pairs) == 1:
                    part = third(self._theta, A[0], B[0], xb, yb)[None]
                else:
                    part = vmap(third, in_dims=(None, 0, 0, None, None))(
                        self._theta, A, B, xb, yb)
                flat.add_(part, alpha=w)
        D = torch.empty(k, k, self.dim, device=self.device, dtype=self.dtype)
        for n, (i, j) in enumerate(pairs):
            D[i, j] = flat[n]
            D[j, i] = flat[n]
        self.n_third += len(pairs)
        return D

    def at(self, theta: Tensor) -> LossOperator:
        """The same operator (model, data, kind, preconditioner, dtype) at the flat
        parameters ``theta`` instead of the model's; counters start at zero."""
        if theta.shape != self._theta.shape:
            raise ValueError(f"theta must have shape {tuple(self._theta.shape)}, "
                             f"got {tuple(theta.shape)}")
        other = object.__new__(LossOperator)
        other.__dict__.update(self.__dict__)
        other._theta = theta.detach().to(device=self.device, dtype=self.dtype)
        other.n_products = other.n_third = 0
        other._recorded = None
        return other

    @property
    def shapes(self) -> tuple[torch.Size, ...]:
        """The trainable tensors' shapes, in the order of the flat vectors."""
        return tuple(self._shapes)

    def params(self) -> Tensor:
        """The flat parameter vector the operator is evaluated at (a copy)."""
        return self._theta.clone()

    def restricted(self, x: Tensor, y: Tensor) -> LossOperator:
        """The same operator (model state, kind, preconditioner) on other data ``(x, y)``,
        sharing the parameter copy; its product counter starts at zero."""
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("x and y must hold the same positive number of examples")
        other = object.__new__(LossOperator)
        other.__dict__.update(self.__dict__)
        other._x, other._y = self._cast(x), self._cast(y)
        other.n_products = other.n_third = 0
        other._recorded = None
        return other

    def __repr__(self) -> str:
        pre = ", preconditioned" if self._pinv_sqrt is not None else ""
        return (f"LossOperator(kind={self.kind!r}, dim={self.dim}, n={len(self._x)}, "
                f"physical_batch_size={self.physical_batch_size}, dtype={self.dtype}{pre})")


class MatrixOperator:
    """An explicit symmetric matrix ``A`` behind the same interface as :class:`LossOperator`
    (``dim``, ``n_products``, ``device``, ``dtype``, ``matvec``, ``matmat``): the quadratic
    loss :math:`\\tfrac12\\theta^\\top A\\theta`, for tests and known-spectrum checks.
    Cost: ``matmat`` on ``k`` columns counts ``k`` products."""

    def __init__(self, A: Tensor):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
        scale = A.abs().max().clamp_min(torch.finfo(A.dtype).tiny)
        if not math.isclose(float((A - A.T).abs().max() / scale), 0.0, abs_tol=1e-6):
            raise ValueError("A must be symmetric")
        self.A = 0.5 * (A + A.T)
        self.dim: int = A.shape[0]
        self.device: torch.device = A.device
        self.dtype: torch.dtype = A.dtype
        self.n_products = 0

    def matmat(self, V: Tensor) -> Tensor:
        self.n_products += V.shape[1]
        return self.A @ V.to(self.dtype)

    def matvec(self, v: Tensor) -> Tensor:
        return self.matmat(v.reshape(-1, 1))[:, 0]

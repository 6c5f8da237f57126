r"""Deep equilibrium networks ``deq-<family>`` (the ``theory`` suite).

One equilibrium layer between a linear input injection and a linear head:
:math:`z^* = \tanh(W z^* + U x + b)`, solved by direct iteration (the deep net with tied
weights it equals, Agarwala & Schoenholz, "Deep equilibrium networks are sensitive to
initialization statistics", arXiv:2207.09432v1, eq. 1) from :math:`z = 0` until the relative
change is at most ``tol`` or ``max_iter`` iterations; the gradient by implicit
differentiation, :math:`\bar z = g + J^\top \bar z` (:math:`J = \partial f/\partial z` at
:math:`z^*`) solved by the same iteration (Bai, Kolter & Koltun 2019, arXiv:1909.01377).
``width`` :math:`n` (default 64).

Direct iteration converges where the map contracts, slowly near the contraction limit, and
it oscillates where :math:`J` has an eigenvalue below -1.  With ``max_iter`` 50 the theory
suite's trained DEQs on digits stopped at relative changes of 2e-4 to 3e-3 forward and up to
0.025 backward (tol 1e-4), so the default is 500: an iteration costs one ``n x n`` product
per example (0.7 ms for 1,000 examples at n = 64 on the development CPU).  Two solvers were
tried in its place and dropped: on oscillating maps (n = 40, symmetric W of scale 1 and 2)
Anderson acceleration (memory 5-20, mixing 1) stalled at relative changes of 0.04-0.17 after
300 iterations and Newton's method with step halving at 0.05-0.2 after 50 steps, and each
Newton step's batched ``n x n`` LU costs 0.17-0.34 s for 1,000 examples at n = 64, the price
of 250-500 direct iterations.  The backward iteration uses the layer's Jacobian in closed
form, :math:`J^\top v = W^\top (\mathrm{diag}(1 - z^{*2})\, v)`, one product per iteration as
in the forward.  :math:`U, b` and the head take PyTorch's default
``nn.Linear`` initialization; :math:`W` is drawn from ``family`` with entry variance
``w_scale``:math:`^2/n` (``model.options``):

* ``deq-gaussian``: i.i.d. :math:`N(0, \sigma^2/n)`;
* ``deq-orthogonal``: :math:`\sigma Q`, :math:`Q` Haar-orthogonal (QR of a Gaussian matrix,
  signs fixed by the diagonal of R);
* ``deq-symmetric``: :math:`(A + A^\top)/\sqrt2`, :math:`A` i.i.d. :math:`N(0, \sigma^2/n)`
  (off-diagonal variance :math:`\sigma^2/n`).

The paper's abstract (all that could be read offline) states that orthogonal or symmetric
initialization "allows for greater stability in training" over "a broader range of initial
weight scales" than Gaussian; the layer form, solver and experiment here are eosbench's.
The module keeps the last forward solve's ``iterations`` and ``residual`` in :attr:`DEQ.last`,
and the last backward (implicit-gradient) solve's in :attr:`DEQ.last_backward`.

The gradient is an autograd hook, first order only: a backward that builds a graph of its
own (``create_graph=True``, a Hessian-vector product by double backward) raises, and the
``torch.func`` transforms of :class:`eosbench.curvature.LossOperator` cannot see the hook, so
:attr:`DEQ.second_order` is False and the operator, and every curvature measurement in
preflight (:func:`eosbench.models.second_order`), refuse a DEQ.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import OverrideError
from ..task import ModelSpec
from .mlp import reject

FAMILIES = ("gaussian", "orthogonal", "symmetric")
OPTIONS = {"w_scale": 1.0, "tol": 1e-4, "max_iter": 500}


def init_matrix(family: str, n: int, scale: float) -> Tensor:
    """:math:`W` of ``family`` with entry variance ``scale``:math:`^2/n` (module docstring)."""
    a = torch.randn(n, n) * (scale / math.sqrt(n))
    if family == "gaussian":
        return a
    if family == "symmetric":
        return (a + a.T) / math.sqrt(2)
    if family == "orthogonal":
        q, r = torch.linalg.qr(torch.randn(n, n))
        return scale * q * torch.sign(torch.diagonal(r))
    raise ValueError(f"unknown DEQ family {family!r}")


def fixed_point(g, z0: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int, float]:
    """Iterate :math:`z \\leftarrow g(z)` from ``z0``; (z, iterations, last relative change)."""
    z, res = z0, math.inf
    for i in range(1, max_iter + 1):
        new = g(z)
        res = float((new - z).norm() / (new.norm() + 1e-30))
        z = new
        if res <= tol:
            return z, i, res
    return z, max_iter, res


class DEQ(nn.Module):
    second_order = False  # no Hessian: the implicit gradient is a first-order autograd hook

    def __init__(self, m: int, k: int, n: int, family: str, w_scale: float, tol: float,
                 max_iter: int):  # fmt: skip
        super().__init__()
        self.inject = nn.Linear(m, n)
        self.w = nn.Parameter(init_matrix(family, n, w_scale))
        self.head = nn.Linear(n, k)
        self.tol, self.max_iter = tol, max_iter
        self.last = {"iterations": 0, "residual": 0.0}
        self.last_backward = {"iterations": 0, "residual": 0.0}

    def layer(self, z: Tensor, u: Tensor) -> Tensor:
        return torch.tanh(z @ self.w.T + u)

    def forward(self, x: Tensor) -> Tensor:
        u = self.inject(x.flatten(1))
        with torch.no_grad():
            z, it, res = fixed_point(lambda z: self.layer(z, u), torch.zeros_like(u), self.tol,
                                     self.max_iter)  # fmt: skip
        self.last = {"iterations": it, "residual": res}
        if not torch.is_grad_enabled():
            return self.head(z)
        z = self.layer(z, u)  # one step on the graph: the parameters' part of the gradient
        d = 1 - z.detach() ** 2  # J = diag(d) W at the fixed point

        def implicit(grad: Tensor) -> Tensor:
            if torch.is_grad_enabled():  # a double backward: this hook has no derivative
                raise RuntimeError("deq: the implicit gradient is first order only; no "
                                   "Hessian-vector products through a DEQ")  # fmt: skip
            w = self.w.detach()
            v, it, res = fixed_point(lambda v: (d * v) @ w + grad, grad, self.tol,
                                     self.max_iter)  # fmt: skip
            self.last_backward = {"iterations": it, "residual": res}
            return v

        z.register_hook(implicit)
        return self.head(z)


def checked(o: dict) -> tuple[float, float, int]:
    """(w_scale, tol, max_iter) of the options ``o``; :class:`OverrideError` for a bad one."""

    def number(key: str, ok, what: str, kind=(int, float)):
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v) or not ok(v):
            raise OverrideError(f"model.options.{key}={v!r}: expected {what}")
        return v

    return (float(number("w_scale", lambda v: v >= 0, "a finite number >= 0")),
            float(number("tol", lambda v: v > 0, "a finite number > 0")),
            int(number("max_iter", lambda v: v >= 1, "a positive integer", int)))  # fmt: skip


def deq(family: str):
    def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        reject(spec, "depth", "batchnorm")
        o = {**OPTIONS, **dict(spec.options)}
        return DEQ(math.prod(input_shape), n_classes, spec.width or 64, family,
                   *checked(o))  # fmt: skip

    build.OPTIONS = OPTIONS
    build.SECOND_ORDER = DEQ.second_order
    build.__doc__ = f"``deq-{family}``: the equilibrium layer with a {family} W (module docstring)."
    return build


BUILDERS = {f"deq-{f}": deq(f) for f in FAMILIES}

"""Measurements: callbacks that return flat dicts of scalars for the step record.

A measurement is registered by name as a factory ``factory(**options)`` that
returns a callable ``m(ctx: Context) -> dict[str, float]``.  The runner calls it
every ``MeasurementSpec.every`` steps (and at the first and last step) on the
parameters *before* that step's update, and merges the dict into the step's
record; a key that clashes with another measurement's is an error.  The
callable may keep state between calls in ``ctx.cache`` (for example the
previous eigenvectors, to warm-start the eigensolver).

Cost of each measurement (Hessian-vector products, "HVPs") is recorded next to
its value as ``<name>_hvps``, and its wall time as ``<name>_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import UserError
from .registry import Registry
from .task import Task

Measurement = Callable[["Context"], dict[str, float]]
MEASUREMENTS: Registry[Callable[..., Measurement]] = Registry("measurement")


@dataclass
class Context:
    """What a measurement may look at; it must not change the model or optimizer."""

    task: Task
    step: int
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    x_train: Tensor
    y_train: Tensor
    optimizer: torch.optim.Optimizer
    physical_batch_size: int | None
    generator: torch.Generator  # for stochastic measurements; seeded per run
    cache: dict[str, Any] = field(default_factory=dict)


def _operator(ctx: Context, preconditioner=None, n_examples: int | None = None,
              kind: str = "hessian"):  # fmt: skip
    """The training-loss Hessian (``kind="ggn"``: its Gauss-Newton part), over the first
    ``n_examples`` training examples if given."""
    from .curvature import LossOperator

    if n_examples is not None and (
        isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1
    ):
        raise ValueError(f"n_examples={n_examples!r}: expected a positive integer or None")
    n = None if n_examples is None else min(n_examples, ctx.x_train.shape[0])
    return LossOperator(
        ctx.model,
        ctx.loss_fn,
        ctx.x_train[:n],
        ctx.y_train[:n],
        physical_batch_size=ctx.physical_batch_size,
        preconditioner=preconditioner,
        kind=kind,
    )


def _needs_hessian(task: Task, spec) -> None:
    """The check of a measurement that takes the loss Hessian (or the torch.func gradient)."""
    from .models import second_order

    if not second_order(task.model.name):
        raise ValueError(f"{spec.name} needs the loss Hessian, and model {task.model.name!r} "
                         "has none here (its gradient is a first-order implicit hook)")  # fmt: skip


def _needs_plain_gd(name: str, task: Task, spec) -> None:
    """The check of a measurement that follows GD's own iterates: the Hessian's, and plain
    constant-step full-batch GD (``sgd``, no momentum or weight decay)."""
    from .optim import departures

    _needs_hessian(task, spec)
    o = task.optimizer
    why = (f"optimizer {o.name!r} with batch_size={o.batch_size}"
           if o.name != "sgd" or o.batch_size is not None else ", ".join(departures(task)))
    if why:
        raise ValueError(f"{name} needs plain GD (it follows GD's own iterates); this task "
                         f"has {why}")


def _curvature(measure: Measurement) -> Measurement:
    measure.check = _needs_hessian
    return measure


def _solver_options(spare: int) -> None:
    """The check of the eigensolver option a measurement passes through (a bad one is
    refused when the task is built)."""
    if isinstance(spare, bool) or not isinstance(spare, int) or spare < 0:
        raise ValueError(f"spare={spare!r}: expected a non-negative integer")


def _top(ctx: Context, key: str, op, k: int, tol: float, max_products: int,
         spare: int = 0) -> dict[str, float]:  # fmt: skip
    """The top ``k`` eigenvalues of ``op`` to relative residual ``tol``, warm-started from the
    vectors this measurement kept last time (the top ``k`` and ``spare`` next Ritz
    vectors)."""
    from .curvature import top_eigenpairs

    t0 = time.perf_counter()
    res = top_eigenpairs(
        op,
        k=k,
        tol=tol,
        max_products=max_products,
        init=ctx.cache.get(key),
        generator=ctx.generator,
        spare=spare,
    )
    vectors = res.eigenvectors if res.spare is None else torch.cat([res.eigenvectors, res.spare], 1)
    ctx.cache[key] = vectors.detach()
    out = {
        key: float(res.eigenvalues[0]),
        f"{key}_residual": float(res.residuals.max()),
        f"{key}_hvps": float(res.n_products),
        f"{key}_seconds": time.perf_counter() - t0,
    }
    for i in range(1, k):
        out[f"{key}_eig{i + 1}"] = float(res.eigenvalues[i])
    return out


@MEASUREMENTS.register("sharpness")
def sharpness(
    k: int = 1, tol: float = 1e-3, max_products: int = 500, n_examples: int | None = None,
    split: bool = False, spare: int = 0,
) -> Measurement:
    r"""Top-``k`` eigenvalues of the full-batch training-loss Hessian :math:`\lambda_{\max}(H)`
    (of the loss over the first ``n_examples`` training examples, if given: a cheaper,
    fixed-subset estimate for large training sets).

    Warm-started from the previous measurement's eigenvectors and its ``spare`` next Ritz
    vectors; stops when every relative residual :math:`\lVert Hv-\lambda v\rVert/|\lambda|`
    is at most ``tol``, which bounds each value's error by ``tol`` (and in fact by about
    ``tol**2`` over the relative gap).  Not on the tighter residual-squared-over-gap bound:
    warm-started at the edge of stability, where the top eigenvalues swap places between
    measurements, it stopped on the second eigenvalue as the top one
    (``benchmarks/bench_edge.py``, :mod:`eosbench.curvature.eigen`).  ``spare=2`` saved
    14-25% of the k = 1 products on the MLPs at the edge and none on the CNN (same).  Cost:
    typically a few HVPs warm, tens cold; at most ``max_products``.

    ``split``: also the Hessian's two parts :math:`H = G + N` (Dauphin, Agarwala & Mobahi,
    arXiv:2401.10809v2: :math:`G = J^\top H_\ell J` the Gauss-Newton matrix, PSD for a
    convex loss, and :math:`N = \sum_i \partial_z\ell_i\,\nabla^2_\theta z_i` the
    "nonlinear modeling error", indefinite, which vanishes at interpolation under MSE):
    ``sharpness_gn`` :math:`= \lambda_{\max}(G)` (warm-started Lanczos on the GGN operator,
    same ``tol``), ``sharpness_nme`` :math:`= v^\top N v = \lambda_{\max}(H) - v^\top G v`
    along the top Hessian eigenvector :math:`v` (one GGN product) and ``sharpness_nme_share``
    :math:`= v^\top N v/\lambda_{\max}(H)`, the part of the sharpness the Gauss-Newton
    matrix does not account for; ``sharpness_gn_hvps`` counts the GGN products (each about
    one HVP).
    """
    if not isinstance(split, bool):
        raise ValueError(f"split={split!r}: expected true or false")
    _solver_options(spare)

    def measure(ctx: Context) -> dict[str, float]:
        out = _top(ctx, "sharpness", _operator(ctx, None, n_examples), k, tol, max_products,
                   spare)  # fmt: skip
        if split:
            out.update(_split(ctx, out["sharpness"], n_examples, tol, max_products, spare))
        return out

    return _curvature(measure)


def _split(ctx: Context, top: float, n_examples: int | None, tol: float,
           max_products: int, spare: int) -> dict[str, float]:  # fmt: skip
    """The Gauss-Newton and NME parts of the sharpness (:func:`sharpness` with ``split``)."""
    t0 = time.perf_counter()
    ggn = _operator(ctx, None, n_examples, kind="ggn")
    out = _top(ctx, "sharpness_gn", ggn, 1, tol, max_products, spare)
    v = ctx.cache["sharpness"][:, 0]
    nme = top - float(v @ ggn.matvec(v))
    out.update(sharpness_nme=nme, sharpness_nme_share=nme / top if top else math.nan,
               sharpness_gn_hvps=float(ggn.n_products),
               sharpness_gn_seconds=time.perf_counter() - t0)  # fmt: skip
    return out


@MEASUREMENTS.register("preconditioned_sharpness")
def preconditioned_sharpness(k: int = 1, tol: float = 1e-3, max_products: int = 500,
                             spare: int = 0) -> Measurement:  # fmt: skip
    r""":math:`\lambda_{\max}(P^{-1}H)` for an adaptive method's current diagonal
    preconditioner :math:`P` (Cohen et al. 2022), measured as the top eigenvalue of
    the symmetric :math:`P^{-1/2} H P^{-1/2}`.  Before the first step (no
    preconditioner yet) nothing is recorded.  Options and cost as :func:`sharpness`.
    """
    from .optim import preconditioner

    _solver_options(spare)

    def measure(ctx: Context) -> dict[str, float]:
        p = preconditioner(ctx.optimizer)
        if p is None:
            return {}
        return _top(ctx, "preconditioned_sharpness", _operator(ctx, p), k, tol, max_products,
                    spare)  # fmt: skip

    return _curvature(measure)


@MEASUREMENTS.register("generalized_sharpness")
def generalized_sharpness(norm: str = "linf", iters: int = 50, restarts: int = 5,
                          tol: float = 0.0, step: str = "auto") -> Measurement:  # fmt: skip
    r"""The generalized sharpness :math:`S_{\|\cdot\|} = \max_{\|d\|=1} d^\top H d` of the
    full-batch training loss in ``norm`` (``l2``, ``linf``, ``spectral`` or ``block``; Islamov
    et al., arXiv:2603.05002v1; :mod:`eosbench.curvature.generalized`), by Frank-Wolfe with
    ``restarts`` starts of ``iters`` steps (``step``: ``fw``, ``power`` or ``auto``), the first
    warm-started from the previous
    measurement's maximizer: ``sharpness_<norm>`` (a lower bound), the dual norm of the
    full-batch gradient ``sharpness_<norm>_dual_grad`` and their ratio
    ``sharpness_<norm>_normalized`` (the quantity of the normalized methods' threshold),
    ``_hvps`` and ``_seconds``.  Cost: at most ``restarts * (iters + 1)`` HVPs and one
    gradient."""
    from .curvature.generalized import check_options, flat_dual_norm
    from .curvature.generalized import generalized_sharpness as estimate

    check_options(norm, iters, restarts, tol, step)  # a bad option: refused when the task is built
    key = f"sharpness_{norm}"

    def measure(ctx: Context) -> dict[str, float]:
        t0 = time.perf_counter()
        op = _operator(ctx)
        res = estimate(op, op.shapes, norm, iters=iters, restarts=restarts, tol=tol,
                       init=ctx.cache.get(key), generator=ctx.generator, step=step)  # fmt: skip
        ctx.cache[key] = res.direction
        dual = flat_dual_norm(norm, op.gradient(), op.shapes)
        return {key: res.value, f"{key}_dual_grad": dual,
                f"{key}_normalized": res.value / dual if dual > 0 else math.nan,
                f"{key}_hvps": float(res.n_products),
                f"{key}_seconds": time.perf_counter() - t0}  # fmt: skip

    return _curvature(measure)


def _momentum_term(optimizer: torch.optim.Optimizer, model: nn.Module) -> Tensor | None:
    r"""The flat heavy-ball term :math:`\beta b_t` of a ``torch.optim.SGD`` at the current
    point, in the order of the model's trainable parameters (as in
    :class:`~eosbench.curvature.LossOperator`), so that its update direction on a batch ``B``
    is :math:`g_B + \beta b_t`.  ``None`` when no parameter has a momentum buffer yet (before
    the first step, or ``momentum=0``): the update direction is then the gradient.  A
    parameter without a buffer while others have one contributes zero.

    Raises ``ValueError`` for other optimizers and for SGD settings whose update direction is
    not :math:`g_B + \beta b_t` (Nesterov, dampening, weight decay, maximize).
    """
    if not isinstance(optimizer, torch.optim.SGD):
        raise ValueError(
            f"batch_sharpness(direction='update') needs torch.optim.SGD (heavy ball), "
            f"not {type(optimizer).__name__}"
        )
    beta: dict[Tensor, float] = {}
    for group in optimizer.param_groups:
        bad = [
            f"{k}={group.get(k)}"
            for k in ("nesterov", "dampening", "weight_decay", "maximize")
            if group.get(k)
        ]
        if bad:
            raise ValueError(
                f"batch_sharpness(direction='update') is defined for heavy-ball SGD without "
                f"Nesterov, dampening, weight decay or maximize (the update is then "
                f"g + momentum * buffer); got {', '.join(bad)}"
            )
        for q in group["params"]:
            beta[q] = float(group["momentum"])
    parts, found = [], False
    for name, q in model.named_parameters():
        if not q.requires_grad:
            continue
        if q not in beta:
            raise ValueError(f"trainable parameter {name!r} is not in the optimizer")
        buf = optimizer.state.get(q, {}).get("momentum_buffer") if beta[q] else None
        if buf is None:
            parts.append(torch.zeros(q.numel(), device=q.device, dtype=q.dtype))
        else:
            found = True
            parts.append(beta[q] * buf.detach().reshape(-1))
    return torch.cat(parts) if found else None


@MEASUREMENTS.register("batch_sharpness")
def batch_sharpness(
    batch_size: int | None = None,
    rel_se: float = 0.05,
    min_batches: int = 8,
    max_batches: int = 64,
    direction: str = "gradient",
) -> Measurement:
    r"""Batch sharpness :math:`\mathbb{E}_B[g_B^\top H_B g_B / \lVert g_B\rVert^2]`
    (Andreyev & Beneventano, Edge of Stochastic Stability, arXiv:2412.20553v3)
    at the optimizer's batch size unless ``batch_size`` is given.  Adaptive: stops when
    the standard error is at most ``rel_se`` of the mean.  Cost: one HVP and one
    gradient per sampled batch, ``min_batches`` to ``max_batches`` batches.

    ``direction="update"``: the momentum-aware variant of the momentum-EoSS authors' code
    (Andreyev et al. 2026, arXiv:2604.14108; ``--momentum-bs``),
    :math:`\mathbb{E}_B[s_B^\top H_B s_B / s_B^\top g_B]` along the heavy-ball update
    direction :math:`s_B = g_B + \beta b_t`, with :math:`b_t` the ``momentum_buffer`` of the
    task's ``torch.optim.SGD`` before this step (definition, source and differences:
    :func:`eosbench.curvature.batch_sharpness`).  Recorded under ``batch_sharpness_update``
    (``_stderr``, ``_batches``, ``_hvps``, ``_seconds``), so a task can measure both
    directions; ``batch_sharpness_update_fallback`` is 1.0 when there is no momentum buffer
    yet (before the first step, or ``momentum=0``) and the value is the plain batch
    sharpness, else 0.0.  ``_batches`` counts the batches averaged (a batch with
    :math:`s_B^\top g_B = 0` is dropped), ``_hvps`` those drawn.  Needs heavy-ball SGD
    without Nesterov, dampening or weight decay (``ValueError`` otherwise).
    """
    from .curvature import batch_sharpness as estimate

    if direction not in ("gradient", "update"):
        raise ValueError(f"direction must be 'gradient' or 'update', not {direction!r}")
    key = "batch_sharpness" if direction == "gradient" else "batch_sharpness_update"

    def measure(ctx: Context) -> dict[str, float]:
        b = batch_size or ctx.task.optimizer.batch_size
        if b is None:
            raise ValueError("batch_sharpness needs a batch size (the task is full batch)")
        t0 = time.perf_counter()
        m = _momentum_term(ctx.optimizer, ctx.model) if direction == "update" else None
        r = estimate(
            ctx.model,
            ctx.loss_fn,
            ctx.x_train,
            ctx.y_train,
            b,
            generator=ctx.generator,
            rel_se=rel_se,
            min_batches=min_batches,
            max_batches=max_batches,
            momentum_term=m,
        )
        out = {
            key: float(r.mean),
            f"{key}_stderr": float(r.stderr),
            f"{key}_batches": float(r.n_batches),
            f"{key}_hvps": float(r.n_products),
        }
        if direction == "update":
            out[f"{key}_fallback"] = float(m is None)
        out[f"{key}_seconds"] = time.perf_counter() - t0
        return out

    return _curvature(measure)


@MEASUREMENTS.register("sharpness_gap")
def sharpness_gap(tol: float = 1e-3, max_products: int = 500) -> Measurement:
    r"""The stochastic sharpness gap (Liao, Kolomvaki & Kyrillidis, arXiv:2604.21016v1) and
    what it is predicted from, at the task's constant step :math:`\eta` and batch size
    (:func:`eosbench.curvature.sharpness_gap`, definitions there): ``sharpness_gap_lambda``
    :math:`S`, ``_alpha`` :math:`\alpha = -\nabla L^\top\nabla S_\perp`, ``_beta``
    :math:`\beta = \lVert\nabla S_\perp\rVert^2`, ``_sigma2`` :math:`\sigma_u^2 =
    \operatorname{Var}_B(u^\top g_B)`, ``_predicted`` :math:`\eta\beta\sigma_u^2/(4\alpha)`
    (NaN when :math:`\alpha \le 0`) and ``_measured`` :math:`2/\eta - S`, with ``_residual``,
    ``_hvps``, ``_third`` and ``_seconds``.  The eigenpair is warm-started from this
    measurement's previous one.  Needs plain SGD or GD (constant step, no momentum or weight
    decay: the formula is for that update) and per-example gradients (no BatchNorm).  Cost:
    the warm-started eigenpair, one gradient, one third-order product and one forward-mode
    pass over the training set."""
    from .curvature import sharpness_gap as estimate

    def measure(ctx: Context) -> dict[str, float]:
        t0 = time.perf_counter()
        op = _operator(ctx)
        r = estimate(op, ctx.task.optimizer.lr, ctx.task.optimizer.batch_size,
                     generator=ctx.generator, tol=tol, max_products=max_products,
                     init=ctx.cache.get("sharpness_gap"))  # fmt: skip
        ctx.cache["sharpness_gap"] = r.eigenvector.detach()
        key = "sharpness_gap"
        return {
            f"{key}_lambda": r.sharpness,
            f"{key}_residual": r.residual,
            f"{key}_alpha": r.alpha,
            f"{key}_beta": r.beta,
            f"{key}_sigma2": r.sigma2,
            f"{key}_predicted": r.predicted,
            f"{key}_measured": r.measured,
            f"{key}_hvps": float(r.n_products),
            f"{key}_third": float(r.n_third),
            f"{key}_seconds": time.perf_counter() - t0,
        }

    def check(task: Task, spec) -> None:
        from .optim import departures

        _needs_hessian(task, spec)
        if task.optimizer.name != "sgd" or departures(task):
            why = ", ".join(departures(task)) or f"optimizer {task.optimizer.name!r}"
            raise ValueError(f"sharpness_gap needs plain constant-step SGD or GD; this task "
                             f"has {why}")
        if task.model.batchnorm:
            raise ValueError("sharpness_gap needs per-example gradients, which a model with "
                             "BatchNorm (model.batchnorm=true) does not have")  # fmt: skip

    measure.check = check
    return measure


@MEASUREMENTS.register("trace")
def trace(
    n_samples: int = 30, method: str = "hutch++", n_examples: int | None = None
) -> Measurement:
    r"""Hessian trace :math:`\operatorname{tr} H` by Hutch++ (Meyer et al. 2021) with its
    standard error (over the first ``n_examples`` training examples, if given).
    Cost: ``n_samples`` HVPs."""
    from .curvature import hutchinson_trace

    def measure(ctx: Context) -> dict[str, float]:
        t0 = time.perf_counter()
        r = hutchinson_trace(
            _operator(ctx, None, n_examples), n_samples, method=method, generator=ctx.generator
        )
        return {
            "trace": float(r.estimate),
            "trace_stderr": float(r.stderr),
            "trace_hvps": float(r.n_products),
            "trace_seconds": time.perf_counter() - t0,
        }

    return _curvature(measure)


@MEASUREMENTS.register("ntk_trace")
def ntk_trace(memory_mb: int = 8) -> Measurement:
    r"""The trace of the empirical neural tangent kernel per training example,
    :math:`\operatorname{tr}K/n = \frac1n\sum_i \lVert \partial f(x_i)/\partial\theta
    \rVert_F^2` (summed over the outputs), exactly, from per-example Jacobians in chunks of
    at most ``memory_mb`` MiB (Agarwala & Pennington, arXiv:2404.19261v2, put a small-batch
    edge on this trace).  For the ``mse`` loss it equals :math:`\operatorname{tr}G`, the
    trace of the loss's Gauss-Newton matrix.  Cost: one reverse pass per example and output,
    vmapped (``ntk_trace_seconds``): on digits with fc-tanh (1,000 examples, 10 outputs) about
    530 full-batch gradient evaluations at the default 8 MiB chunks, the fastest of 1-256 MiB
    (``benchmarks/bench_ntk_trace.py``), so measure it sparsely; Hutch++ on the Gauss-Newton
    operator estimates the same number under MSE to about 3% for 67 gradients.  Models with
    BatchNorm are refused (a per-example Jacobian does not exist when the batch's statistics
    couple the examples)."""
    from .curvature import per_example_ntk_trace

    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 1:
        raise ValueError(f"memory_mb={memory_mb!r}: expected a positive integer")

    def measure(ctx: Context) -> dict[str, float]:
        t0 = time.perf_counter()
        value = per_example_ntk_trace(ctx.model, ctx.x_train, memory_mb=memory_mb)
        return {"ntk_trace": value, "ntk_trace_seconds": time.perf_counter() - t0}

    def check(task: Task, spec) -> None:
        _needs_hessian(task, spec)
        if task.model.batchnorm:
            raise ValueError("ntk_trace needs per-example Jacobians, which a model with "
                             "BatchNorm (model.batchnorm=true) does not have")  # fmt: skip

    measure.check = check
    return measure


@MEASUREMENTS.register("linear2_state")
def linear2_state() -> Measurement:
    r"""Parameters :math:`a, b` of ``linear2`` and the sharpness of the gradient-flow
    solution reached from them, :math:`S_{GF} = m_2\sqrt{(a^2-b^2)^2 + 4c^{*2}}` with
    :math:`m_2 = \frac1n\sum x_i^2`, :math:`c^* = \sum x_i y_i / \sum x_i^2` (gradient
    flow conserves :math:`a^2-b^2`; eosbench's ``mse`` carries a factor 1/2).  No HVPs.
    """

    def measure(ctx: Context) -> dict[str, float]:
        a, b = float(ctx.model.a.detach()), float(ctx.model.b.detach())
        x = ctx.x_train.reshape(-1).double()
        y = ctx.y_train.reshape(-1).double()
        m2 = float((x * x).mean())
        c = float((x * y).sum() / (x * x).sum())
        return {"a": a, "b": b, "gf_sharpness": m2 * ((a * a - b * b) ** 2 + 4 * c * c) ** 0.5}

    return measure


@MEASUREMENTS.register("support_norm")
def support_norm(relevant: int = 5) -> Measurement:
    r"""Frobenius norms of the first layer's weights on the irrelevant inputs
    (``irrelevant_norm`` :math:`= \lVert W_1[:, r:] \rVert_F`, the quantity Beneventano, Pinto &
    Poggio's code logs, arXiv:2406.11110v1) and on the relevant ones (``relevant_norm``,
    :math:`\lVert W_1[:, :r] \rVert_F`), where the first ``relevant`` inputs are the teacher's
    (the ``support`` data set's :math:`r = 5`) and :math:`W_1` is the model's first matrix
    parameter; ``irrelevant_ratio`` is ``irrelevant_norm`` over its value at the run's first
    measurement (step 0; NaN, not recorded, when that was 0, as for a zero-initialized
    model).  No HVPs."""
    if isinstance(relevant, bool) or not isinstance(relevant, int) or relevant < 1:
        raise ValueError(f"support_norm: relevant must be a positive integer, got {relevant!r}")

    def first_matrix(model: nn.Module) -> Tensor:
        w = next((p for p in model.parameters() if p.ndim == 2), None)
        if w is None or w.shape[1] <= relevant:
            raise ValueError(f"support_norm needs a first weight matrix with more than "
                             f"{relevant} input columns")  # fmt: skip
        return w

    def measure(ctx: Context) -> dict[str, float]:
        w = first_matrix(ctx.model).detach()
        irrelevant = float(w[:, relevant:].norm())
        first = ctx.cache.setdefault("support_norm", irrelevant)  # at the run's first call
        return {
            "irrelevant_norm": irrelevant,
            "irrelevant_ratio": irrelevant / first if first > 0 else math.nan,
            "relevant_norm": float(w[:, :relevant].norm()),
        }

    return measure


@MEASUREMENTS.register("excess_risk")
def excess_risk() -> Measurement:
    r"""The population excess risk :math:`R = \tfrac12\lVert\theta - \theta^*\rVert^2` of the
    ``linear`` model on a ``stream-*`` data set (:math:`x \sim N(0, I)`, so this is
    :math:`E\,\tfrac12(\langle x, \theta\rangle - \langle x, \theta^*\rangle)^2`), with
    :math:`\theta^*` = :func:`eosbench.data.synthetic.stream_target`: exact, not a test-set
    estimate (which heavy-tailed label noise would swamp).  Records ``risk``.  No HVPs."""
    from .data.synthetic import stream_target

    def check(task: Task, spec) -> None:
        if not task.data.name.startswith("stream-") or task.model.name != "linear":
            raise ValueError("excess_risk is the risk of the linear model on a stream-* data set")

    def measure(ctx: Context) -> dict[str, float]:
        theta = torch.cat([p.detach().reshape(-1) for p in ctx.model.parameters()]).double()
        target = torch.from_numpy(stream_target(theta.numel()))
        return {"risk": 0.5 * float((theta - target).pow(2).sum())}

    measure.check = check
    return measure


@MEASUREMENTS.register("deq_solver")
def deq_solver() -> Measurement:
    """The equilibrium solves of a ``deq-*`` model (:mod:`eosbench.models.deq`) on the whole
    training set: the forward solve's ``deq_iterations`` and ``deq_residual`` (its last
    relative change, at most the model's ``tol`` when it converged) and the backward
    (implicit-gradient) solve's ``deq_backward_iterations`` and ``deq_backward_residual``, of
    the training loss's gradient (taken with ``torch.autograd.grad``: the parameters' ``.grad``
    is untouched).  In chunks of ``physical_batch_size`` examples, each solved on its own; the
    largest iterations and residual over the chunks.  Cost: one forward and backward pass."""

    def check(task: Task, spec) -> None:
        if not task.model.name.startswith("deq-"):
            raise ValueError("deq_solver measures the equilibrium solve of a deq-* model")

    def measure(ctx: Context) -> dict[str, float]:
        model, n = ctx.model, ctx.x_train.shape[0]
        params = [p for p in model.parameters() if p.requires_grad]
        chunk = ctx.physical_batch_size or n
        out = dict.fromkeys(("deq_iterations", "deq_residual", "deq_backward_iterations",
                             "deq_backward_residual"), 0.0)  # fmt: skip
        for i in range(0, n, chunk):
            xb, yb = ctx.x_train[i:i + chunk], ctx.y_train[i:i + chunk]
            with torch.enable_grad():
                loss = ctx.loss_fn(model(xb), yb)
                forward = model.last
                torch.autograd.grad(loss, params)
            for key, solve in (("deq", forward), ("deq_backward", model.last_backward)):
                out[f"{key}_iterations"] = max(out[f"{key}_iterations"], float(solve["iterations"]))
                out[f"{key}_residual"] = max(out[f"{key}_residual"], float(solve["residual"]))
        return out

    measure.check = check
    return measure


def build_measurements(task: Task) -> list[tuple[int, str, Measurement]]:
    """(every, name, callable) for each measurement of ``task``.  A measurement that needs
    something of the task (a plain-GD optimizer, a period) carries ``check(task, spec)``,
    called here, so that :func:`eosbench.preflight.check_task` refuses the task before
    anything is written; a bad option or such a refusal is a :class:`UserError`."""
    out = []
    for m in task.measurements:
        factory = MEASUREMENTS.get(m.name)
        try:
            fn = factory(**dict(m.options))
            getattr(fn, "check", lambda task, spec: None)(task, m)
        except (TypeError, ValueError) as e:
            raise UserError(f"measurement {m.name!r}: {e}") from None
        out.append((m.every, m.name, fn))
    return out


from . import flow as _flow  # noqa: E402,F401  (registers central_flow, smoothed_sharpness)

"""Oracle tests of eosbench.curvature: dense Hessians/GGNs of tiny float64 networks built with
``torch.autograd.functional`` (independent of the ``torch.func`` code under test), and
quadratics with a known spectrum."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call

from eosbench.curvature import (
    LossOperator,
    MatrixOperator,
    batch_sharpness,
    effective_dimension,
    hutchinson_trace,
    minibatch_sharpness,
    slq_density,
    top_eigenpairs,
)

N, C = 12, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny products are latency-bound: on the shared 2-core machine a second intra-op
    thread only spins against other jobs (10x slower under load).  Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - F.one_hot(y, C).to(out.dtype)) ** 2).sum(1).mean()


def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, C))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, C))


def bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, C))


def cohen_cnn() -> nn.Module:
    """eosbench's registered Cohen et al. CNN in miniature: conv, ReLU, max pooling, linear."""
    from eosbench.models import build_model
    from eosbench.task import ModelSpec

    return build_model(ModelSpec(name="cnn-relu", width=2, depth=1), (1, 4, 4), C)


def vit() -> nn.Module:
    """eosbench's registered ViT in miniature: 2x2 patches of 3x4x4 images (4 tokens and the
    class token), width 4, one pre-LN block (written-out LayerNorm, explicit softmax
    attention, GELU MLP); 340 parameters."""
    from eosbench.models import build_model
    from eosbench.task import ModelSpec

    return build_model(ModelSpec(name="vit", width=4, depth=1, options=(("patch", 2),)),
                       (3, 4, 4), C)


SHAPES = {"mlp": (4,), "cnn": (1, 5, 5), "bn": (4,), "cnn-pool": (1, 4, 4), "vit": (3, 4, 4)}
MODELS = {"mlp": mlp, "cnn": cnn, "bn": bn_mlp, "cnn-pool": cohen_cnn, "vit": vit}


def problem(arch: str, n: int = N, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = MODELS[arch]().to(dtype)
    x = torch.randn(n, *SHAPES[arch], dtype=dtype)
    y = torch.arange(n) % C
    return model, x, y


def flat_loss(model: nn.Module, loss_fn, x, y):
    """Loss as a function of the flat trainable-parameter vector, on a train-mode copy."""
    m = copy.deepcopy(model).train()
    named = [(k, p) for k, p in m.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflat(t):
        out, i = {}, 0
        for k, p in named:
            out[k] = t[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    def forward(t, xb=x):
        return functional_call(m, unflat(t), (xb,))

    return theta, (lambda t: loss_fn(forward(t), y)), forward


def dense_hessian(model, loss_fn, x, y) -> torch.Tensor:
    theta, f, _ = flat_loss(model, loss_fn, x, y)
    return hessian(f, theta, vectorize=True)


def dense_ggn(model, loss_fn, x, y) -> torch.Tensor:
    theta, _, forward = flat_loss(model, loss_fn, x, y)
    out = forward(theta).detach()
    J = jacobian(forward, theta, vectorize=True).reshape(out.numel(), -1)
    H_out = hessian(lambda o: loss_fn(o.view_as(out), y), out.reshape(-1), vectorize=True)
    return J.T @ H_out @ J


CASES = list(itertools.product(["mlp", "cnn", "cnn-pool", "vit"], [("mse", mse), ("ce", ce)]))
IDS = [f"{a}-{name}" for a, (name, _) in CASES]


@pytest.mark.parametrize("arch,loss", CASES, ids=IDS)
def test_products_match_dense_hessian(arch, loss):
    model, x, y = problem(arch)
    H = dense_hessian(model, loss[1], x, y)
    op = LossOperator(model, loss[1], x, y)
    assert op.dim == H.shape[0] and op.dtype == torch.float64
    V = torch.randn(op.dim, 4, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(V[:, 0]), H @ V[:, 0], rtol=1e-10, atol=1e-12)
    assert op.n_products == 5
    grad = torch.func.grad(flat_loss(model, loss[1], x, y)[1])(op.params())
    torch.testing.assert_close(op.gradient(), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch,loss", CASES, ids=IDS)
def test_top_eigenvalues_match_dense(arch, loss):
    model, x, y = problem(arch)
    lam = torch.linalg.eigvalsh(dense_hessian(model, loss[1], x, y)).flip(0)
    res = top_eigenpairs(LossOperator(model, loss[1], x, y), 3, tol=1e-9,
                         generator=torch.Generator().manual_seed(0))
    assert res.converged and bool((res.residuals <= 1e-9).all())
    torch.testing.assert_close(res.eigenvalues, lam[:3], rtol=1e-5, atol=0)
    assert bool((res.eigenvalues[:-1] >= res.eigenvalues[1:]).all())


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_chunked_equals_unchunked(kind):
    model, x, y = problem("cnn")
    V = torch.randn(77, 3, dtype=torch.float64)
    whole = LossOperator(model, ce, x, y, kind=kind)
    chunked = LossOperator(model, ce, x, y, kind=kind, physical_batch_size=5)  # 5 + 5 + 2
    torch.testing.assert_close(chunked.matmat(V), whole.matmat(V), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(chunked.gradient(), whole.gradient(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("arch,loss", CASES, ids=IDS)
def test_ggn_matches_dense_ggn(arch, loss):
    model, x, y = problem(arch)
    G = dense_ggn(model, loss[1], x, y)
    op = LossOperator(model, loss[1], x, y, kind="ggn", physical_batch_size=7)
    V = torch.randn(op.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), G @ V, rtol=1e-10, atol=1e-12)


def test_preconditioned_eigenvalues_match_dense_inverse_P_times_H():
    model, x, y = problem("mlp")
    H = dense_hessian(model, mse, x, y)
    P = [torch.rand_like(p) + 0.1 for p in model.parameters()]
    p = torch.cat([t.reshape(-1) for t in P])
    lam = torch.linalg.eigvals(torch.diag(1 / p) @ H).real.sort(descending=True).values
    op = LossOperator(model, mse, x, y, preconditioner=P)
    res = top_eigenpairs(op, 2, tol=1e-10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(res.eigenvalues, lam[:2], rtol=1e-6, atol=0)


def test_float64_option_casts_a_copy_and_leaves_the_model_alone():
    model, x, y = problem("mlp", dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = LossOperator(model, ce, x, y, dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    H = dense_hessian(m64, ce, x.double(), y)
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    for k, t in model.state_dict().items():
        assert t.dtype == torch.float32 and torch.equal(t, before[k])


def test_frozen_parameters_are_excluded():
    model, x, y = problem("mlp")
    model[0].weight.requires_grad_(False)
    op = LossOperator(model, mse, x, y)
    assert op.dim == 5 + 5 * C + C
    H = dense_hessian(model, mse, x, y)  # flat_loss also skips frozen parameters
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)


class _Tanh(torch.autograd.Function):
    """tanh as a custom Function with forward and backward modes but no vmap rule."""

    @staticmethod
    def forward(z):
        return torch.tanh(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        return g * (1 - t * t)

    @staticmethod
    def jvp(ctx, dz):
        (t,) = ctx.saved_tensors
        return dz * (1 - t * t)


class _NoVmap(nn.Module):
    def forward(self, z):
        return _Tanh.apply(z)


def test_matmat_falls_back_to_a_loop_when_vmap_fails():
    model, x, y = problem("mlp")
    model[1] = _NoVmap()
    op = LossOperator(model, mse, x, y, physical_batch_size=8)  # chunks: jvp-of-grad products
    V = torch.randn(op.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), dense_hessian(model, mse, x, y) @ V,
                               rtol=1e-10, atol=1e-12)
    assert not op._vmap_ok and op.n_products == 3


def test_batchnorm_measures_train_mode_hessian_and_touches_nothing():
    model, x, y = problem("bn")
    model.eval()  # the operator must still use batch statistics, and restore this flag
    with torch.no_grad():  # non-trivial running statistics, which must not be used
        model[0](x).mean()
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    H = dense_hessian(model, mse, x, y)  # train-mode copy: batch statistics
    op = LossOperator(model, mse, x, y)
    V = torch.randn(op.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    res = top_eigenpairs(op, 1, tol=1e-9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.eigenvalues[0], torch.linalg.eigvalsh(H)[-1], rtol=1e-6,
                               atol=0)
    op.gradient()
    batch_sharpness(model, mse, x, y, 6, generator=torch.Generator().manual_seed(0),
                    max_batches=8, min_batches=8)
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k
    assert not any(m.training for m in model.modules())


def test_batchnorm_chunks_use_their_own_batch_statistics():
    model, x, y = problem("bn")
    op = LossOperator(model, mse, x, y, physical_batch_size=6)
    H = 0.5 * (dense_hessian(model, mse, x[:6], y[:6]) + dense_hessian(model, mse, x[6:], y[6:]))
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)


# -- quadratics with a known spectrum ----------------------------------------------------------

def quadratic(eigenvalues: torch.Tensor, seed: int = 0) -> tuple[MatrixOperator, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g,
                                       dtype=torch.float64))
    return MatrixOperator(Q @ torch.diag(eigenvalues) @ Q.T), Q


def spectrum(d: int = 200) -> torch.Tensor:
    lam = 10.0 * 0.97 ** torch.arange(d, dtype=torch.float64)
    lam[-1] = -50.0  # a large negative eigenvalue: larger in magnitude than the top one
    return lam


def test_algebraically_largest_despite_large_negative_eigenvalue():
    lam = spectrum()
    op, Q = quadratic(lam)
    res = top_eigenpairs(op, 3, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, lam[:3], rtol=1e-9, atol=0)
    overlap = (Q[:, :3].T @ res.eigenvectors).abs()
    torch.testing.assert_close(overlap, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_warm_start_needs_very_few_products():
    lam = spectrum()
    op, Q = quadratic(lam)
    g = torch.Generator().manual_seed(0)
    cold = top_eigenpairs(op, 1, tol=1e-4, generator=g)
    v = Q[:, 0] + 1e-4 * torch.randn(200, generator=g, dtype=torch.float64)  # |dv| ~ 1.4e-3
    warm = top_eigenpairs(op, 1, tol=1e-4, init=v)
    exact = top_eigenpairs(op, 1, tol=1e-4, init=Q[:, :1])
    assert cold.converged and warm.converged and exact.converged
    assert exact.n_products == 1
    assert warm.n_products <= 4
    assert 5 * warm.n_products <= cold.n_products
    torch.testing.assert_close(warm.eigenvalues, lam[:1], rtol=1e-6, atol=0)


def test_warm_start_pads_missing_columns_and_small_dimensions_are_exact():
    lam = torch.tensor([3.0, 1.0, -0.5, -7.0], dtype=torch.float64)
    op, Q = quadratic(lam)
    res = top_eigenpairs(op, 3, tol=1e-12, init=Q[:, :1],
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.eigenvalues, lam[:3], rtol=1e-10, atol=1e-12)
    assert res.n_products <= 4  # never more than the dimension


@pytest.mark.parametrize("name", ["decaying", "edge cluster"])
def test_gap_bound_holds_at_every_stage_and_stops_sooner(name):
    """At every budget (each an intermediate Rayleigh-Ritz state) whose Ritz values have
    found their eigenvalues (the nearest eigenvalue to theta_i is lambda_i: the assumption the
    bound states) the true eigenvalue lies in [theta, theta (1 + error bound)], for a decaying
    spectrum and for the cluster at the top
    that the Hessian has at the edge of stability (1.00, 0.99, 0.97 of the top, then a gap),
    where a single pair's gap is small and the block bound of the cluster carries the
    certificate; stopping on the gap bound delivers the requested accuracy in fewer products
    than stopping on the residual."""
    lam = spectrum()
    if name == "edge cluster":
        lam[1:3] = torch.tensor([0.99, 0.97], dtype=torch.float64) * lam[0]
    lam, _ = lam.sort(descending=True)
    op, _ = quadratic(lam)
    checked = 0
    for k, spare in itertools.product((1, 3), (0, 3)):  # spare: the block bounds' pairs
        for budget in range(k, 60):
            res = top_eigenpairs(op, k, tol=1e-14, max_products=budget, bound="gap",
                                 spare=spare, generator=torch.Generator().manual_seed(1))
            miss = (lam[:k] - res.eigenvalues) / res.eigenvalues.abs()
            assert bool((miss >= -1e-12).all()), (k, budget)  # Ritz values never overshoot
            found = (res.eigenvalues[:, None] - lam).abs().argmin(1) == torch.arange(k)
            checked += int(found.sum())
            assert bool((miss[found] <= res.errors[found] * (1 + 1e-9) + 1e-12).all()), (
                k, budget, miss)
            assert bool((res.errors <= res.residuals * (1 + 1e-12)).all())
        runs = {b: top_eigenpairs(op, k, tol=1e-6, bound=b, spare=spare,
                                  generator=torch.Generator().manual_seed(1))
                for b in ("residual", "gap")}  # fmt: skip
        gap = runs["gap"]
        assert gap.converged and bool((gap.errors <= 1e-6).all())
        torch.testing.assert_close(gap.eigenvalues, lam[:k], rtol=1e-6, atol=0)
        assert gap.n_products < runs["residual"].n_products
    assert checked >= 200  # most stages were checked


def _cluster_starts(spare: int, count: int, bound: str) -> list[int]:
    """Products used by ``count`` warm starts inside a cluster of four eigenvalues 1% apart at
    the top (10, 9.9, 9.8, 9.7: at the edge they swap places between measurements, so last
    time's vectors are random mixtures of this time's), negative where the solver stopped
    on another eigenvalue than the top one."""
    lam = spectrum()
    lam[:4] = torch.tensor([10.0, 9.9, 9.8, 9.7], dtype=torch.float64)
    lam, _ = lam.sort(descending=True)
    op, Q = quadratic(lam)
    out = []
    for seed in range(count):
        g = torch.Generator().manual_seed(seed)
        mix = Q[:, :4] @ torch.randn(4, 1 + spare, generator=g, dtype=torch.float64)
        init = mix + 0.02 * torch.randn(200, 1 + spare, generator=g, dtype=torch.float64)
        res = top_eigenpairs(op, 1, tol=1e-3, bound=bound, init=init, spare=spare, generator=g)
        right = abs(float(res.eigenvalues[0]) - 10.0) <= 1e-2  # the cluster's spacing: 0.1
        out.append(res.n_products if right else -res.n_products)
    return out


@pytest.mark.parametrize("spare", [0, 2])
def test_gap_bound_stops_short_in_a_cluster_no_more_often_than_the_residual(spare):
    """Warm-started inside a cluster, a small basis's other Ritz values are far from any
    eigenvalue next to the target, and a gap measured to them would certify the second
    eigenvalue as the top one.  From the same 40 starts the gap bound must stop on another
    eigenvalue than the top one no more often than the residual criterion does (a start whose
    span hides the top eigenvector fools both)."""
    gap, res = _cluster_starts(spare, 40, "gap"), _cluster_starts(spare, 40, "residual")
    assert sum(u < 0 for u in gap) <= sum(u < 0 for u in res)


def test_without_the_resolved_neighbour_rule_the_cluster_starts_stop_short(monkeypatch):
    import eosbench.curvature.eigen as eigen

    monkeypatch.setattr(eigen, "RESOLVED", math.inf)
    gap = _cluster_starts(0, 40, "gap")
    assert sum(u < 0 for u in gap) > sum(u < 0 for u in _cluster_starts(0, 40, "residual")) + 10


def test_unknown_bound_is_refused():
    op, _ = quadratic(spectrum(20))
    with pytest.raises(ValueError, match="bound='tight'"):
        top_eigenpairs(op, 1, bound="tight")


def test_budget_exhaustion_reports_not_converged():
    op, _ = quadratic(spectrum())
    res = top_eigenpairs(op, 1, tol=1e-12, max_products=5,
                         generator=torch.Generator().manual_seed(0))
    assert not res.converged and res.n_products == 5


# -- traces, densities, effective dimension ----------------------------------------------------

@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_within_three_stderr_of_dense_trace(method):
    model, x, y = problem("cnn")
    exact = float(torch.trace(dense_hessian(model, ce, x, y)))
    op = LossOperator(model, ce, x, y)
    res = hutchinson_trace(op, 30, method=method, generator=torch.Generator().manual_seed(0))
    assert res.n_products == 30 and res.stderr > 0
    assert abs(res.estimate - exact) <= 3 * res.stderr


def test_hutchpp_is_exact_when_sketch_spans_everything_and_rel_se_stops_early():
    lam = spectrum(20)
    op, _ = quadratic(lam)
    res = hutchinson_trace(op, 60, generator=torch.Generator().manual_seed(0))
    assert res.stderr == 0 and abs(res.estimate - float(lam.sum())) < 1e-9
    op2, _ = quadratic(torch.linspace(1.0, 2.0, 500, dtype=torch.float64))
    early = hutchinson_trace(op2, 1000, method="hutchinson", rel_se=0.05,
                             generator=torch.Generator().manual_seed(0))
    assert early.n_products < 1000 and early.stderr <= 0.05 * abs(early.estimate)


def test_slq_weights_reproduce_moments_exactly():
    # diagonal A: every normalized Rademacher v has v_i^2 = 1/d, so v^T A^p v = mean(a^p) and
    # Gauss quadrature with m nodes is exact for p <= 2m - 1
    a = torch.linspace(-2.0, 5.0, 64, dtype=torch.float64)
    op = MatrixOperator(torch.diag(a))
    nodes, weights = slq_density(op, 3, 6, generator=torch.Generator().manual_seed(0))
    assert op.n_products == 18 and abs(float(weights.sum()) - 1) < 1e-12
    for p in range(12):
        torch.testing.assert_close((weights * nodes**p).sum(), (a**p).mean(), rtol=1e-8,
                                   atol=1e-10)
    assert float(nodes.max()) <= 5.0 + 1e-9 and float(nodes.min()) >= -2.0 - 1e-9


def test_effective_dimension_closed_form():
    lam = torch.tensor([3.0, 1.0, 0.0, -2.0])
    assert effective_dimension(lam, 1.0) == pytest.approx(3 / 4 + 1 / 2)


# -- mini-batch sharpness ------------------------------------------------------------------------

def enumerate_batches(model, x, y, b):
    """Batch sharpness and mini-batch lambda_max averaged over ALL subsets of size b."""
    bs, lmax = [], []
    for idx in itertools.combinations(range(len(x)), b):
        idx = list(idx)
        theta, f, _ = flat_loss(model, mse, x[idx], y[idx])
        g = torch.func.grad(f)(theta)
        H = hessian(f, theta, vectorize=True)
        bs.append(float(g @ H @ g / (g @ g)))
        lmax.append(float(torch.linalg.eigvalsh(H)[-1]))
    return sum(bs) / len(bs), sum(lmax) / len(lmax)


def test_batch_sharpness_full_batch_is_exact_rayleigh_quotient():
    model, x, y = problem("mlp")
    exact, lmax = enumerate_batches(model, x, y, N)
    r = batch_sharpness(model, mse, x, y, N, generator=torch.Generator().manual_seed(0),
                        min_batches=4, max_batches=4)
    assert r.n_batches == 4 and r.n_products == 4 and r.stderr < 1e-10
    assert r.mean == pytest.approx(exact, rel=1e-10)
    m = minibatch_sharpness(model, mse, x, y, N, generator=torch.Generator().manual_seed(0),
                            min_batches=2, max_batches=2, tol=1e-10)
    assert m.mean == pytest.approx(lmax, rel=1e-6)


def test_stochastic_sharpness_matches_enumeration_over_all_batches():
    model, x, y = problem("mlp", n=7)
    exact_bs, exact_lmax = enumerate_batches(model, x, y, 3)  # C(7, 3) = 35 batches
    r = batch_sharpness(model, mse, x, y, 3, generator=torch.Generator().manual_seed(0),
                        min_batches=200, max_batches=200)
    assert r.n_batches == 200
    assert abs(r.mean - exact_bs) <= 4 * r.stderr
    m = minibatch_sharpness(model, mse, x, y, 3, generator=torch.Generator().manual_seed(1),
                            min_batches=30, max_batches=30, tol=1e-6)
    assert abs(m.mean - exact_lmax) <= 4 * m.stderr
    assert exact_lmax >= exact_bs  # a Rayleigh quotient never exceeds lambda_max


def _split_ctx(model, loss_fn, x, y):
    from eosbench.measure import Context
    from eosbench.task import Task

    return Context(Task(name="t"), 0, model, loss_fn, x, y, None, None,
                   torch.Generator().manual_seed(0))  # fmt: skip


@pytest.mark.parametrize("arch,loss", CASES, ids=IDS)
def test_sharpness_split_matches_dense_gauss_newton_and_nme(arch, loss):
    """``sharpness`` with ``split``: lambda_max(G) and v^T (H - G) v along H's top
    eigenvector, against the dense Hessian and the dense Gauss-Newton matrix."""
    from eosbench.measure import MEASUREMENTS

    model, x, y = problem(arch)
    H, G = dense_hessian(model, loss[1], x, y), dense_ggn(model, loss[1], x, y)
    lam, vecs = torch.linalg.eigh(H)
    v = vecs[:, -1]
    nme = float(v @ (H - G) @ v)
    out = MEASUREMENTS.get("sharpness")(split=True, tol=1e-9)(_split_ctx(model, loss[1], x, y))
    assert out["sharpness"] == pytest.approx(float(lam[-1]), rel=1e-7)
    assert out["sharpness_gn"] == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-7)
    assert out["sharpness_nme"] == pytest.approx(nme, rel=1e-5, abs=1e-9 * float(lam[-1]))
    assert out["sharpness_nme_share"] == pytest.approx(nme / float(lam[-1]), rel=1e-5, abs=1e-9)
    assert abs(nme) > 1e-4 * float(lam[-1])  # the case is not trivial: N is not zero here
    assert out["sharpness_gn_hvps"] >= 2


def test_sharpness_split_nme_vanishes_at_interpolation_under_mse():
    """Targets equal to the network's outputs: every residual is zero, so N = 0 and H = G."""
    from eosbench.measure import MEASUREMENTS

    model, x, _ = problem("mlp")
    with torch.no_grad():
        y = model(x).detach()

    def sq(out, t):
        return 0.5 * ((out - t) ** 2).sum(1).mean()

    out = MEASUREMENTS.get("sharpness")(split=True, tol=1e-9)(_split_ctx(model, sq, x, y))
    assert abs(out["sharpness_nme_share"]) < 1e-8
    assert out["sharpness_gn"] == pytest.approx(out["sharpness"], rel=1e-7)


def test_sharpness_split_refuses_a_non_boolean():
    from eosbench.measure import MEASUREMENTS

    with pytest.raises(ValueError, match="split"):
        MEASUREMENTS.get("sharpness")(split="yes")


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_ntk_trace_is_the_sum_of_squared_per_example_jacobians(arch):
    """Against per-example Jacobians taken one at a time with torch.autograd, and against
    the trace of the dense Gauss-Newton matrix of Cohen et al.'s MSE (H_loss = I / n)."""
    from eosbench.curvature import per_example_ntk_trace
    from eosbench.losses import mse as cohen_mse

    model, x, y = problem(arch)
    theta, _, forward = flat_loss(model, cohen_mse, x, y)
    by_hand = sum(float(jacobian(lambda t, xi=xi: forward(t, xi[None])[0], theta).pow(2).sum())
                  for xi in x) / len(x)  # fmt: skip
    assert per_example_ntk_trace(model, x) == pytest.approx(by_hand, rel=1e-10)
    assert per_example_ntk_trace(model, x, memory_mb=1) == pytest.approx(by_hand, rel=1e-10)
    G = dense_ggn(model, cohen_mse, x, y)
    assert float(torch.trace(G)) == pytest.approx(by_hand, rel=1e-9)


def test_ntk_trace_measurement_refuses_batchnorm_and_bad_options():
    from eosbench.errors import UserError
    from eosbench.measure import MEASUREMENTS, build_measurements
    from eosbench.task import MeasurementSpec, ModelSpec, Task

    with pytest.raises(ValueError, match="memory_mb"):
        MEASUREMENTS.get("ntk_trace")(memory_mb=0)
    task = Task(name="t", model=ModelSpec(name="fc-tanh", batchnorm=True),
                measurements=(MeasurementSpec("ntk_trace", every=10),))  # fmt: skip
    with pytest.raises(UserError, match="BatchNorm"):
        build_measurements(task)


@pytest.mark.parametrize("arch,loss", CASES, ids=IDS)
def test_sharpness_spare_vectors_against_the_dense_hessian(arch, loss):
    """``sharpness`` with ``spare``: the top 2 eigenvalues of the dense Hessian, the warm start
    kept as the top 2 and the 2 next Ritz vectors; a second call at the same parameters starts
    from them and needs no more than their products plus one expansion."""
    from eosbench.measure import MEASUREMENTS

    model, x, y = problem(arch)
    lam = torch.linalg.eigvalsh(dense_hessian(model, loss[1], x, y)).flip(0)
    m = MEASUREMENTS.get("sharpness")(k=2, tol=1e-7, spare=2)
    ctx = _split_ctx(model, loss[1], x, y)
    out = m(ctx)
    assert ctx.cache["sharpness"].shape[1] == 4
    assert out["sharpness"] == pytest.approx(float(lam[0]), rel=1e-7)
    assert out["sharpness_eig2"] == pytest.approx(float(lam[1]), rel=1e-7)
    again = m(ctx)
    assert again["sharpness_hvps"] <= 4 + 2
    assert again["sharpness"] == pytest.approx(out["sharpness"], rel=1e-7)


@pytest.mark.parametrize("name", ["sharpness", "preconditioned_sharpness"])
@pytest.mark.parametrize("option,message", [({"spare": -1}, "spare=-1"),
                                            ({"spare": True}, "spare=True")])  # fmt: skip
def test_eigensolver_options_are_refused_when_bad(name, option, message):
    from eosbench.measure import MEASUREMENTS

    with pytest.raises(ValueError, match=message):
        MEASUREMENTS.get(name)(**option)


def test_recorded_gradient_is_the_gradient_and_costs_no_product():
    model, x, y = problem("mlp")
    op = LossOperator(model, mse, x, y)
    g = op.recorded_gradient()
    torch.testing.assert_close(g, op.gradient(), rtol=1e-12, atol=1e-14)
    assert op.n_products == 0
    v = torch.randn(op.dim, dtype=torch.float64)
    H = dense_hessian(model, mse, x, y)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)  # same recording
    assert LossOperator(model, mse, x, y, physical_batch_size=5).recorded_gradient() is None
    assert LossOperator(model, mse, x, y, kind="ggn").recorded_gradient() is None

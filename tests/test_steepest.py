"""Steepest descent in a norm, its optimizers and the generalized sharpness (issue 26),
against exact references: dual-norm identities, SVD polar factors, hand-computed updates,
the exact loss change of the paper's Definition 1.1, and brute-force maxima."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from eosbench.curvature import LossOperator, MatrixOperator, generalized_sharpness
from eosbench.curvature.generalized import split
from eosbench.errors import UserError
from eosbench.optim import build_optimizer, threshold
from eosbench.optim.steepest import NORMS, dual_norm, lmo, polar, primal_norm
from eosbench.optim.thresholds import ThresholdError
from eosbench.task import OptimizerSpec

SHAPES = (torch.Size([3, 4]), torch.Size([3]), torch.Size([2, 2, 2]))


def _blocks(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


@pytest.mark.parametrize("norm", NORMS)
def test_the_oracle_attains_the_dual_norm_on_the_unit_sphere(norm):
    g = _blocks()
    s = lmo(norm, g)
    assert sum(float((a * b).sum()) for a, b in zip(g, s, strict=True)) == pytest.approx(dual_norm(norm, g))
    assert primal_norm(norm, s) == pytest.approx(1.0)
    # no other unit direction does better (random directions, scaled to the sphere)
    for seed in range(1, 50):
        d = _blocks(seed)
        d = [b / primal_norm(norm, d) for b in d]
        assert sum(float((a * b).sum()) for a, b in zip(g, d, strict=True)) <= dual_norm(norm, g) + 1e-12


def test_polar_factor_by_svd_and_by_newton_schulz():
    torch.manual_seed(0)
    for shape in ((5, 3), (3, 5), (4, 4)):
        m = torch.randn(*shape, dtype=torch.float64)
        q = polar(m)
        k = min(shape)
        assert torch.allclose(torch.linalg.svdvals(q), torch.ones(k, dtype=q.dtype), atol=1e-12)
        assert float((q * m).sum()) == pytest.approx(float(torch.linalg.matrix_norm(m, "nuc")))
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        ns = polar(m, "newton-schulz")
        core = u.T @ ns @ vh.T  # diagonal: the same singular vectors, other singular values
        off = core - torch.diag(torch.diagonal(core))
        assert off.abs().max() < 1e-6
        assert float(torch.diagonal(core).min()) > 0.6 and float(torch.diagonal(core).max()) < 1.25
    assert torch.equal(polar(torch.zeros(3, 2)), torch.zeros(3, 2))


def _params(seed=0):
    return [nn.Parameter(b.clone()) for b in _blocks(seed)]


@pytest.mark.parametrize("name", ["linf", "spectral", "block_cd", "muon"])
def test_one_step_is_the_documented_update(name):
    ps = _params()
    grads = _blocks(7)
    for p, g in zip(ps, grads, strict=True):
        p.grad = g.clone()
    before = [p.detach().clone() for p in ps]
    build_optimizer(OptimizerSpec(name=name, lr=0.1), ps).step()
    if name == "linf":
        scale = sum(float(g.abs().sum()) for g in grads)
        want = [b - 0.1 * scale * torch.sign(g) for b, g in zip(before, grads, strict=True)]
    elif name in ("spectral", "muon"):
        nuc = sum(float(torch.linalg.matrix_norm(g.reshape(g.shape[0], -1), "nuc")) for g in grads)
        scale = 0.1 * (nuc if name == "spectral" else 1.0)
        want = []
        for b, g in zip(before, grads, strict=True):
            m = g.reshape(g.shape[0], -1)
            u, _, vh = torch.linalg.svd(m, full_matrices=False)
            want.append(b - scale * (u @ vh).reshape(g.shape))
    else:  # block_cd: only the block with the largest gradient norm, by -lr * g
        top = max(range(3), key=lambda i: float(grads[i].norm()))
        want = [b - 0.1 * g if i == top else b for i, (b, g) in enumerate(zip(before, grads, strict=True))]
    for p, w in zip(ps, want, strict=True):
        assert torch.allclose(p.detach(), w, atol=1e-12)


def test_muon_momentum_and_lion_follow_their_recursions():
    ps = _params()
    opt = build_optimizer(OptimizerSpec(name="muon", lr=0.1, momentum=0.9, nesterov=True), ps)
    lion_ps = _params()
    lion = build_optimizer(OptimizerSpec(name="lion", lr=0.1, beta1=0.9, beta2=0.99,
                                         weight_decay=0.5), lion_ps)  # fmt: skip
    buf = [torch.zeros_like(p) for p in ps]
    m = [torch.zeros_like(p) for p in ps]
    want = [p.detach().clone() for p in ps]
    want_lion = [p.detach().clone() for p in lion_ps]
    for step in range(3):
        grads = _blocks(10 + step)
        for p, q, g in zip(ps, lion_ps, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        lion.step()
        for i, g in enumerate(grads):
            buf[i] = 0.9 * buf[i] + g
            d = (g + 0.9 * buf[i]).reshape(g.shape[0], -1)
            u, _, vh = torch.linalg.svd(d, full_matrices=False)
            want[i] = want[i] - 0.1 * (u @ vh).reshape(g.shape)
            c = torch.sign(0.9 * m[i] + 0.1 * g)
            want_lion[i] = want_lion[i] - 0.1 * (c + 0.5 * want_lion[i])
            m[i] = 0.99 * m[i] + 0.01 * g
    for p, w in zip(ps + lion_ps, want + want_lion, strict=True):
        assert torch.allclose(p.detach(), w, atol=1e-12)


def test_thresholds_and_refusals():
    t = threshold(OptimizerSpec(name="linf", lr=0.01))
    assert (t.quantity, t.value) == ("sharpness_linf", pytest.approx(200.0))
    assert threshold(OptimizerSpec(name="spectral", lr=0.1)).quantity == "sharpness_spectral"
    assert threshold(OptimizerSpec(name="block_cd", lr=0.1)).quantity == "sharpness_block"
    assert threshold(OptimizerSpec(name="muon", lr=0.1)).quantity == "sharpness_spectral_normalized"
    assert threshold(OptimizerSpec(name="signsgd", lr=0.1)).quantity == "sharpness_linf_normalized"
    for spec in (OptimizerSpec(name="lion", lr=0.1), OptimizerSpec(name="muon", lr=0.1, momentum=0.9),
                 OptimizerSpec(name="signsgd", lr=0.1, batch_size=8),
                 OptimizerSpec(name="linf", lr=0.1, weight_decay=0.1)):  # fmt: skip
        with pytest.raises(ThresholdError):
            threshold(spec)
    with pytest.raises(UserError, match="has no momentum"):
        build_optimizer(OptimizerSpec(name="spectral", lr=0.1, momentum=0.5), _params())
    with pytest.raises(UserError, match="orthogonalizer='qr'"):
        build_optimizer(OptimizerSpec(name="muon", lr=0.1, orthogonalizer="qr"), _params())
    with pytest.raises(UserError, match="only spectral and muon"):
        build_optimizer(OptimizerSpec(name="linf", lr=0.1, orthogonalizer="newton-schulz"), _params())


# -- the generalized sharpness against brute force ---------------------------------------------

def _psd(dim, seed, rank=None):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, rank or dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim


def _quad(d, h):
    return torch.einsum("...i,ij,...j->...", d, h, d)


def test_l2_is_the_top_eigenvalue():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(20, 20, generator=g, dtype=torch.float64)
    h = (a + a.T) / 2
    res = generalized_sharpness(MatrixOperator(h), (torch.Size([20]),), "l2", iters=300,
                                restarts=3, generator=g)  # fmt: skip
    assert res.value == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-3)
    assert res.value <= float(torch.linalg.eigvalsh(h)[-1]) + 1e-12


def test_linf_against_every_sign_vector():
    """PSD: the maximum of d^T H d over the cube is at a vertex (a convex function)."""
    for seed in range(3):
        h = _psd(12, seed, rank=4)
        signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=12)), dtype=h.dtype)
        exact = float(_quad(signs, h).max())
        res = generalized_sharpness(MatrixOperator(h), (torch.Size([12]),), "linf",
                                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert exact * 0.98 <= res.value <= exact + 1e-10
        assert float(res.direction.abs().max()) == pytest.approx(1.0)


def test_block_is_the_largest_diagonal_block_eigenvalue_for_a_psd_hessian():
    """Islamov et al., Lemma I.8."""
    shapes = (torch.Size([2, 3]), torch.Size([4]), torch.Size([5]))
    for seed in range(3):
        h = _psd(15, seed)
        exact, i = 0.0, 0
        for s in shapes:
            n = math.prod(s)
            exact = max(exact, float(torch.linalg.eigvalsh(h[i:i + n, i:i + n])[-1]))
            i += n
        res = generalized_sharpness(MatrixOperator(h), shapes, "block",
                                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert exact * 0.99 <= res.value <= exact + 1e-10


def test_spectral_against_a_grid_of_orthogonal_matrices():
    """One 2x2 matrix block and one 2-vector block, PSD: the maximum is at an extreme point
    of the product of spectral balls, an orthogonal matrix times a unit vector."""
    shapes = (torch.Size([2, 2]), torch.Size([2]))
    a = torch.linspace(0, 2 * math.pi, 721, dtype=torch.float64)[:-1]
    c, s = torch.cos(a), torch.sin(a)
    rot = torch.stack([c, -s, s, c], 1)  # rotations, row-major 2x2
    ref = torch.stack([c, s, s, -c], 1)  # reflections
    mats = torch.cat([rot, ref])  # (1440, 4)
    vecs = torch.stack([c, s], 1)  # (720, 2)
    d = torch.cat([mats[:, None, :].expand(-1, 720, -1), vecs[None].expand(1440, -1, -1)], 2)
    for seed in range(3):
        h = _psd(6, seed)
        grid = float(_quad(d.reshape(-1, 6), h).max())
        res = generalized_sharpness(MatrixOperator(h), shapes, "spectral",
                                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert grid * 0.995 <= res.value <= grid * (1 + 1e-4)
        blocks = split(res.direction, shapes)
        assert max(float(torch.linalg.matrix_norm(blocks[0], 2)), float(blocks[1].norm())) == (
            pytest.approx(1.0))  # fmt: skip


def _tiny_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)

    def loss(out, t):
        return 0.5 * ((out - t) ** 2).sum(1).mean()

    return model, loss, x, y


def test_on_a_network_the_operator_path_equals_the_dense_hessian_path():
    """The same estimate on the Hessian-vector products of a tiny tanh network and on its dense
    Hessian (from torch.autograd.functional): the blocks follow the parameters."""
    model, loss, x, y = _tiny_net()
    op = LossOperator(model, loss, x, y)
    dense = op.matmat(torch.eye(op.dim, dtype=torch.float64))
    assert op.shapes == tuple(p.shape for p in model.parameters())
    for norm in NORMS:
        a = generalized_sharpness(op, op.shapes, norm, iters=30, restarts=2,
                                  generator=torch.Generator().manual_seed(1))  # fmt: skip
        b = generalized_sharpness(MatrixOperator(dense), op.shapes, norm, iters=30, restarts=2,
                                  generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert a.value == pytest.approx(b.value, rel=1e-9)
    top = float(torch.linalg.eigvalsh(dense)[-1])  # l2: Frank-Wolfe is a damped power iteration
    assert generalized_sharpness(op, op.shapes, "l2", iters=200).value == pytest.approx(top, rel=1e-3)


def test_the_sharpness_bounds_the_loss_change_of_steepest_descent():
    """Islamov et al., eq. 6-7 on a quadratic: with eta below 2/S every unnormalized step
    lowers the loss (exactly, whatever the start); the loss change is -eta(1 - eta D/2)|g|_*^2
    with D <= S."""
    h = _psd(12, 5, rank=6)
    shapes = (torch.Size([2, 3]), torch.Size([6]))
    for name, norm in (("linf", "linf"), ("spectral", "spectral"), ("block_cd", "block")):
        s = generalized_sharpness(MatrixOperator(h), shapes, norm, restarts=10,
                                  generator=torch.Generator().manual_seed(0)).value  # fmt: skip
        for seed in range(5):
            theta = torch.randn(12, generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64)  # fmt: skip
            ps = [nn.Parameter(b.clone()) for b in split(theta, shapes)]
            opt = build_optimizer(OptimizerSpec(name=name, lr=0.95 * 2 / s), ps)
            prev = math.inf
            for _ in range(30):
                opt.zero_grad()
                flat = torch.cat([p.reshape(-1) for p in ps])
                f = 0.5 * flat @ h @ flat
                f.backward()
                assert float(f.detach()) <= prev + 1e-12
                prev = float(f.detach())
                opt.step()


def test_generalized_sharpness_measurement():
    from eosbench.measure import MEASUREMENTS, Context
    from eosbench.task import Task

    model, loss, x, y = _tiny_net()
    meas = MEASUREMENTS.get("generalized_sharpness")(norm="spectral", iters=10, restarts=2)
    ctx = Context(task=Task(name="t"), step=0, model=model, loss_fn=loss, x_train=x, y_train=y,
                  optimizer=None, physical_batch_size=None,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    out = meas(ctx)
    assert out["sharpness_spectral_hvps"] <= 22
    assert out["sharpness_spectral_normalized"] == pytest.approx(
        out["sharpness_spectral"] / out["sharpness_spectral_dual_grad"])  # fmt: skip
    again = meas(ctx)  # warm: restart 0 starts from the last maximizer
    assert again["sharpness_spectral"] >= out["sharpness_spectral"] * (1 - 1e-9)
    for bad in ({"norm": "l1"}, {"iters": -1}, {"restarts": 0}, {"tol": -1.0}):
        with pytest.raises(ValueError):
            MEASUREMENTS.get("generalized_sharpness")(**bad)


def test_on_a_tiny_network_against_brute_force():
    """The Gauss-Newton matrix of a 3-2-1 tanh network (11 parameters; PSD): l_inf against
    all 2,048 sign vectors, block against the largest diagonal block's top eigenvalue."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)

    def loss(out, t):
        return 0.5 * ((out - t) ** 2).sum(1).mean()

    op = LossOperator(model, loss, x, y, kind="ggn")
    dense = op.matmat(torch.eye(op.dim, dtype=torch.float64))
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=op.dim)), dtype=dense.dtype)
    exact = float(_quad(signs, dense).max())
    res = generalized_sharpness(op, op.shapes, "linf", generator=torch.Generator().manual_seed(0))
    assert exact * 0.99 <= res.value <= exact + 1e-10
    blocks, i = [], 0
    for s in op.shapes:
        n = math.prod(s)
        blocks.append(float(torch.linalg.eigvalsh(dense[i:i + n, i:i + n])[-1]))
        i += n
    res = generalized_sharpness(op, op.shapes, "block", generator=torch.Generator().manual_seed(0))
    assert max(blocks) * 0.99 <= res.value <= max(blocks) + 1e-10

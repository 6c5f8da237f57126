"""The stochastic sharpness gap (arXiv:2604.21016v1): its parts against dense and enumerated
oracles on a tiny network, and its claim on hand-made series."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from eosbench.claims.stochastic import sharpness_gap as gap_claim
from eosbench.curvature import LossOperator, noise_variance, sharpness_gap
from eosbench.losses import ce, mse
from eosbench.record import Run
from eosbench.task import ModelSpec, OptimizerSpec, Task


def _tiny(seed=0, n=7, batchnorm=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)]
    if batchnorm:
        layers.insert(1, nn.BatchNorm1d(4))
    model = nn.Sequential(*layers).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (n,))
    return model, x, y


def _flat_loss(model, loss_fn, x, y):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    numels = [p.numel() for _, p in model.named_parameters()]

    def f(theta):
        parts = torch.split(theta, numels)
        params = {k: c.view(s) for k, c, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (x,)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return f, theta


@pytest.mark.parametrize("loss_fn", [mse, ce])
def test_example_derivatives_are_the_per_example_gradients_along_v(loss_fn):
    model, x, y = _tiny()
    op = LossOperator(model, loss_fn, x, y, physical_batch_size=3)
    v = torch.randn(op.dim, dtype=torch.float64)
    got = op.example_derivatives(v)
    want = []
    for i in range(len(x)):
        f, theta = _flat_loss(model, loss_fn, x[i:i + 1], y[i:i + 1])
        want.append(torch.autograd.functional.jacobian(f, theta) @ v)
    torch.testing.assert_close(got, torch.stack(want))
    torch.testing.assert_close(got.mean(), op.gradient() @ v)


def test_example_derivatives_refuse_batchnorm():
    model, x, y = _tiny(batchnorm=True)
    op = LossOperator(model, mse, x, y)
    with pytest.raises(ValueError, match="BatchNorm"):
        op.example_derivatives(torch.zeros(op.dim, dtype=torch.float64))


@pytest.mark.parametrize("b", [1, 2, 3, 5])
def test_noise_variance_matches_every_batch_enumerated(b):
    d = torch.tensor([0.3, -1.2, 2.0, 0.7, 0.0, -0.4], dtype=torch.float64)
    means = torch.tensor([float(d[list(s)].mean()) for s in itertools.combinations(range(6), b)],
                         dtype=torch.float64)  # fmt: skip
    want = float(((means - d.mean()) ** 2).mean())
    assert noise_variance(d, b) == pytest.approx(want, rel=1e-12)
    assert noise_variance(d, 6) == 0.0 and noise_variance(d, None) == 0.0


def test_sharpness_gap_parts_against_dense_oracles():
    """S and u from the dense Hessian; grad S by autograd through eigh; sigma_u^2 by
    enumerating every batch of 2 of the 7 examples."""
    model, x, y = _tiny(seed=3)
    lr, b = 0.05, 2
    f, theta = _flat_loss(model, mse, x, y)
    op = LossOperator(model, mse, x, y)
    r = sharpness_gap(op, lr, b, generator=torch.Generator().manual_seed(0), tol=1e-10,
                      max_products=200)  # fmt: skip

    t = theta.clone().requires_grad_(True)
    H = torch.autograd.functional.hessian(f, t, create_graph=True)
    evals, evecs = torch.linalg.eigh(H)
    (gS,) = torch.autograd.grad(evals[-1], t)
    u = evecs[:, -1].detach()
    g = torch.autograd.functional.jacobian(f, theta)
    perp = gS - u * (u @ gS)
    alpha, beta = float(-(g @ perp)), float(perp @ perp)
    batch = []
    for s in itertools.combinations(range(len(x)), b):
        fb, _ = _flat_loss(model, mse, x[list(s)], y[list(s)])
        batch.append(float(torch.autograd.functional.jacobian(fb, theta) @ u))
    batch = torch.tensor(batch, dtype=torch.float64)
    sigma2 = float(((batch - float(g @ u)) ** 2).mean())

    assert r.sharpness == pytest.approx(float(evals[-1]), rel=1e-8)
    assert r.measured == pytest.approx(2 / lr - float(evals[-1]), rel=1e-8)
    assert r.alpha == pytest.approx(alpha, rel=1e-6, abs=1e-10)
    assert r.beta == pytest.approx(beta, rel=1e-6)
    assert r.sigma2 == pytest.approx(sigma2, rel=1e-8)
    if alpha > 0:
        assert r.predicted == pytest.approx(lr * beta * sigma2 / (4 * alpha), rel=1e-6)
    else:
        assert math.isnan(r.predicted)
    assert r.n_third == 1


TASK = Task(name="gap", model=ModelSpec(name="fc-tanh"),
            optimizer=OptimizerSpec(name="sgd", lr=0.01, batch_size=16))  # fmt: skip


def _run(lam, alpha=2.0, beta=10.0, sigma2=None, steps=range(0, 1000, 50)):
    # sigma2 chosen so that the predicted gap lr*beta*sigma2/(4 alpha) is `want`
    recs = [{"step": s, "sharpness_gap_lambda": lam, "sharpness_gap_alpha": alpha,
             "sharpness_gap_beta": beta, "sharpness_gap_sigma2": sigma2} for s in steps]  # fmt: skip
    return Run.synthetic(recs)


def _sigma2_for(gap, alpha=2.0, beta=10.0, lr=0.01):
    return gap * 4 * alpha / (lr * beta)


def test_gap_claim_passes_when_the_gap_is_as_predicted():
    v = gap_claim(_run(180.0, sigma2=_sigma2_for(20.0)), TASK)
    assert v.verdict == "PASS" and v.parts["ratio"] == pytest.approx(1.0)
    assert v.measured == pytest.approx(20.0) and v.target == pytest.approx(20.0)


@pytest.mark.parametrize("lam,pred", [(180.0, 5.0), (180.0, 50.0), (205.0, 5.0)])
def test_gap_claim_fails_off_the_band_or_above_the_edge(lam, pred):
    v = gap_claim(_run(lam, sigma2=_sigma2_for(pred)), TASK)
    assert v.verdict == "FAIL"


def test_gap_claim_fails_without_sharpening_or_points():
    assert gap_claim(_run(180.0, alpha=-1.0, sigma2=1.0), TASK).verdict == "FAIL"
    short = gap_claim(_run(180.0, sigma2=_sigma2_for(20.0), steps=[0, 900, 950]), TASK)
    assert short.verdict == "FAIL" and not short.parts["evaluable"]

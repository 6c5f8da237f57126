"""Optimizers: torch equivalence, SAM against hand-computed steps, BatchNorm bookkeeping,
stability thresholds on quadratics, preconditioners, validation and the registry.

Oracles: torch.optim's own implementations, gradients from ``torch.autograd.grad``
at explicitly formed points, and the linear dynamics on
``f(x) = 0.5 x^T H x`` (stable below the threshold, divergent above it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from importlib import metadata

import pytest
import torch
from torch import nn
from torch.func import functional_call

from eosbench.errors import UnknownNameError, UserError
from eosbench.optim import (
    OPTIMIZERS,
    SAM,
    OptimizerEntry,
    Threshold,
    ThresholdError,
    build_optimizer,
    call_without_buffer_updates,
    preconditioner,
    sam_edge,
    threshold,
)
from eosbench.task import OptimizerSpec

DT = torch.float64


def _mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, 2)]
    return nn.Sequential(*layers).to(DT)


def _data(seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=DT), torch.randn(n, 2, generator=g, dtype=DT)


def _closure(model: nn.Module, x, y, honour_bn: bool = True, calls: list | None = None):
    """The optimizer contract: zero grads, loss at the current parameters, backward."""

    def closure(update_bn: bool = True) -> torch.Tensor:
        if calls is not None:
            calls.append(update_bn)
        model.zero_grad(set_to_none=True)
        fresh = not update_bn and honour_bn
        out = call_without_buffer_updates(model, x) if fresh else model(x)
        loss = ((out - y) ** 2).mean()
        loss.backward()
        return loss.detach()

    return closure


# ---------------------------------------------------------------------------
# step-for-step equality with torch.optim


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        (OptimizerSpec(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (
            OptimizerSpec(lr=0.1, momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            OptimizerSpec(lr=0.1, momentum=0.5, nesterov=True),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True),
        ),
        (
            OptimizerSpec(name="adam", lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
            lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        ),
        (
            OptimizerSpec(name="rmsprop", lr=0.01, beta2=0.9, momentum=0.5),
            lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, eps=1e-8),
        ),
    ],
)
def test_matches_torch_step_for_step(spec, make):
    x, y = _data()
    ours, ref = _mlp(), _mlp()
    opt_ours, opt_ref = build_optimizer(spec, ours.parameters()), make(ref.parameters())
    assert type(opt_ours) is type(opt_ref)
    for _ in range(5):
        opt_ours.step(_closure(ours, x, y))
        opt_ref.step(_closure(ref, x, y))
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# SAM against hand-computed steps


def _loss_fn(model, x, y):
    def loss(params):
        return ((functional_call(model, params, (x,)) - y) ** 2).mean()

    return loss


def _grad(loss, params):
    ps = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    gs = torch.autograd.grad(loss(ps), list(ps.values()))
    return dict(zip(ps, gs, strict=True))


def _ascent(loss, w, rho, normalized):
    g = _grad(loss, w)
    norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
    scale = rho / norm if normalized else rho
    w_adv = {k: w[k] + scale * g[k] for k in w}
    return _grad(loss, w_adv)  # gradient at the ascent point


@pytest.mark.parametrize(
    ("normalized", "momentum", "wd"), [(True, 0.9, 0.0), (False, 0.0, 0.1), (True, 0.0, 0.1)]
)
def test_sam_sgd_matches_hand_computation(normalized, momentum, wd):
    lr, rho = 0.1, 0.2
    x, y = _data()
    model = _mlp()
    loss = _loss_fn(model, x, y)
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    spec = OptimizerSpec(
        name="sam", lr=lr, rho=rho, normalized=normalized, momentum=momentum, weight_decay=wd
    )
    opt = build_optimizer(spec, model.parameters())
    assert isinstance(opt, SAM)
    buf = None
    for _ in range(3):
        expected_loss = loss(w)
        g_adv = _ascent(loss, w, rho, normalized)
        d = {k: g_adv[k] + wd * w[k] for k in w}  # weight decay enters the base step at w
        buf = d if buf is None else {k: momentum * buf[k] + d[k] for k in w}
        w = {k: w[k] - lr * buf[k] for k in w}
        got_loss = opt.step(_closure(model, x, y))
        torch.testing.assert_close(got_loss, expected_loss, rtol=1e-12, atol=0)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w[k], rtol=1e-10, atol=1e-12)


def test_sam_adam_matches_hand_computation():
    lr, rho, b1, b2, eps = 0.01, 0.05, 0.9, 0.99, 1e-8
    x, y = _data()
    model = _mlp()
    loss = _loss_fn(model, x, y)
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    spec = OptimizerSpec(name="sam", base="adam", lr=lr, rho=rho, beta1=b1, beta2=b2, eps=eps)
    opt = build_optimizer(spec, model.parameters())
    m = {k: torch.zeros_like(v) for k, v in w.items()}
    v = {k: torch.zeros_like(t) for k, t in w.items()}
    for t in range(1, 4):
        g = _ascent(loss, w, rho, normalized=True)
        for k in w:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            w[k] = w[k] - lr * m_hat / (v_hat.sqrt() + eps)
        opt.step(_closure(model, x, y))
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), w[k], rtol=1e-10, atol=1e-12)


def test_sam_calls_closure_twice_and_keeps_last_grad_norm():
    x, y = _data()
    model = _mlp()
    opt = build_optimizer(OptimizerSpec(name="sam", lr=0.1), model.parameters())
    calls: list[bool] = []
    closure = _closure(model, x, y, calls=calls)
    model.zero_grad()
    closure()
    g_norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    calls.clear()
    opt.step(closure)
    assert calls == [True, False]
    torch.testing.assert_close(opt.last_grad_norm, g_norm)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_sam_batchnorm_running_stats_updated_once_per_step():
    x, y = _data()
    model = _mlp(bn=True)
    reference = copy.deepcopy(model)  # one train-mode forward at w: the expected buffers
    reference(x)
    naive = copy.deepcopy(model)
    spec = OptimizerSpec(name="sam", lr=0.1, rho=0.5)
    opt = build_optimizer(spec, model.parameters())
    opt_naive = build_optimizer(spec, naive.parameters())
    opt.step(_closure(model, x, y))
    opt_naive.step(_closure(naive, x, y, honour_bn=False))
    bn, bn_ref, bn_naive = model[1], reference[1], naive[1]
    assert int(bn.num_batches_tracked) == 1 and int(bn_naive.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=0)
    assert not torch.allclose(bn_naive.running_mean, bn_ref.running_mean)
    # the buffer copies do not cut the gradient: parameters move exactly as with the naive closure
    for a, b in zip(model.parameters(), naive.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sam_state_dict_round_trip_and_shared_groups():
    x, y = _data()
    spec = OptimizerSpec(name="sam", base="adam", lr=0.01, rho=0.05)
    a, b = _mlp(), _mlp()
    opt_a = build_optimizer(spec, a.parameters())
    for _ in range(2):
        opt_a.step(_closure(a, x, y))
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(spec, b.parameters())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    assert opt_b.param_groups is opt_b.base_optimizer.param_groups
    opt_a.step(_closure(a, x, y))
    opt_b.step(_closure(b, x, y))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    extra = nn.Parameter(torch.ones(2, dtype=DT))
    opt_a.add_param_group({"params": [extra], "lr": 0.5})
    assert opt_a.param_groups[-1]["rho"] == 0.05 and opt_a.param_groups[-1]["betas"] == (0.9, 0.999)
    assert opt_a.param_groups is opt_a.base_optimizer.param_groups


# ---------------------------------------------------------------------------
# preconditioners: the update is theta -= lr * P^{-1} u


def test_adam_preconditioner_matches_state_and_update():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-3
    x, y = _data()
    model = _mlp()
    opt = build_optimizer(
        OptimizerSpec(name="adam", lr=lr, beta1=b1, beta2=b2, eps=eps), model.parameters()
    )
    assert preconditioner(opt) is None
    for t in range(1, 5):
        before = [p.detach().clone() for p in model.parameters()]
        opt.step(_closure(model, x, y))
        got = preconditioner(opt)
        for p, w0, pc in zip(model.parameters(), before, got, strict=True):
            st = opt.state[p]
            v_hat = st["exp_avg_sq"] / (1 - b2**t)
            by_hand = (1 - b1**t) * (v_hat.sqrt() + eps)
            torch.testing.assert_close(pc, by_hand, rtol=1e-14, atol=0)
            torch.testing.assert_close(
                p.detach(), w0 - lr * st["exp_avg"] / pc, rtol=1e-12, atol=1e-15
            )


def test_rmsprop_and_sam_preconditioners():
    lr = 0.01
    x, y = _data()
    model = _mlp()
    opt = build_optimizer(OptimizerSpec(name="rmsprop", lr=lr, beta2=0.9), model.parameters())
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        opt.step(_closure(model, x, y))
        for p, w0, pc in zip(model.parameters(), before, preconditioner(opt), strict=True):
            torch.testing.assert_close(pc, opt.state[p]["square_avg"].sqrt() + 1e-8)
            torch.testing.assert_close(p.detach(), w0 - lr * p.grad / pc, rtol=1e-12, atol=1e-15)
    sam = build_optimizer(OptimizerSpec(name="sam", base="adam", lr=lr), model.parameters())
    sam.step(_closure(model, x, y))
    assert len(preconditioner(sam)) == len(list(model.parameters()))
    assert preconditioner(build_optimizer(OptimizerSpec(name="sam"), model.parameters())) is None
    assert preconditioner(build_optimizer(OptimizerSpec(), model.parameters())) is None


# ---------------------------------------------------------------------------
# thresholds on quadratics f(x) = 0.5 x^T H x


def _hessian(dim: int, top: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=DT))
    lams = top * torch.tensor([1.0, 0.5, 0.2], dtype=DT)[:dim]
    return q @ torch.diag(lams) @ q.T


def _quadratic_ratio(opt, x, h, steps: int = 2000, watch=slice(None)) -> float:
    """|x_T| / |x_0| on the watched coordinates after ``steps`` steps; stops early once it
    grew by 1e3 (diverged) or shrank by 1e12 (far past the 1e-3 convergence criterion)."""

    def closure(update_bn: bool = True) -> torch.Tensor:
        x.grad = None
        loss = 0.5 * x @ h @ x
        loss.backward()
        return loss.detach()

    n0 = float(x.detach()[watch].norm())
    ratio = 1.0
    for _ in range(steps):
        opt.step(closure)
        ratio = float(x.detach()[watch].norm()) / n0
        if not math.isfinite(ratio) or ratio > 1e3:
            return math.inf
        if ratio < 1e-12:
            break
    return ratio


def _x0(dim: int, scale: float = 1.0) -> nn.Parameter:
    g = torch.Generator().manual_seed(7)
    return nn.Parameter(scale * torch.randn(dim, generator=g, dtype=DT))


QUADRATIC_SPECS = [
    OptimizerSpec(lr=0.1),
    OptimizerSpec(lr=0.1, weight_decay=2.0),
    OptimizerSpec(lr=0.1, momentum=0.5, weight_decay=2.0),
    OptimizerSpec(lr=0.1, momentum=0.9),
    OptimizerSpec(lr=0.1, momentum=0.5),
    OptimizerSpec(lr=0.1, momentum=0.9, nesterov=True),
    OptimizerSpec(lr=0.05, momentum=0.5, nesterov=True),
    OptimizerSpec(name="sam", lr=0.1, rho=0.01, normalized=False),
    OptimizerSpec(name="sam", lr=0.1, rho=0.1, normalized=False),
    OptimizerSpec(name="sam", lr=0.1, rho=1.0, normalized=False),
    OptimizerSpec(name="sam", lr=0.1, rho=0.05, normalized=False, momentum=0.9),
    OptimizerSpec(name="sam", lr=0.1, rho=0.05, normalized=False, weight_decay=2.0),
    OptimizerSpec(name="sam", lr=0.1, rho=0.05, normalized=False, momentum=0.5, nesterov=True),
]


def _id(s: OptimizerSpec) -> str:
    keys = ("lr", "momentum", "nesterov", "weight_decay", "rho")
    return s.name + "-" + ",".join(f"{k}={getattr(s, k)}" for k in keys)


@pytest.mark.parametrize("spec", QUADRATIC_SPECS, ids=_id)
@pytest.mark.parametrize(("factor", "stable"), [(0.95, True), (1.05, False)])
def test_threshold_on_quadratic(spec, factor, stable):
    th = threshold(spec)
    assert th.quantity == "sharpness"
    x = _x0(3)
    ratio = _quadratic_ratio(build_optimizer(spec, [x]), x, _hessian(3, factor * th.value))
    assert ratio < 1e-3 if stable else ratio > 1e3


@pytest.mark.parametrize(("factor", "stable"), [(0.95, True), (1.05, False)])
def test_normalized_sam_edge_depends_on_grad_norm(factor, stable):
    """A flat direction with a large offset holds ||g|| ~ 0.3 over the run; the sharp
    direction then follows lr*lam*(1 + rho*lam/||g||) = 2 (Long & Bartlett 2023)."""
    lr, rho, lam2, x2 = 0.1, 0.05, 1e-4, 3e3
    spec = OptimizerSpec(name="sam", lr=lr, rho=rho, normalized=True)
    edge = threshold(spec, grad_norm=lam2 * x2).value
    assert edge == pytest.approx(sam_edge(lr, rho, 0.3)) and edge < 0.7 * 2 / lr
    h = torch.diag(torch.tensor([factor * edge, lam2], dtype=DT))
    x = nn.Parameter(torch.tensor([1e-6, x2], dtype=DT))
    ratio = _quadratic_ratio(build_optimizer(spec, [x]), x, h, watch=slice(0, 1))
    assert ratio < 1e-3 if stable else ratio > 1e3


def _frozen(opt, p: nn.Parameter, key: str, pc: torch.Tensor, **extra) -> None:
    """Hold the preconditioner at ``pc``: its average starts at pc^2 and, with decay
    1 - 1e-12 (and Adam's bias corrections saturated at step 1e14), stays there."""
    opt.state[p] = {key: pc**2, **extra}


@pytest.mark.parametrize(
    "spec",
    [
        OptimizerSpec(name="adam", lr=0.01, beta1=0.9),
        OptimizerSpec(name="adam", lr=0.003, beta1=0.5),
        OptimizerSpec(name="rmsprop", lr=0.01),
        OptimizerSpec(name="rmsprop", lr=0.01, momentum=0.5),
    ],
    ids=lambda s: f"{s.name}-b1={s.beta1}-mom={s.momentum}",
)
@pytest.mark.parametrize(("factor", "stable"), [(0.95, True), (1.05, False)])
def test_adaptive_threshold_with_frozen_preconditioner(spec, factor, stable):
    """The adaptive threshold bounds lambda_max(P^{-1}H) for a frozen P: Adam reduces to
    m <- b1 m + (1-b1) g, x <- x - lr P^{-1} m.  Run by torch's own Adam/RMSprop."""
    spec = replace(spec, beta2=1 - 1e-12, eps=0.0)
    dim = 3
    x = _x0(dim, scale=1e-6)  # small: (1 - beta2) g^2 stays negligible next to P^2
    opt = build_optimizer(spec, [x])
    pc = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    if spec.name == "adam":
        step = torch.tensor(1e14)
        _frozen(opt, x, "exp_avg_sq", pc, step=step, exp_avg=torch.zeros_like(x))
    else:
        extra = {"momentum_buffer": torch.zeros_like(x)} if spec.momentum else {}
        _frozen(opt, x, "square_avg", pc, step=torch.tensor(0.0), **extra)
    (p_now,) = preconditioner(opt)
    torch.testing.assert_close(p_now, pc)
    th = threshold(spec)
    assert th.quantity == "preconditioned_sharpness"
    h = _hessian(dim, 1.0)
    s = p_now.rsqrt()
    h = h * (factor * th.value / torch.linalg.eigvalsh(s[:, None] * h * s[None, :]).max())
    assert _quadratic_ratio(opt, x, h) < 1e-3 if stable else _quadratic_ratio(opt, x, h) > 1e3


# ---------------------------------------------------------------------------
# threshold formulas and errors


def test_threshold_values():
    assert threshold(OptimizerSpec(lr=0.01)).value == pytest.approx(200.0)
    assert threshold(OptimizerSpec(lr=0.01, momentum=0.9)).value == pytest.approx(380.0)
    nag = threshold(OptimizerSpec(lr=0.01, momentum=0.9, nesterov=True)).value
    assert nag == pytest.approx(3.8 / 2.8 / 0.01)
    adam = threshold(OptimizerSpec(name="adam", lr=0.01))
    assert adam.value == pytest.approx(3800.0) and adam.quantity == "preconditioned_sharpness"
    assert threshold(OptimizerSpec(name="rmsprop", lr=0.01)).value == pytest.approx(200.0)
    for lr, rho in [(0.1, 0.05), (0.01, 1.0), (1.0, 1e-6)]:
        lam = threshold(OptimizerSpec(name="sam", lr=lr, rho=rho, normalized=False)).value
        assert lr * lam * (1 + rho * lam) == pytest.approx(2.0, rel=1e-12)
        assert lam == pytest.approx((-1 + math.sqrt(1 + 8 * rho / lr)) / (2 * rho), rel=1e-9)
    lam = sam_edge(0.1, 0.05, grad_norm=0.3)
    assert 0.1 * lam * (1 + 0.05 * lam / 0.3) == pytest.approx(2.0, rel=1e-12)
    assert sam_edge(0.1, 0.0) == pytest.approx(20.0)
    for th in (threshold(OptimizerSpec()), threshold(OptimizerSpec(name="adam"))):
        assert isinstance(th, Threshold) and th.formula.startswith(r"\frac") and th.reference


def test_thresholds_without_closed_form_raise():
    with pytest.raises(ThresholdError, match="sam_edge") as err:
        threshold(OptimizerSpec(name="sam", normalized=True))
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    spec = OptimizerSpec(name="sam", lr=0.1, rho=0.05, normalized=True)
    assert threshold(spec, grad_norm=2.0).value == pytest.approx(sam_edge(0.1, 0.05, 2.0))
    with pytest.raises(ThresholdError, match="base"):
        threshold(OptimizerSpec(name="sam", base="adam", normalized=False))
    with pytest.raises(ThresholdError, match="weight_decay"):
        threshold(OptimizerSpec(name="adam", weight_decay=1e-4))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"nesterov": True}, "nesterov"),
        ({"name": "sam", "base": "lion"}, "base"),
        ({"name": "adam", "momentum": 0.9}, "beta1"),
        ({"name": "rmsprop", "momentum": 0.5, "nesterov": True}, "nesterov"),
        ({"name": "sam", "base": "adam", "momentum": 0.5}, "beta1"),
        ({"beta2": 1.0}, "beta2"),
        ({"rho": -0.1}, "rho"),
    ],
)
def test_invalid_specs_are_user_errors(changes, match):
    with pytest.raises(UserError, match=match):
        build_optimizer(replace(OptimizerSpec(), **changes), _mlp().parameters())


def test_unknown_optimizer_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'adam'"):
        build_optimizer(OptimizerSpec(name="adma"), _mlp().parameters())


# ---------------------------------------------------------------------------
# third-party optimizers through the entry point group


class _Adagrad(torch.optim.Adagrad):
    def preconditioner(self):
        return [self.state[p]["sum"].sqrt() for g in self.param_groups for p in g["params"]]


class _EntryPoint:
    def __init__(self, name, obj):
        self.name, self.value, self._obj = name, f"thirdparty:{name}", obj

    def load(self):
        return self._obj


def test_entry_point_optimizer(monkeypatch):
    entry = OptimizerEntry(
        build=lambda spec, params: _Adagrad(params, lr=spec.lr),
        threshold=lambda spec: Threshold("sharpness", 1.0 / spec.lr, r"\frac{1}{\eta}", "test"),
    )

    def fake_entry_points(group=None):
        assert group == "eosbench.optimizers"
        return [_EntryPoint("adagrad-test", entry)]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    with OPTIMIZERS.rescanning():
        assert "adagrad-test" in OPTIMIZERS.list()
        spec = OptimizerSpec(name="adagrad-test", lr=0.5)
        model = _mlp()
        opt = build_optimizer(spec, model.parameters())
        assert isinstance(opt, torch.optim.Adagrad)
        x, y = _data()
        opt.step(_closure(model, x, y))
        assert len(preconditioner(opt)) == len(list(model.parameters()))
        assert threshold(spec).value == pytest.approx(2.0)
        with pytest.raises(TypeError, match="preconditioner"):
            preconditioner(torch.optim.Adagrad(model.parameters()))

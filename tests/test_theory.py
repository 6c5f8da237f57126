"""The solvable models of the ``theory`` suite: the ``support`` teacher, the ``deep-linear``
network, clipped SGD, the ``support_norm`` measurement and the ``support_shrinks`` claim.

Oracles: the data set's construction as the authors' code states it (pairs of labels
y +- eps, centred irrelevant columns), the clipped step in closed form on a quadratic, the
Frobenius norms computed by hand, and hand-made series for the claim.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from eosbench.errors import UserError
from eosbench.record import Run
from eosbench.task import (
    ClaimSpec,
    DataSpec,
    MeasurementSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    Task,
)

SUPPORT = DataSpec(name="support", standardize=False)


def test_support_pool_is_the_authors_linear_teacher():
    from eosbench.data import load_dataset

    d = load_dataset(SUPPORT)
    x, y = d.x_train.double().numpy(), d.y_train.double().numpy()
    assert x.shape == (10000, 15) and d.n_classes == 1 and d.input_shape == (15,)
    assert np.array_equal(x[0::2], x[1::2])  # each input twice ...
    noise = (y[0::2] - y[1::2]) / 2  # ... with labels y + eps and y - eps
    assert np.allclose((y[0::2] + y[1::2]) / 2, x[0::2, :5].sum(1), atol=1e-5)
    assert 0.0008 < noise.std() < 0.0012
    assert np.abs(x[:, 5:].mean(0)).max() < 1e-6  # irrelevant columns centred
    assert np.abs(x[:, :5].mean(0)).max() > 1e-3  # the relevant ones not
    assert np.allclose(d.y_test.double().numpy(), d.x_test.double().numpy()[:, :5].sum(1), atol=1e-5)
    assert load_dataset(replace(SUPPORT, n_train=200)).x_train.shape == (200, 15)


def test_deep_linear_has_no_bias_and_kaiming_weights():
    from eosbench.models import build_model

    torch.manual_seed(0)
    m = build_model(ModelSpec(name="deep-linear", width=200), (15,), 1)
    layers = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert [tuple(l.weight.shape) for l in layers] == [(200, 15), (200, 200), (200, 200), (1, 200)]
    assert all(l.bias is None for l in layers)
    w = layers[1].weight.detach()
    assert w.std().item() == pytest.approx((2 / 200) ** 0.5, rel=0.02)
    x = torch.randn(7, 15, dtype=w.dtype)
    dense = x
    for l in layers:
        dense = dense @ l.weight.detach().T
    assert torch.allclose(m(x), dense, atol=1e-5)  # linear: no activation anywhere


class _Quadratic(nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(theta.clone())


@pytest.mark.parametrize("c", [0.5, 100.0])
def test_clipped_sgd_step_is_the_closed_form(c):
    from eosbench.optim import build_optimizer

    h = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    t0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    model = _Quadratic(t0)
    opt = build_optimizer(OptimizerSpec(name="sgd", lr=0.1, clip_norm=c), model.parameters())

    def closure(update_bn=True):
        model.zero_grad(set_to_none=False)
        loss = 0.5 * model.theta @ h @ model.theta
        loss.backward()
        return loss.detach()

    opt.step(closure)
    g = h @ t0
    scale = min(1.0, c / float(g.norm()))
    assert torch.allclose(model.theta.detach(), t0 - 0.1 * scale * g, atol=1e-12)
    assert opt.step_record() == {"grad_norm": pytest.approx(float(g.norm()), rel=1e-12)}


@pytest.mark.parametrize("spec,match", [
    (OptimizerSpec(name="adam", clip_norm=1.0), "only sgd"),
    (OptimizerSpec(name="sgd", clip_norm=0.0), "> 0"),
    (OptimizerSpec(name="sgd", clip_norm=float("inf")), "finite"),
])  # fmt: skip
def test_clip_norm_is_validated(spec, match):
    from eosbench.optim import validate

    with pytest.raises(UserError, match=match):
        validate(spec)


def test_support_norm_measures_the_first_matrix():
    from eosbench.measure import MEASUREMENTS, Context
    from eosbench.models import build_model

    torch.manual_seed(1)
    model = build_model(ModelSpec(name="deep-linear"), (15,), 1)
    m = MEASUREMENTS.get("support_norm")(relevant=5)
    ctx = Context(task=Task(name="t"), step=0, model=model, loss_fn=None, x_train=None,
                  y_train=None, optimizer=None, physical_batch_size=None,
                  generator=torch.Generator())  # fmt: skip
    w = model[1].weight.detach().double().numpy()
    out = m(ctx)
    assert out["irrelevant_norm"] == pytest.approx(np.sqrt((w[:, 5:] ** 2).sum()), rel=1e-6)
    assert out["relevant_norm"] == pytest.approx(np.sqrt((w[:, :5] ** 2).sum()), rel=1e-6)
    assert out["irrelevant_ratio"] == 1.0
    with torch.no_grad():
        model[1].weight[:, 5:] *= 0.5
    assert m(ctx)["irrelevant_ratio"] == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="positive integer"):
        MEASUREMENTS.get("support_norm")(relevant=0)


def _series(end_ratio, n=11):
    return [{"step": 100 * i, "irrelevant_norm": 4.0 * (1 + (end_ratio - 1) * i / (n - 1)),
             "irrelevant_ratio": 1 + (end_ratio - 1) * i / (n - 1), "relevant_norm": 3.0}
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("end,verdict", [(0.6, "PASS"), (0.8, "PASS"), (0.81, "FAIL"), (1.0, "FAIL")])
def test_support_shrinks_on_hand_made_series(end, verdict):
    from eosbench.claims import evaluate

    task = Task(name="t", claims=(ClaimSpec("support_shrinks"),))
    (v,) = evaluate(task, Run.synthetic(_series(end), task=task))
    assert v.verdict == verdict and v.parts["ratio"] == pytest.approx(end)
    assert v.parts["irrelevant_start"] == 4.0


def test_support_shrinks_is_not_evaluable_without_measurements_or_after_divergence():
    from eosbench.claims import evaluate

    task = Task(name="t", claims=(ClaimSpec("support_shrinks"),))
    (v,) = evaluate(task, Run.synthetic(_series(0.5)[:1], task=task))
    assert v.verdict == "FAIL" and v.parts == {"evaluable": False, "why": "too_few_points"}
    (v,) = evaluate(task, Run.synthetic(_series(0.5), status="diverged", diverged_at=500, task=task))
    assert v.verdict == "FAIL" and v.parts["why"] == "diverged"
    with pytest.raises(ValueError, match="max_ratio"):
        evaluate(replace(task, claims=(ClaimSpec("support_shrinks", options=(("max_ratio", 1.5),)),)),
                 Run.synthetic(_series(0.5), task=task))


def test_a_clipped_sgd_run_on_the_support_teacher(tmp_path):
    from eosbench import store
    from eosbench.runner import RunOptions, run

    task = Task(name="support-test", data=replace(SUPPORT, n_train=400),
                model=ModelSpec(name="deep-linear"),
                optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=4, clip_norm=0.5),
                schedule=ScheduleSpec(steps=300, eval_every=0),
                measurements=(MeasurementSpec("support_norm", every=50),),
                claims=(ClaimSpec("support_shrinks", options=(("max_ratio", 0.99),)),))  # fmt: skip
    rdir = run(task, 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    recs = store.read_records(rdir / store.METRICS_FILE)
    assert all("grad_norm" in r for r in recs[:-1])
    ratios = [r["irrelevant_ratio"] for r in recs if "irrelevant_ratio" in r]
    assert len(ratios) == 7 and ratios[0] == 1.0  # steps 0, 50, ..., 250 and the last, 300
    assert ratios[-1] < 1.0


# -- streaming least squares: the risk ODEs, signSGD, the excess risk and its claim ----------

def test_sgd_risk_ode_is_the_closed_form():
    from eosbench.claims.streaming import risk_curve

    eta, t = 0.3, np.linspace(0, 8, 17)
    a, b = 2 * eta - eta**2, eta**2 / 2  # dR/dt = -a R + b (sigma^2 = 1)
    closed = b / a + (0.5 - b / a) * np.exp(-a * t)
    assert np.allclose(risk_curve("sgd", 0.5, t, eta, "gaussian"), closed, rtol=1e-6)


@pytest.mark.parametrize("law", ["gaussian", "t3"])
@pytest.mark.parametrize("R,c", [(0.5, 0.7), (0.1, 2.0), (0.02, 0.3)])
def test_clip_moments_against_monte_carlo(law, R, c):
    from eosbench.claims.streaming import clip_moments, noise_nodes

    rng = np.random.default_rng(0)
    n = 2_000_000
    eps = rng.standard_normal(n) if law == "gaussian" else rng.standard_t(3, n)
    w = rng.standard_normal(n) * np.sqrt(2 * R) - eps
    h, g = clip_moments(R, c, noise_nodes(law))
    assert h == pytest.approx(np.mean(np.abs(w) <= c), abs=2e-3)
    assert g == pytest.approx(np.mean(np.minimum(w * w, c * c)), rel=5e-3)


def test_clip_moments_gaussian_closed_form_and_no_gain_from_clipping():
    """erf forms for Gaussian noise, and H_c^2 / G_c <= 1 (clipping cannot help, the clipped
    SGD paper's statement for Gaussian noise), approaching 1 as c grows."""
    from scipy.special import erf

    from eosbench.claims.streaming import clip_moments, noise_nodes

    eps = noise_nodes("gaussian")
    for R in (0.02, 0.3, 1.0):
        s2 = 2 * R + 1
        for c in (0.1, 0.5, 1.0, 3.0, 20.0):
            u = c / np.sqrt(s2)
            h_ref = erf(u / np.sqrt(2))
            g_ref = s2 * (h_ref - np.sqrt(2 / np.pi) * u * np.exp(-u * u / 2)) + c * c * (1 - h_ref)
            h, g = clip_moments(R, c, eps)
            # the midpoint quantile rule cuts the noise's tails beyond F^-1(1/(2n)): O(c^2 / n)
            assert h == pytest.approx(h_ref, rel=2e-4) and g == pytest.approx(g_ref, rel=1e-3)
            assert h * h / (g / s2) <= 1 + 1e-3
    h, g = clip_moments(0.3, 50.0, eps)
    assert h == pytest.approx(1.0) and g == pytest.approx(2 * 0.3 + 1, rel=1e-3)


def test_sign_rate_gaussian_closed_form():
    from eosbench.claims.streaming import density_at_zero, noise_nodes, risk_rate

    for R in (0.05, 0.5, 2.0):
        assert density_at_zero(R, noise_nodes("gaussian")) == pytest.approx(
            1 / np.sqrt(2 * np.pi * (2 * R + 1)), rel=1e-4)  # fmt: skip
        ref = -(4 * 0.3 / np.pi) * R / np.sqrt(2 * R + 1) + 0.3**2 / 2
        assert risk_rate("sign", R, 0.3, "gaussian") == pytest.approx(ref, rel=1e-4)


def test_signsgd_step_and_registration():
    from eosbench.optim import OPTIMIZERS, ThresholdError, build_optimizer, threshold

    model = _Quadratic(torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64))
    opt = build_optimizer(OptimizerSpec(name="signsgd", lr=0.01), model.parameters())
    model.theta.grad = torch.tensor([3.0, -1e-9, 0.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(model.theta.detach(), torch.tensor([0.99, -2.0 + 0.01, 0.0], dtype=torch.float64))
    assert "signsgd" in OPTIMIZERS.list()
    t = threshold(OptimizerSpec(name="signsgd", lr=0.01))  # full batch: the normalized l_inf edge
    assert (t.quantity, t.value) == ("sharpness_linf_normalized", pytest.approx(200.0))
    with pytest.raises(ThresholdError, match="with batches"):
        threshold(OptimizerSpec(name="signsgd", batch_size=1))


def test_stream_data_and_excess_risk():
    from eosbench.data import load_dataset
    from eosbench.data.synthetic import STREAM_D, stream_target
    from eosbench.measure import MEASUREMENTS, Context
    from eosbench.models import build_model

    theta = stream_target()
    assert theta.shape == (STREAM_D,) and np.linalg.norm(theta) == pytest.approx(1.0)
    spec = DataSpec(name="stream-t3", standardize=False, n_train=2000, n_test=10)
    d = load_dataset(spec, seed=0)
    x, y = d.x_train.double().numpy(), d.y_train.double().numpy()
    noise = y - x @ theta
    assert abs(x.var() - 1) < 0.01 and 2.0 < noise.var() < 5.0  # t3: variance 3, heavy tailed
    # drawn per run seed: the same seed gives the same stream, another seed another stream
    assert load_dataset(spec, seed=0).checksum == d.checksum
    other = load_dataset(spec, seed=1)
    assert other.checksum != d.checksum and not torch.equal(other.x_train, d.x_train)
    with pytest.raises(UserError, match="drawn per run"):
        load_dataset(spec)
    model = build_model(ModelSpec(name="linear"), (STREAM_D,), 1)
    assert float(model[1].weight.detach().abs().sum()) == 0.0
    task = Task(name="t", data=DataSpec(name="stream-t3"), model=ModelSpec(name="linear"))
    m = MEASUREMENTS.get("excess_risk")()
    m.check(task, None)
    ctx = Context(task=task, step=0, model=model, loss_fn=None, x_train=None, y_train=None,
                  optimizer=None, physical_batch_size=None, generator=torch.Generator())  # fmt: skip
    assert m(ctx)["risk"] == pytest.approx(0.5)
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(2 * theta).reshape(1, -1))
    assert m(ctx)["risk"] == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="stream"):
        m.check(Task(name="t"), None)


def _stream_task(opt="sgd", eta=0.2, c=None, law="gaussian", claims=()):
    from eosbench.suites.theory import STREAM_REF  # noqa: F401  (the suite's conventions)

    d = 1000
    return Task(name="s", data=DataSpec(name=f"stream-{law}", standardize=False),
                model=ModelSpec(name="linear"),
                optimizer=OptimizerSpec(name=opt, lr=eta / d, batch_size=1,
                                        clip_norm=None if c is None else c * d**0.5),
                claims=tuple(claims))  # fmt: skip


def _ode_series(rule, eta, law, c=None, scale=1.0):
    from eosbench.claims.streaming import risk_curve

    steps = np.arange(0, 8001, 50)
    r = risk_curve(rule, 0.5, steps / 1000, eta, law, c)
    return [{"step": int(s), "risk": float(v * (scale if s else 1.0))} for s, v in zip(steps, r, strict=True)]


@pytest.mark.parametrize("opt,c,rule", [("sgd", None, "sgd"), ("sgd", 1.5, "clipped"),
                                        ("signsgd", None, "sign")])  # fmt: skip
def test_risk_follows_ode_on_its_own_curve_and_not_on_another(opt, c, rule):
    from eosbench.claims import evaluate

    claims = (ClaimSpec("risk_follows_ode"), ClaimSpec("risk_follows_ode", options=(("rule", "sgd"),)))
    task = _stream_task(opt, 0.25, c, "t3", claims)
    own, vs_sgd = evaluate(task, Run.synthetic(_ode_series(rule, 0.25, "t3", c), task=task))
    assert own.verdict == "PASS" and own.parts["worst"] < 1e-5
    assert (vs_sgd.verdict == "PASS") == (rule == "sgd")
    (off,) = evaluate(task, Run.synthetic(_ode_series(rule, 0.25, "t3", c, scale=1.15), task=task))[:1]
    assert off.verdict == "FAIL" and off.parts["worst"] == pytest.approx(0.15, rel=1e-3)


def test_risk_follows_ode_refuses_what_it_cannot_judge():
    from eosbench.claims import evaluate

    task = _stream_task(claims=(ClaimSpec("risk_follows_ode"),))
    (v,) = evaluate(task, Run.synthetic(_ode_series("sgd", 0.2, "gaussian")[:5], task=task))
    assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"
    with pytest.raises(ValueError, match="not a streaming task"):
        evaluate(replace(task, data=DataSpec(name="support")), Run.synthetic([{"step": 0}]))
    with pytest.raises(ValueError, match="clip_norm"):
        bad = replace(task, claims=(ClaimSpec("risk_follows_ode", options=(("rule", "clipped"),)),))
        evaluate(bad, Run.synthetic(_ode_series("sgd", 0.2, "gaussian"), task=bad))


@pytest.mark.parametrize("change,match", [
    (dict(schedule=ScheduleSpec(lr_schedule="cosine")), "lr_schedule='cosine'"),
    (dict(optimizer=OptimizerSpec(name="signsgd", lr=2.5e-4, batch_size=1, weight_decay=0.1)),
     "weight_decay=0.1"),
    (dict(optimizer=OptimizerSpec(name="sgd", lr=2e-4, batch_size=1, momentum=0.5)), "momentum"),
    (dict(optimizer=OptimizerSpec(name="adam", lr=2e-4, batch_size=1)), "optimizer 'adam'"),
    (dict(data=DataSpec(name="stream-gaussian")), "standardize=false"),
    (dict(data=DataSpec(name="stream-gaussian", standardize=False, n_train=500)), "one pass"),
    (dict(claims=(ClaimSpec("risk_follows_ode", options=(("rule", "adam"),)),)), "rule must be"),
    (dict(claims=(ClaimSpec("risk_follows_ode", options=(("tol", -1.0),)),)), "tol=-1.0"),
    (dict(claims=(ClaimSpec("risk_follows_ode", options=(("band", 1.0),)),)), "band"),
])  # fmt: skip
def test_preflight_refuses_a_streaming_task_its_ode_cannot_judge(change, match):
    """The claim's check runs in preflight (one line, before anything is written): the ODEs
    are for plain SGD, clipped SGD and signSGD, one pass over raw N(0, I) inputs."""
    from eosbench.preflight import check_task

    task = _stream_task(claims=(ClaimSpec("risk_follows_ode"),))
    check_task(task, 0)
    with pytest.raises(UserError, match=match):
        check_task(replace(task, **change), 0)


@pytest.mark.parametrize("opt,c,law", [("signsgd", None, "gaussian"), ("sgd", 1.5, "t3")])
def test_a_short_streaming_run_is_judged_against_its_ode(tmp_path, opt, c, law):
    """A real run of signSGD (Gaussian noise) and of clipped SGD (t3 noise, where clipping
    binds) follows its own ODE; the clipped run is far from plain SGD's."""
    from eosbench.claims import evaluate
    from eosbench.runner import RunOptions, run
    from eosbench.store import load_run

    claims = (ClaimSpec("risk_follows_ode"), ClaimSpec("risk_follows_ode", options=(("rule", "sgd"),)))
    task = replace(_stream_task(opt, 0.25, c, law, claims=claims),
                   schedule=ScheduleSpec(steps=3000, eval_every=0),
                   measurements=(MeasurementSpec("excess_risk", every=50),))  # fmt: skip
    r = load_run(run(task, 0, RunOptions(out=tmp_path, device="cpu", progress=False)))
    steps, risk = r.values("risk")
    assert steps[0] == 0 and risk[0] == pytest.approx(0.5) and risk[-1] < 0.5
    own, vs_sgd = evaluate(task, r)
    assert own.parts["evaluable"] and own.parts["worst"] < 0.2  # 51 points at t >= 0.5
    assert vs_sgd.parts["worst"] > 2 * own.parts["worst"]


# -- second-order regression -------------------------------------------------------------------

def _quadratic(name):
    from eosbench.models import build_model

    torch.manual_seed(0)
    return build_model(ModelSpec(name=name, width=24), (6,), 3).double()


def test_second_order_model_is_exactly_quadratic_in_its_parameters():
    """Finite differences of f(theta + s h) in s: the second is constant (h^T Q h), the third 0;
    the linearized model's second difference is 0."""
    x = torch.randn(5, 6, dtype=torch.float64)
    for name, curved in (("quadratic", True), ("quadratic-linearized", False)):
        m = _quadratic(name)
        t0 = m.theta.detach().clone()
        h = torch.randn_like(t0)

        def f(s, m=m, t0=t0, h=h):
            with torch.no_grad():
                m.theta.copy_(t0 + s * h)
                return m(x).clone()

        v = [f(s) for s in range(4)]
        d2a, d2b = v[2] - 2 * v[1] + v[0], v[3] - 2 * v[2] + v[1]
        assert torch.allclose(d2a, d2b, atol=1e-10)  # third difference 0
        assert (d2a.abs().max() > 1e-3) == curved


def test_linearized_model_has_a_constant_loss_hessian_and_the_full_one_does_not():
    from eosbench.curvature import LossOperator
    from eosbench.losses import mse

    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    for name, constant in (("quadratic-linearized", True), ("quadratic", False)):
        m = _quadratic(name)
        dense = []
        for shift in (0.0, 0.7):
            with torch.no_grad():
                m.theta.add_(shift)
            op = LossOperator(m, mse, x, y)
            dense.append(op.matmat(torch.eye(24, dtype=torch.float64)))
        assert torch.allclose(dense[0], dense[1], atol=1e-10) == constant


# -- deep equilibrium networks -----------------------------------------------------------------

def _deq(family="gaussian", **opts):
    from eosbench.models import build_model
    from eosbench.task import options

    torch.manual_seed(0)
    spec = ModelSpec(name=f"deq-{family}", width=12, options=options(**opts))
    return build_model(spec, (6,), 3).double()


def test_deq_init_families():
    from eosbench.models.deq import init_matrix

    torch.manual_seed(0)
    q = init_matrix("orthogonal", 50, 0.7).double()
    assert torch.allclose(q.T @ q, 0.49 * torch.eye(50, dtype=q.dtype), atol=1e-5)
    s = init_matrix("symmetric", 400, 1.0)
    assert torch.equal(s, s.T)
    off = s[~torch.eye(400, dtype=torch.bool)]
    assert off.var().item() == pytest.approx(1 / 400, rel=0.02)
    g = init_matrix("gaussian", 400, 1.0)
    assert g.var().item() == pytest.approx(1 / 400, rel=0.02) and not torch.equal(g, g.T)


def test_deq_solves_its_fixed_point_and_its_implicit_gradient_matches_finite_differences():
    m = _deq(w_scale=0.8, tol=1e-13, max_iter=1000)
    x = torch.randn(4, 6, dtype=torch.float64)
    m(x).sum().backward()
    assert m.last["residual"] <= 1e-13
    with torch.no_grad():
        u = m.inject(x)
        z = torch.zeros_like(u)
        for _ in range(m.last["iterations"]):
            z = torch.tanh(z @ m.w.T + u)
        assert torch.allclose(torch.tanh(z @ m.w.T + u), z, atol=1e-12)  # a fixed point
    for p, idx in ((m.w, (1, 2)), (m.inject.weight, (3, 4)), (m.head.bias, (0,))):
        e, h = torch.zeros_like(p), 1e-6
        e[idx] = h
        with torch.no_grad():
            p += e
            a = m(x).sum()
            p -= 2 * e
            b = m(x).sum()
            p += e
        assert p.grad[idx].item() == pytest.approx(((a - b) / (2 * h)).item(), rel=1e-6, abs=1e-10)


def test_model_options_are_only_for_models_that_declare_them():
    from eosbench.errors import OverrideError
    from eosbench.models import build_model
    from eosbench.task import options

    with pytest.raises(OverrideError, match="no option model.options.w_scale"):
        build_model(ModelSpec(name="fc-tanh", options=options(w_scale=2.0)), (64,), 10)
    with pytest.raises(OverrideError, match="it has: max_iter, tol, w_scale"):
        build_model(ModelSpec(name="deq-gaussian", options=options(scale=2.0)), (64,), 10)


def test_deq_solver_measurement_and_deq_trains_claim():
    from eosbench.claims import evaluate
    from eosbench.measure import MEASUREMENTS, Context

    m = _deq(w_scale=0.5)
    meas = MEASUREMENTS.get("deq_solver")()
    task = Task(name="t", model=ModelSpec(name="deq-gaussian"), claims=(ClaimSpec("deq_trains"),))
    meas.check(task, None)
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 3, (9,))
    ctx = Context(task=task, step=0, model=m, loss_fn=nn.functional.cross_entropy, x_train=x,
                  y_train=y, optimizer=None, physical_batch_size=None,
                  generator=torch.Generator())  # fmt: skip
    out = meas(ctx)
    assert 1 <= out["deq_iterations"] <= 500 and out["deq_residual"] <= 1e-4
    assert 1 <= out["deq_backward_iterations"] <= 500 and out["deq_backward_residual"] <= 1e-4
    assert all(p.grad is None for p in m.parameters())  # the measurement leaves .grad alone
    chunked = meas(replace(ctx, physical_batch_size=4))  # three chunks, each solved on its own
    assert chunked["deq_residual"] <= 1e-4 and chunked["deq_iterations"] <= out["deq_iterations"] + 5
    with pytest.raises(ValueError, match="deq"):
        meas.check(Task(name="t"), None)

    def series(end, fwd=1e-5, bwd=1e-5):
        return [{"step": s, "train_loss": 2.3 + (end - 2.3) * s / 100, "deq_residual": fwd,
                 "deq_backward_residual": bwd} for s in range(0, 101, 10)]  # fmt: skip

    assert evaluate(task, Run.synthetic(series(0.05), task=task))[0].verdict == "PASS"
    assert evaluate(task, Run.synthetic(series(0.5), task=task))[0].verdict == "FAIL"
    for fwd, bwd in ((3e-4, 1e-5), (1e-5, 3e-4)):  # fits, but through an unconverged solve
        (v,) = evaluate(task, Run.synthetic(series(0.05, fwd, bwd), task=task))
        assert v.verdict == "FAIL" and v.parts["fits"] and not v.parts["converged"]
    no_solver = [{k: v for k, v in r.items() if "residual" not in k} for r in series(0.05)]
    (v,) = evaluate(task, Run.synthetic(no_solver, task=task))
    assert v.verdict == "FAIL" and v.parts["why"] == "no_solver_record"
    (v,) = evaluate(task, Run.synthetic(series(0.05), status="diverged", diverged_at=40, task=task))
    assert v.verdict == "FAIL" and v.parts["why"] == "diverged"


def test_deq_refuses_second_derivatives():
    """The implicit gradient is first order: a double backward raises, the curvature operator
    refuses the model, and preflight refuses a curvature measurement on a deq-* task."""
    from eosbench.curvature import LossOperator
    from eosbench.preflight import check_task

    m = _deq(w_scale=0.5)
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 3, (9,))
    loss = nn.functional.cross_entropy(m(x), y)
    with pytest.raises(RuntimeError, match="first order only"):
        torch.autograd.grad(loss, list(m.parameters()), create_graph=True)
    with pytest.raises(ValueError, match="second_order = False"):
        LossOperator(m, nn.functional.cross_entropy, x, y)
    for name in ("sharpness", "trace", "batch_sharpness", "preconditioned_sharpness"):
        task = Task(name="t", model=ModelSpec(name="deq-gaussian"),
                    measurements=(MeasurementSpec(name),))  # fmt: skip
        with pytest.raises(UserError, match="needs the loss Hessian"):
            check_task(task, 0)
    check_task(replace(task, measurements=(MeasurementSpec("deq_solver"),)), 0)


@pytest.mark.parametrize("opt,match", [(("tol", 0.0), "tol=0.0"), (("max_iter", 0), "max_iter=0"),
                                       (("max_iter", 2.5), "max_iter=2.5"),
                                       (("w_scale", float("nan")), "w_scale=nan")])  # fmt: skip
def test_deq_option_values_are_validated(opt, match):
    from eosbench.errors import OverrideError
    from eosbench.models import build_model

    with pytest.raises(OverrideError, match=match):
        build_model(ModelSpec(name="deq-gaussian", options=(opt,)), (6,), 3)


def test_model_options_can_be_set_from_the_command_line():
    from eosbench.errors import OverrideError
    from eosbench.task import apply_overrides

    task = Task(name="t", model=ModelSpec(name="deq-orthogonal"))
    out = apply_overrides(task, ["model.options.w_scale=2", "model.options.max_iter=80"])
    assert out.model.options == (("max_iter", 80), ("w_scale", 2.0))
    assert apply_overrides(out, ["model.options.w_scale=0.5"]).model.options == (
        ("max_iter", 80), ("w_scale", 0.5))  # fmt: skip
    with pytest.raises(OverrideError, match="has no option 'scale' \\(it has: max_iter, tol"):
        apply_overrides(task, ["model.options.scale=2"])
    with pytest.raises(OverrideError, match="expected int"):
        apply_overrides(task, ["model.options.max_iter=2.5"])
    with pytest.raises(OverrideError, match="it has none"):
        apply_overrides(Task(name="t"), ["model.options.w_scale=2"])


def test_support_norm_of_a_zero_initialized_model_has_no_ratio():
    from eosbench.measure import MEASUREMENTS, Context

    model = nn.Sequential(nn.Linear(8, 3, bias=False))
    nn.init.zeros_(model[0].weight)
    ctx = Context(task=Task(name="t"), step=0, model=model, loss_fn=None, x_train=None,
                  y_train=None, optimizer=None, physical_batch_size=None,
                  generator=torch.Generator())  # fmt: skip
    out = MEASUREMENTS.get("support_norm")()(ctx)
    assert out["irrelevant_norm"] == 0.0 and np.isnan(out["irrelevant_ratio"])


def test_theory_figure_draws_streaming_runs_with_and_without_an_ode(tmp_path):
    """A streaming run of an optimizer with no risk ODE (Adam), under a short task name, is
    drawn without a dashed curve; the figure is written."""
    from eosbench.report.theory import write_theory_figures

    sgd = _stream_task("sgd", 0.2)
    adam = replace(sgd, name="adam-stream", optimizer=OptimizerSpec(name="adam", lr=1e-3, batch_size=1))
    support = Task(name="support/deep-linear/gd", data=DataSpec(name="support", standardize=False),
                   model=ModelSpec(name="deep-linear"))  # fmt: skip
    runs = [Run.synthetic(_ode_series("sgd", 0.2, "gaussian"), task=sgd),
            Run.synthetic(_ode_series("sgd", 0.2, "gaussian", scale=1.3), task=adam),
            Run.synthetic([{"step": s, "irrelevant_ratio": 1 - s / 400} for s in range(0, 101, 10)],
                          task=support)]  # fmt: skip
    files = write_theory_figures(runs, tmp_path)
    assert sorted(p.name for p in files) == ["theory.pdf", "theory.png"]
    assert write_theory_figures(runs[2:], tmp_path / "s") and not write_theory_figures([], tmp_path / "n")

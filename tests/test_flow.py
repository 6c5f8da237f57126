"""Oracle tests of the third-order curvature products, the SDCP solver, the central-flow
integrator and its claims.

Oracles: finite differences of the dense-Hessian eigenvalues of tiny float64 networks (MSE
and cross-entropy), a loss whose third derivative is known in closed form, KKT conditions of
the semidefinite complementarity problem, and the solvable self-stabilization model
:math:`L(x, y) = \\tfrac12(a + y)x^2 - cy`, whose central flow at the edge has
:math:`\\sigma^2 = 2c` exactly (Damian et al. 2023's reduced model with :math:`\\alpha = c`,
:math:`\\beta = 1`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eosbench import flow
from eosbench.claims import evaluate
from eosbench.curvature import LossOperator
from eosbench.flow import FlowOptions, solve_sdcp
from eosbench.record import Run
from eosbench.task import ClaimSpec, OptimizerSpec, Task, options


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mse(o, t):
    return 0.5 * ((o - t) ** 2).sum(1).mean()


def _net(loss: str):
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    if loss == "mse":
        return m, _mse, x, torch.randn(30, 3, generator=g, dtype=torch.float64)
    return m, F.cross_entropy, x, torch.randint(0, 3, (30,), generator=g)


def _dense(op: LossOperator) -> torch.Tensor:
    H = op.matmat(torch.eye(op.dim, dtype=op.dtype))
    return 0.5 * (H + H.T)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_curvature_gradients_are_finite_differences_of_the_eigenvalues(loss):
    m, fn, x, y = _net(loss)
    op = LossOperator(m, fn, x, y, physical_batch_size=7)  # 5 chunks, the last partial
    lam, V = torch.linalg.eigh(_dense(op))
    U = V[:, [-1, -2]]  # the top two eigenvectors (simple eigenvalues here)
    assert float(lam[-1] - lam[-2]) > 1e-3 and float(lam[-2] - lam[-3]) > 1e-3
    D = op.curvature_gradients(U)
    assert D.shape == (2, 2, op.dim) and op.n_third == 3
    theta = op.params()
    d = torch.randn(op.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-5

    def at(t):
        return op.at(t)

    plus, minus = _dense(at(theta + eps * d)), _dense(at(theta - eps * d))
    for i, col in ((0, -1), (1, -2)):  # d/de lambda_i = grad S_i . d
        fd = (torch.linalg.eigvalsh(plus)[col] - torch.linalg.eigvalsh(minus)[col]) / (2 * eps)
        assert float(D[i, i] @ d) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    fd = (U.T @ plus @ U - U.T @ minus @ U) / (2 * eps)  # the off-diagonal pair, u fixed
    assert torch.allclose(D @ d, fd, rtol=1e-6, atol=1e-9)
    whole = LossOperator(m, fn, x, y).curvature_gradients(U)  # chunking changes nothing
    assert torch.allclose(whole, D, rtol=1e-10, atol=1e-12)


def _normed(kind: str):
    """Tiny float64 networks through eosbench's written-out LayerNorm (affine parameters moved
    off their initial 1 and 0) or GroupNorm, and a miniature ViT (patch embedding, attention,
    LayerNorm, GELU) on 8x8 images."""
    from eosbench.models import build_model
    from eosbench.models.norms import LayerNorm
    from eosbench.task import ModelSpec

    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    if kind == "vit":
        m = build_model(ModelSpec(name="vit", width=8, depth=1), (3, 8, 8), 3).double()
        x = torch.randn(10, 3, 8, 8, generator=g, dtype=torch.float64)
    else:
        norm = {"layernorm": LayerNorm(6), "fused-layernorm": nn.LayerNorm(6),
                "groupnorm": nn.GroupNorm(2, 6), "batchnorm": nn.BatchNorm1d(6)}[kind]
        m = nn.Sequential(nn.Linear(4, 6), norm, nn.Tanh(), nn.Linear(6, 3)).double()
        with torch.no_grad():
            for p in norm.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    return m, _mse, x, torch.randn(10, 3, generator=g, dtype=torch.float64)


def _fd_third(op: LossOperator, U: torch.Tensor, d: torch.Tensor, eps: float = 1e-4):
    """Central differences along ``d`` of ``U^T H U``, from Hessian-vector products."""
    theta = op.params()
    plus, minus = (op.at(theta + s * eps * d).matmat(U) for s in (1, -1))
    return (U.T @ plus - U.T @ minus) / (2 * eps)


@pytest.mark.parametrize("kind", ["layernorm", "groupnorm", "vit"])
def test_curvature_gradients_through_normalization_and_attention(kind):
    m, fn, x, y = _normed(kind)
    op = LossOperator(m, fn, x, y, physical_batch_size=4)
    if kind != "vit":  # the HVPs the differences are taken of: differences of gradients
        theta = op.params()
        cols = [(op.at(theta + 1e-6 * e).gradient() - op.at(theta - 1e-6 * e).gradient()) / 2e-6
                for e in torch.eye(op.dim, dtype=torch.float64)]
        torch.testing.assert_close(_dense(op), torch.stack(cols), rtol=1e-6, atol=1e-7)
    g = torch.Generator().manual_seed(4)
    U = torch.linalg.qr(torch.randn(op.dim, 2, generator=g, dtype=torch.float64))[0]
    d = torch.randn(op.dim, generator=g, dtype=torch.float64)
    d /= d.norm()  # central differences converge as eps^2: 1.5e-7 relative on the ViT
    D = op.curvature_gradients(U)
    fd = _fd_third(op, U, d)
    assert float((D @ d - fd).abs().max()) <= 1e-6 * float(fd.abs().max())


@pytest.mark.parametrize("kind", ["fused-layernorm", "batchnorm"])
def test_curvature_gradients_refuse_fused_normalization_kernels(kind):
    m, fn, x, y = _normed(kind)
    with pytest.raises(ValueError, match="fused normalization kernel"):
        op = LossOperator(m, fn, x, y)
        op.curvature_gradients(torch.eye(op.dim, 1, dtype=torch.float64))


def test_pytorch_fused_layer_norm_third_derivatives_are_still_wrong():
    """The reason for the refusal above, kept as a canary: the same third-order product that
    the operator computes, through the fused kernel, against the written-out LayerNorm and
    central differences.  If a PyTorch upgrade fixes the kernel this fails, and the refusal
    (eosbench.models.norms.FUSED) can be lifted."""
    from torch.func import grad, jvp

    m, fn, x, y = _normed("fused-layernorm")
    op = LossOperator(m, fn, x, y)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(op.dim, generator=g, dtype=torch.float64)
    d = torch.randn(op.dim, generator=g, dtype=torch.float64)
    d /= d.norm()

    def quad(t):
        return u @ jvp(lambda s: op._grad_fn(s, x, y), (t,), (u,))[1]

    fused = float(grad(quad)(op.params()) @ d)
    fd = float(_fd_third(op, u[:, None], d)[0, 0])
    assert abs(fused - fd) > 0.05 * abs(fd)


class _Cubic(nn.Module):
    """Outputs the parameter vector for every example: with the loss below,
    L = sum_j c_j w_j^3 / 6 + mean(x) . w^2 / 2, so D^3 L[u, v] = c * u * v exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return self.w.expand(len(x), -1)


def test_curvature_gradients_closed_form_third_derivative():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    c = torch.randn(5, generator=g, dtype=torch.float64)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)

    def loss(o, xb):
        return ((c * o**3).sum(1) / 6 + (xb * o**2).sum(1) / 2).mean()

    op = LossOperator(_Cubic(w), loss, x, x, physical_batch_size=3)
    U = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))[0]
    D = op.curvature_gradients(U)
    for i in range(3):
        for j in range(3):
            assert torch.allclose(D[i, j], c * U[:, i] * U[:, j], atol=1e-12)


def test_curvature_gradients_reject_ggn_and_bad_shapes():
    m, fn, x, y = _net("mse")
    with pytest.raises(ValueError, match="unpreconditioned Hessian"):
        LossOperator(m, fn, x, y, kind="ggn").curvature_gradients(torch.eye(69, 1).double())
    with pytest.raises(ValueError, match="expected a"):
        LossOperator(m, fn, x, y).curvature_gradients(torch.ones(3, 1).double())


# --- the semidefinite complementarity problem ------------------------------------------------


def _kkt(A, b, X):
    k = b.shape[0]
    F_ = 0.5 * (A.reshape(k * k, k * k) @ X.reshape(-1)).reshape(k, k) + b
    F_ = 0.5 * (F_ + F_.T)
    return np.linalg.eigvalsh(X).min(), np.linalg.eigvalsh(F_).min(), float(np.sum(X * F_))


def test_sdcp_one_eigenvalue_is_the_closed_form():
    A = np.array([[[[4.0]]]])
    X, res = solve_sdcp(A, np.array([[-3.0]]))
    assert X[0, 0] == pytest.approx(2 * 3.0 / 4.0) and res < 1e-12  # sigma^2 = 2<-g,h>/|h|^2
    X, _ = solve_sdcp(A, np.array([[1.0]]))  # the flow already lowers S: no Sigma
    assert X[0, 0] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_sdcp_solution_satisfies_complementarity(seed):
    rng = np.random.default_rng(seed)
    k = 3
    h = rng.normal(size=(k, k, 12))
    h = 0.5 * (h + h.transpose(1, 0, 2))  # h_ij = h_ji, as the curvature gradients
    flat = h.reshape(k * k, -1)
    A = (flat @ flat.T).reshape(k, k, k, k)
    b = rng.normal(size=(k, k))
    b = 0.5 * (b + b.T)
    X, res = solve_sdcp(A, b)
    x_min, f_min, gap = _kkt(A, b, X)
    assert res < 1e-8
    assert x_min > -1e-9 and f_min > -1e-6 and abs(gap) < 1e-6


# --- the solvable model: L(x, y) = (a + y) x^2 / 2 - c y ---------------------------------------


class _Valley(nn.Module):
    """Parameters (x_1..x_m, y_1..y_m); the loss below is sum_i (a_i + y_i) x_i^2 / 2 - c_i y_i
    + k y_i^2 / 2 (independent of the data): m decoupled self-stabilization models."""

    def __init__(self, x, y):
        super().__init__()
        self.x = nn.Parameter(x)
        self.y = nn.Parameter(y)

    def forward(self, inputs):
        return torch.cat([self.x, self.y]).expand(len(inputs), -1)


def _valley(a, c, x0, y0, k=0.0):
    a, c = torch.tensor(a, dtype=torch.float64), torch.tensor(c, dtype=torch.float64)
    m = len(a)

    def loss(o, _):
        x, y = o[:, :m], o[:, m:]
        return ((a + y) * x**2 / 2 - c * y + k * y**2 / 2).sum(1).mean()

    model = _Valley(torch.tensor(x0, dtype=torch.float64), torch.tensor(y0, dtype=torch.float64))
    dummy = torch.zeros(2, 1, dtype=torch.float64)
    return model, loss, LossOperator(model, loss, dummy, dummy)


def _integrate(op, theta, o, steps):
    state = flow.start(theta, 0)
    recs = []
    for t in range(steps):
        recs.append(flow.advance(op, state, o, t, theta, torch.Generator().manual_seed(0)))
    return state, recs


def test_central_flow_pins_the_edge_with_sigma2_2c():
    lr, a, c = 0.5, 3.0, 0.05  # 2/lr = 4; the sharpness a + y rises at rate lr * c per step
    _, _, op = _valley([a], [c], [0.0], [0.0])
    o = FlowOptions(lr=lr, k=2, tol=1e-10)
    state, recs = _integrate(op, op.params(), o, 80)
    sharp = np.array([r["cf_sharpness"] for r in recs])
    assert sharp[0] == pytest.approx(3.0)
    onset = int(np.argmax(sharp >= 0.975 * 4))
    assert 30 < onset < 45  # gradient flow below the edge: S = 3 + lr c t reaches 3.9 at t = 36
    assert np.all(np.abs(sharp[onset + 3:] / 4 - 1) < 1e-6)  # then pinned at 2/lr
    tail = recs[-1]
    assert tail["cf_sigma2"] == pytest.approx(2 * c, rel=1e-6)  # sigma^2 = 2 alpha / beta
    assert tail["cf_delta2"] == pytest.approx(2 * c, rel=1e-6)
    assert tail["cf_pred_loss"] == pytest.approx(tail["cf_loss"] + 2 * c / lr, rel=1e-6)
    assert tail["cf_pred_grad_sq"] == pytest.approx(tail["cf_grad_sq"] + 16 * 2 * c, rel=1e-6)
    # gradient flow keeps sharpening past 2/lr and needs more substeps for it
    gf = [r["gf_sharpness"] for r in recs if "gf_sharpness" in r]
    assert gf[-1] > 4.5 and tail["gf_substeps"] >= 5


def test_central_flow_several_critical_eigenvalues():
    lr = 0.5
    _, _, op = _valley([3.8, 3.7], [0.05, 0.02], [0.0, 0.0], [0.0, 0.0])
    o = FlowOptions(lr=lr, k=3, tol=1e-10)
    _, recs = _integrate(op, op.params(), o, 60)
    tail = recs[-1]
    assert tail["cf_critical"] == 2
    assert tail["cf_sharpness"] == pytest.approx(4.0, rel=1e-6)
    assert tail["cf_eig2"] == pytest.approx(4.0, rel=1e-6)
    assert tail["cf_trace"] == pytest.approx(2 * (0.05 + 0.02), rel=1e-5)  # diag(2c1, 2c2)


def test_gd_oscillates_about_the_flow_with_variance_sigma2():
    """GD on the solvable model with a damping term k y^2/2, started near the edge: its
    period-2 oscillation about the central flow settles at x^2 = sigma^2 = 2(c - k y*), y* =
    2/lr - a (the 2-cycle of the map and the flow's sigma^2 from its sigma^2 formula), and the
    cf_oscillation claim passes on the resulting series while its gradient-flow control
    fails."""
    lr, a, c, k = 0.5, 3.99, 0.01, 0.2
    model, loss, op = _valley([a], [c], [0.13], [0.0], k=k)
    o = FlowOptions(lr=lr, k=1, tol=1e-8)
    state = flow.start(op.params(), 0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    dummy = torch.zeros(2, 1, dtype=torch.float64)
    recs = []
    for t in range(160):
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        rec = {"step": t, "sharpness": float(a + model.y.detach()[0])}
        rec.update(flow.advance(op, state, o, t, theta, torch.Generator().manual_seed(0)))
        opt.zero_grad()
        value = loss(model(dummy), None)
        value.backward()
        rec["train_loss"] = float(value.detach())
        opt.step()
        recs.append(rec)
    sigma2 = 2 * (c - k * (2 / lr - a))
    assert recs[-1]["cf_sigma2"] == pytest.approx(sigma2, rel=1e-6)
    x = np.array([r["ss_x"] for r in recs[80:]])
    assert np.mean(x * x) == pytest.approx(sigma2, rel=0.02)
    # (gradient flow differs from the central flow only along y, orthogonal to u, so its
    # controls are not informative on this model: they are checked on the series below)
    task = Task(name="valley", optimizer=OptimizerSpec(lr=lr), claims=(
        ClaimSpec("cf_oscillation", options=options(window=(0.5, 1.0))),
        ClaimSpec("cf_pins_sharpness")))
    verdicts = evaluate(task, Run.synthetic(recs, task=task))
    assert [v.verdict for v in verdicts] == ["PASS", "PASS"], verdicts
    assert verdicts[0].parts["flips"] == 1.0


def test_flow_options_are_checked():
    for bad in (dict(substeps=0), dict(critical=1.5), dict(k=0), dict(gf_probe=True)):
        with pytest.raises(ValueError, match="central flow"):
            FlowOptions(lr=0.1, **bad)
    with pytest.raises(ValueError, match="lr must be positive"):
        FlowOptions(lr=-1.0)


# --- claims on hand-made series ----------------------------------------------------------------


def _series(track_cf: bool, n: int = 400, t_star: int = 100):
    """GD reaches 2/lr=10 at t_star; after it the distances to the two flows diverge, and the
    loss oscillates about a prediction."""
    recs = []
    for t in range(n):
        r = {"step": t, "sharpness": 8 + 2.5 * t / t_star if t < t_star else 10.05,
             "train_loss": 1.0 / (1 + t / 50)}
        if t >= 90:
            grow = (t - 90) / 100
            near, far = 0.01 + 0.001 * grow, 0.01 + 0.2 * grow
            r.update(cf_loss=1.0 / (1 + t / 50), cf_pred_loss=1.0 / (1 + t / 50),
                     gf_loss=0.7 / (1 + t / 50), cf_sharpness=10.0, cf_sigma2=1e-4,
                     cf_delta2=1e-4, ss_x=(-1) ** t * 1e-2, ss_x_gf=0.05 + 1e-3 * t,
                     cf_dist=near if track_cf else far, gf_dist=far if track_cf else near)
            if t % 10 == 0:
                r["gf_sharpness"] = 10 + 0.02 * (t - 90)
        recs.append(r)
    return recs


def _flow_task():
    from eosbench.suites.flow import DIGITS_CLAIMS

    return Task(name="flow", optimizer=OptimizerSpec(lr=0.2),
                claims=tuple(c for c in DIGITS_CLAIMS if c.name != "eos"))


def test_flow_claims_pass_and_their_controls_fail_on_a_tracking_series():
    task = _flow_task()
    verdicts = evaluate(task, Run.synthetic(_series(True), task=task))
    assert [(v.claim, v.verdict) for v in verdicts] == [
        ("cf_tracks", "PASS"), ("cf_tracks[gradient flow]", "FAIL"),
        ("cf_predicts_loss", "PASS"), ("cf_predicts_loss[gradient flow]", "FAIL"),
        ("cf_pins_sharpness", "PASS"), ("cf_pins_sharpness[gradient flow]", "FAIL"),
        ("cf_oscillation", "PASS"), ("cf_oscillation[gradient flow]", "FAIL"),
    ]
    assert all(v.as_expected for v in verdicts)
    assert verdicts[0].parts["close"] and verdicts[0].parts["apart"]


def test_cf_tracks_fails_when_gd_follows_gradient_flow():
    task = _flow_task()
    v = evaluate(task, Run.synthetic(_series(False), task=task))[0]
    assert v.verdict == "FAIL" and v.parts["close"] is False


def test_flow_claims_not_evaluable_without_the_edge_or_the_flow():
    task = _flow_task()
    below = [{"step": t, "sharpness": 5.0, "train_loss": 1.0} for t in range(50)]
    for v in evaluate(task, Run.synthetic(below, task=task)):
        assert v.verdict == "FAIL" and v.parts["evaluable"] is False
    edge = [{"step": t, "sharpness": 10.5, "train_loss": 1.0} for t in range(50)]
    v = evaluate(task, Run.synthetic(edge, task=task))[0]
    assert "never started" in v.detail and v.parts["why"] == "never_reached"


def test_moving_average_averages_a_period_two_oscillation_exactly():
    from eosbench.claims.flow import moving_average

    v = 1.0 + 0.3 * (-1.0) ** np.arange(40)
    ma = moving_average(v, 20)
    assert np.allclose(ma[10:31], 1.0) and np.isnan(ma[:10]).all()


# --- the measurement in a real run -------------------------------------------------------------


def _digits_task(**optimizer):
    from eosbench.suites import TASKS
    from eosbench.task import DataSpec, ModelSpec, ScheduleSpec

    base = TASKS.get("digits/fc-tanh/mse/gd/lr=0.2/central-flow")
    return replace(base, name="flow-test", data=DataSpec(name="digits", n_train=100),
                   model=ModelSpec(name="fc-tanh", width=16),
                   optimizer=OptimizerSpec(name="sgd", **{"lr": 0.85, **optimizer}),
                   schedule=ScheduleSpec(steps=12, eval_every=0))


def test_central_flow_measurement_in_a_run(tmp_path: Path):
    from eosbench import store
    from eosbench.runner import RunOptions, run

    rdir = run(_digits_task(), 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    recs = store.read_records(rdir / store.METRICS_FILE)
    started = [r for r in recs if "cf_start" in r]
    assert len(started) == 1
    after = [r for r in recs if r["step"] > started[0]["step"]]
    assert after and all("cf_loss" in r and "gf_loss" in r and "ss_x" in r for r in after)
    assert all("sharpness" in r and "grad_sq" in r for r in recs)
    assert all(r["cf_sharpness"] <= 2 / 0.85 * 1.01 for r in after)


@pytest.mark.parametrize("measurement", ["central_flow", "smoothed_sharpness"])
@pytest.mark.parametrize("bad,match", [(dict(momentum=0.9), "momentum"),
                                       (dict(batch_size=10), "batch_size=10")])
def test_gd_trajectory_measurements_need_plain_gd(tmp_path: Path, measurement, bad, match):
    """Refused by the preflight, as one line, before anything is written."""
    from eosbench.errors import UserError
    from eosbench.runner import RunOptions, run
    from eosbench.task import MeasurementSpec

    task = replace(_digits_task(**bad), measurements=(MeasurementSpec(measurement, every=1),))
    with pytest.raises(UserError, match=f"{measurement} needs plain GD.*{match}"):
        run(task, 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    assert not any(tmp_path.iterdir())


def test_central_flow_refuses_batchnorm(tmp_path: Path):
    from eosbench.errors import UserError
    from eosbench.runner import RunOptions, run

    task = _digits_task()
    task = replace(task, model=replace(task.model, batchnorm=True))
    with pytest.raises(UserError, match="fused BatchNorm"):
        run(task, 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    assert not any(tmp_path.iterdir())


def test_central_flow_needs_every_step(tmp_path: Path):
    from eosbench.errors import UserError
    from eosbench.runner import RunOptions, run
    from eosbench.task import MeasurementSpec

    task = _digits_task()
    task = replace(task, measurements=(MeasurementSpec("central_flow", every=2),))
    with pytest.raises(UserError, match="every step"):
        run(task, 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    assert not any(tmp_path.iterdir())


def test_central_flow_run_resumes_bitwise(tmp_path: Path, monkeypatch):
    """The flows' state lives in the measurement cache, which a checkpoint holds: a run
    stopped at step 6 (as by SIGTERM) and resumed gives the series of an uninterrupted run."""
    from eosbench import checkpoint, store
    from eosbench.flow import central_flow
    from eosbench.measure import MEASUREMENTS
    from eosbench.runner import RunOptions, run

    task = replace(_digits_task(), schedule=replace(_digits_task().schedule, steps=12))
    opts = dict(device="cpu", progress=False, checkpoint_every=4)

    def series(rdir):
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")}
                for r in store.read_records(rdir / store.METRICS_FILE)]

    reference = series(run(task, 0, RunOptions(out=tmp_path / "ref", **opts)))
    stop = {"now": False}

    def stopping(**kw):
        inner = central_flow(**kw)

        def measure(ctx):
            stop["now"] = stop["now"] or ctx.step == 6
            return inner(ctx)

        return measure

    class Flag(checkpoint.TermFlag):
        set = property(lambda self: stop["now"], lambda self, v: None)

    monkeypatch.setattr(checkpoint, "TermFlag", Flag)
    with MEASUREMENTS.temporarily("central_flow", stopping), pytest.raises(KeyboardInterrupt):
        run(task, 0, RunOptions(out=tmp_path / "cut", **opts))
    monkeypatch.undo()
    rdir = run(task, 0, RunOptions(out=tmp_path / "cut", **opts))
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "completed" and meta["resumed_from_step"] == 7
    assert series(rdir) == reference


# --- the sharpness at the smoothed GD iterate --------------------------------------------------


def test_smoothed_sharpness_is_the_dense_top_eigenvalue_at_the_smoothed_gd_iterate():
    """Against GD's next two iterates taken by torch.optim.SGD on a copy of the network and
    the dense Hessian (torch.autograd.functional.hessian) at (w_t + 2 w_{t+1} + w_{t+2})/4;
    the network itself is left as it was."""
    from copy import deepcopy

    from torch.func import functional_call

    from eosbench.measure import MEASUREMENTS, Context

    model, loss, x, y = _net("mse")
    lr = 0.4
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def flat(m):
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    twin = deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    ws = [flat(twin)]
    for _ in range(2):
        opt.zero_grad()
        loss(twin(x), y).backward()
        opt.step()
        ws.append(flat(twin))
    bar = (ws[0] + 2 * ws[1] + ws[2]) / 4

    def f(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {k: p.view(s) for k, p, s in zip(names, parts, shapes, strict=True)}
        return loss(functional_call(model, params, (x,)), y)

    top = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, bar))[-1])
    at_w = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, ws[0]))[-1])
    before = flat(model)
    ctx = Context(Task(name="t", optimizer=OptimizerSpec(lr=lr)), 0, model, loss, x, y, None,
                  None, torch.Generator().manual_seed(0))  # fmt: skip
    out = MEASUREMENTS.get("smoothed_sharpness")(tol=1e-9)(ctx)
    assert out["smoothed_sharpness"] == pytest.approx(top, rel=1e-7)
    assert abs(top - at_w) > 1e-3 * at_w  # the iterates moved: not the sharpness at w_t
    assert torch.equal(flat(model), before)
    assert out["smoothed_sharpness_hvps"] >= 1 and out["smoothed_sharpness_seconds"] > 0


def test_smoothed_sharpness_reads_the_center_of_a_period_two_orbit():
    """f(x) = a x^2/2 + b x^4/4 at GD's period-2 orbit x = +-x*, lr (a + b x*^2) = 2: the
    iterates' sharpness a + 3b x*^2 is 2.5 x 2/lr here, the smoothed iterate is the orbit's
    center x = 0, where the sharpness is a."""
    from eosbench.measure import MEASUREMENTS, Context

    a, b, lr = 1.0, 2.0, 0.5  # 2/lr = 4: x*^2 = (4 - a) / b = 1.5
    xs = float(np.sqrt((2 / lr - a) / b))

    class Quartic(nn.Module):
        def __init__(self):
            super().__init__()
            self.x = nn.Parameter(torch.tensor([xs], dtype=torch.float64))

        def forward(self, inputs):
            return self.x.expand(len(inputs), -1)

    def loss(o, _):
        return (a * o**2 / 2 + b * o**4 / 4).sum(1).mean()

    dummy = torch.zeros(2, 1, dtype=torch.float64)
    ctx = Context(Task(name="t", optimizer=OptimizerSpec(lr=lr)), 0, Quartic(), loss, dummy,
                  dummy, None, None, torch.Generator().manual_seed(0))  # fmt: skip
    iterate = MEASUREMENTS.get("sharpness")(tol=1e-10)(ctx)["sharpness"]
    smoothed = MEASUREMENTS.get("smoothed_sharpness")(tol=1e-10)(ctx)["smoothed_sharpness"]
    assert iterate == pytest.approx(a + 3 * b * xs**2, rel=1e-9)  # 10 = 2.5 x 2/lr
    assert smoothed == pytest.approx(a, rel=1e-9)


def _above_edge(smoothed: float, n: int = 200, t_star: int = 40):
    """2/lr = 10: the iterates' sharpness rises to 13 by t_star and stays there; the smoothed
    iterate's is ``smoothed``."""
    return [{"step": t, "sharpness": 6 + 7 * t / t_star if t < t_star else 13.0,
             "smoothed_sharpness": smoothed if t >= t_star else 5.0,
             "train_loss": 1.0 / (1 + t / 50) + 0.01 * (t % 2)} for t in range(0, n, 5)]


def test_cf_smoothed_edge_passes_where_only_the_smoothed_iterate_is_at_the_edge():
    task = Task(name="vit", optimizer=OptimizerSpec(lr=0.2), claims=(
        ClaimSpec("eos"), ClaimSpec("cf_smoothed_edge")))
    eos, edge = evaluate(task, Run.synthetic(_above_edge(10.2), task=task))
    assert eos.verdict == "FAIL" and eos.parts["hovers"] is False  # 1.3 x 2/lr
    assert edge.verdict == "PASS" and edge.parts["ratio"] == pytest.approx(1.02)
    assert edge.parts["iterate_ratio"] == pytest.approx(1.3) and edge.parts["t_star"] == 25
    high = evaluate(task, Run.synthetic(_above_edge(12.0), task=task))[1]
    assert high.verdict == "FAIL" and high.parts["hovers"] is False
    low = [{**r, "sharpness": 6.0} for r in _above_edge(10.0)]  # the small-step control
    never = evaluate(task, Run.synthetic(low, task=task))[1]
    assert never.verdict == "FAIL" and never.parts["why"] == "never_reached"

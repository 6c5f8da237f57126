"""Step-size tuners (eosbench.optim.tuners) on quadratics with a known Hessian, in the runner,
and the tuner claims (eosbench.claims.tuners) on hand-made series.

Oracles: closed forms on L(theta) = 1/2 theta^T H theta (Polyak: theta^T H theta /
(2 theta^T H^2 theta); greedy: g^T g / g^T H g; CDAT sigma = 2 along an eigenvector:
eta lambda = 2); Armijo's accepted step against its own condition; torch.optim.Adam's step
for the Adam direction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from eosbench.errors import UserError
from eosbench.optim import ThresholdError, build_optimizer, label, preconditioner, threshold
from eosbench.task import OptimizerSpec

DT = torch.float64
H = torch.diag(torch.tensor([10.0, 3.0, 1.0, 0.5], dtype=DT))
Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=DT))
H_ROT = Q @ H @ Q.T  # not diagonal: the rules must not depend on the basis


class Quadratic(nn.Module):
    def __init__(self, theta0: torch.Tensor):
        super().__init__()
        self.theta = nn.Parameter(theta0.clone())


def quadratic(theta0, hess=H_ROT, calls=None):
    model = Quadratic(theta0)

    def closure(update_bn: bool = True) -> torch.Tensor:
        if calls is not None:
            calls.append(update_bn)
        model.zero_grad(set_to_none=False)
        loss = 0.5 * model.theta @ hess @ model.theta
        loss.backward()
        return loss.detach()

    return model, closure


THETA0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)


def test_polyak_step_is_the_closed_form():
    model, closure = quadratic(THETA0)
    opt = build_optimizer(OptimizerSpec(name="polyak", lr=100.0), model.parameters())
    opt.step(closure)
    t, hg = THETA0, H_ROT @ THETA0
    eta = float(t @ H_ROT @ t / (2 * hg @ hg))
    assert opt.last_lr == pytest.approx(eta, rel=1e-12)
    assert torch.allclose(model.theta.detach(), t - eta * hg, atol=1e-12)
    assert opt.last_cost == {"lr_evaluations": 0.0}


def test_polyak_cap_and_loss_star():
    model, closure = quadratic(THETA0)
    opt = build_optimizer(OptimizerSpec(name="polyak", lr=1e-3), model.parameters())
    opt.step(closure)
    assert opt.last_lr == 1e-3
    model, closure = quadratic(THETA0)
    spec = OptimizerSpec(name="polyak", lr=100.0, polyak_loss_star=1e6)  # above the loss
    opt = build_optimizer(spec, model.parameters())
    opt.step(closure)
    assert opt.last_lr == 0.0
    assert torch.equal(model.theta.detach(), THETA0)


def test_greedy_step_is_the_closed_form():
    calls = []
    model, closure = quadratic(THETA0, calls=calls)
    opt = build_optimizer(OptimizerSpec(name="cdat", lr=100.0, cdat_sigma=1.0), model.parameters())
    opt.step(closure)
    g = H_ROT @ THETA0
    eta = float(g @ g / (g @ H_ROT @ g))
    assert opt.last_lr == pytest.approx(eta, rel=1e-8)  # finite differences: exact on quadratics
    assert torch.allclose(model.theta.detach(), THETA0 - opt.last_lr * g, atol=1e-12)
    assert opt.last_cost == {"lr_evaluations": 2.0, "lr_hvps": 1.0}
    assert calls == [True, False, False]  # the extra gradients leave BatchNorm buffers alone


@pytest.mark.parametrize("eig", [0, 1, 3])
def test_cdat_on_edge_puts_eta_lambda_at_two_along_an_eigenvector(eig):
    lam, v = torch.linalg.eigh(H_ROT)
    model, closure = quadratic(3.0 * v[:, eig])
    opt = build_optimizer(OptimizerSpec(name="cdat", lr=100.0, cdat_sigma=2.0), model.parameters())
    opt.step(closure)
    assert opt.last_lr * float(lam[eig]) == pytest.approx(2.0, rel=1e-8)
    # at the edge: the iterate flips sign along that eigenvector, the loss is unchanged
    assert torch.allclose(model.theta.detach(), -3.0 * v[:, eig], atol=1e-8)


def test_cdat_top_direction_from_a_generic_start_settles_at_the_edge():
    """GD with sigma = 2 from a generic point: the other directions shrink, the iterate turns
    to the top eigenvector and eta * lambda_max -> 2 (the edge)."""
    model, closure = quadratic(THETA0, hess=H)
    opt = build_optimizer(OptimizerSpec(name="cdat", lr=100.0, cdat_sigma=2.0), model.parameters())
    for _ in range(60):
        opt.step(closure)
    assert opt.last_lr * 10.0 == pytest.approx(2.0, rel=1e-3)


def test_cdat_ema_smooths_numerator_and_denominator():
    spec = OptimizerSpec(name="cdat", lr=100.0, cdat_sigma=1.0, cdat_ema=0.5)
    model, closure = quadratic(THETA0)
    opt = build_optimizer(spec, model.parameters())
    ns, ds, etas = [], [], []
    for _ in range(3):
        t = model.theta.detach().clone()
        g = H_ROT @ t
        ns.append(float(g @ g))
        ds.append(float(g @ H_ROT @ g) + spec.eps)
        opt.step(closure)
        etas.append(opt.last_lr)
    n_bar = d_bar = 0.0
    for n, d, eta in zip(ns, ds, etas, strict=True):
        n_bar, d_bar = 0.5 * n_bar + 0.5 * n, 0.5 * d_bar + 0.5 * d
        assert eta == pytest.approx(n_bar / d_bar, rel=1e-7)


def test_armijo_accepted_step_satisfies_its_condition_and_the_previous_trial_does_not():
    calls = []
    model, closure = quadratic(THETA0, calls=calls)
    spec = OptimizerSpec(name="armijo", lr=10.0, armijo_c=0.3, armijo_backtrack=0.5)
    opt = build_optimizer(spec, model.parameters())

    def f(t):
        return float(0.5 * t @ H_ROT @ t)

    for step in range(5):
        t = model.theta.detach().clone()
        g = H_ROT @ t
        calls.clear()
        opt.step(closure)
        eta = opt.last_lr
        assert f(t - eta * g) <= f(t) - 0.3 * eta * float(g @ g) + 1e-12
        first = 10.0 if step == 0 else min(2.0 * prev, 10.0)  # noqa: F821 (set below)
        if eta < first:  # backtracked: the trial before it failed the condition
            assert f(t - 2 * eta * g) > f(t) - 0.3 * 2 * eta * float(g @ g)
        assert torch.allclose(model.theta.detach(), t - eta * g, atol=1e-12)
        trials = round(math.log(eta / first) / math.log(0.5)) + 1
        assert opt.last_cost == {"lr_evaluations": float(trials)}
        assert len(calls) == trials + 1
        prev = eta  # noqa: F841


def test_armijo_on_a_quadratic_accepts_below_two_one_minus_c_over_kappa():
    model, closure = quadratic(THETA0)
    opt = build_optimizer(OptimizerSpec(name="armijo", lr=50.0), model.parameters())
    g = H_ROT @ THETA0
    kappa = float(g @ H_ROT @ g / (g @ g))
    opt.step(closure)
    assert 0.9 * 2 * 0.9 / kappa < opt.last_lr <= 2 * 0.9 / kappa


def test_adam_direction_is_torch_adams_unit_step_and_its_preconditioner():
    spec = OptimizerSpec(name="cdat", base="adam", lr=100.0, beta1=0.8, beta2=0.99, eps=1e-6)
    model, closure = quadratic(THETA0)
    ref, ref_closure = quadratic(THETA0)
    opt = build_optimizer(spec, model.parameters())
    torch_adam = torch.optim.Adam(ref.parameters(), lr=1.0, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(4):
        before = ref.theta.detach().clone()
        torch_adam.step(ref_closure)
        u_ref = ref.theta.detach() - before
        g = [ref.theta.grad.clone()]
        # the same gradient sequence: move ours to torch's iterate first
        with torch.no_grad():
            model.theta.copy_(before)
        opt.scalars["steps"] += 1
        u = opt.direction(opt.params(), g)
        assert torch.allclose(u[0], u_ref, atol=1e-12)
        with torch.no_grad():
            model.theta.copy_(ref.theta)
    p = preconditioner(opt)[0]
    assert torch.allclose(-u[0] * p, opt.state[model.theta]["exp_avg"], atol=1e-12)


def test_heavy_ball_direction_matches_torch_sgd():
    spec = OptimizerSpec(name="cdat", lr=100.0, momentum=0.5)
    model, _ = quadratic(THETA0)
    opt = build_optimizer(spec, model.parameters())
    buf = None
    for k in range(3):
        g = torch.full((4,), float(k + 1), dtype=DT)
        buf = g.clone() if buf is None else 0.5 * buf + g
        assert torch.equal(opt.direction(opt.params(), [g])[0], -buf)
    assert preconditioner(opt) is None


def test_state_dict_resumes_bitwise():
    spec = OptimizerSpec(name="cdat", base="adam", lr=100.0, cdat_sigma=2.0, cdat_ema=0.9)
    model, closure = quadratic(THETA0)
    opt = build_optimizer(spec, model.parameters())
    for _ in range(3):
        opt.step(closure)
    state = copy.deepcopy(opt.state_dict())  # as through a checkpoint file
    twin, twin_closure = quadratic(model.theta.detach())
    opt2 = build_optimizer(spec, twin.parameters())
    opt2.load_state_dict(state)
    for _ in range(3):
        opt.step(closure)
        opt2.step(twin_closure)
        assert opt.last_lr == opt2.last_lr
    assert torch.equal(model.theta, twin.theta)


def test_registered_labels_thresholds_and_validation():
    for name in ("armijo", "polyak", "cdat"):
        spec = OptimizerSpec(name=name)
        with pytest.raises(ThresholdError):
            threshold(spec)
        assert label(spec)
    assert "CDAT(Adam)" in label(OptimizerSpec(name="cdat", base="adam", cdat_sigma=2.0))
    assert "greedy(GD)" in label(OptimizerSpec(name="cdat"))
    params = [nn.Parameter(torch.zeros(2))]
    bad = [
        OptimizerSpec(name="armijo", armijo_c=1.0),
        OptimizerSpec(name="armijo", armijo_backtrack=0.0),
        OptimizerSpec(name="armijo", armijo_growth=0.5),
        OptimizerSpec(name="polyak", base="adam"),
        OptimizerSpec(name="armijo", momentum=0.9),
        OptimizerSpec(name="cdat", cdat_sigma=0.0),
        OptimizerSpec(name="cdat", cdat_ema=1.0),
        OptimizerSpec(name="cdat", weight_decay=0.1),
        OptimizerSpec(name="polyak", polyak_loss_star=math.inf),
    ]
    for spec in bad:
        with pytest.raises(UserError):
            build_optimizer(spec, params)


def test_existing_optimizers_expose_no_tuned_step():
    params = [nn.Parameter(torch.zeros(2))]
    for spec in (OptimizerSpec(), OptimizerSpec(name="adam"), OptimizerSpec(name="sam")):
        assert getattr(build_optimizer(spec, params), "last_lr", None) is None


# ---------------------------------------------------------------------------
# in the runner: the recorded step and its cost


def test_runner_records_the_tuned_step_and_counts_its_gradients(tmp_path):
    from eosbench import store
    from eosbench.runner import RunOptions, run
    from eosbench.suites import TASKS
    from eosbench.task import MeasurementSpec, ScheduleSpec, apply_overrides

    gd = TASKS.get("digits/fc-tanh/mse/gd/lr=0.1")
    small = apply_overrides(gd, ["data.n_train=200", "model.width=32"])
    small = replace(small, schedule=ScheduleSpec(steps=6, eval_every=0),
                    measurements=(MeasurementSpec("sharpness", every=3),))  # fmt: skip
    opts = RunOptions(out=tmp_path, device="cpu", progress=False)
    for spec, extra in (
        (OptimizerSpec(name="cdat", lr=10.0, cdat_sigma=2.0), 2),
        (OptimizerSpec(name="polyak", lr=10.0), 0),
        (OptimizerSpec(name="armijo", lr=10.0), None),
    ):
        task = replace(small, name="test/" + spec.name, optimizer=spec)
        rdir = run(task, 0, opts)
        meta = store.read_run_json(rdir)
        recs = [r for r in store.read_records(rdir / store.METRICS_FILE) if "train_loss" in r]
        steps = [r for r in recs if "lr" in r]
        assert len(steps) == 6 and all(r["lr"] > 0 for r in steps)
        total = sum(r["lr_evaluations"] for r in steps)
        if extra is not None:
            assert total == 6 * extra
        assert meta["gradient_evaluations"] == 6 + total
        if spec.name == "cdat":
            assert all(r["lr_hvps"] == 1 for r in steps)


# ---------------------------------------------------------------------------
# the claims on hand-made series


def _series(e_of_t, q_of_t, steps=1000, every=20, lr=True):
    """Records with lr every step and the sharpness every ``every`` steps: e = lr * q / 2."""
    recs = []
    for t in range(steps):
        q = q_of_t(t)
        r = {"step": t, "train_loss": 1.0 / (1 + t)}
        if lr:
            r["lr"] = 2 * e_of_t(t) / q
        if t % every == 0:
            r["sharpness"] = q
        recs.append(r)
    recs.append({"step": steps, "sharpness": q_of_t(steps), "train_loss": 1.0 / (1 + steps)})
    return recs


def _task(name="cdat"):
    from eosbench.task import Task

    return Task(name="synthetic", optimizer=OptimizerSpec(name=name, lr=10.0))


def test_normalized_sharpness_pairs_lr_and_sharpness_of_the_same_step():
    from eosbench.claims.tuners import normalized_sharpness
    from eosbench.record import Run

    run = Run.synthetic(_series(lambda t: 0.5, lambda t: 10.0 + t, steps=100))
    steps, e, q = normalized_sharpness(run, _task())
    assert list(steps) == list(range(0, 100, 20))  # not the final record: no step taken there
    assert e == pytest.approx([0.5] * 5)
    constant = Run.synthetic(_series(lambda t: 0.5, lambda t: 10.0, steps=100, lr=False))
    _, e, _ = normalized_sharpness(constant, _task("sgd"))  # optimizer.lr = 10: e = 10*10/2
    assert e == pytest.approx([50.0] * 6)


def test_normalized_sharpness_averages_an_alternating_step_over_the_span():
    from eosbench.claims.tuners import normalized_sharpness
    from eosbench.record import Run
    from eosbench.task import MeasurementSpec, Task

    recs = [{"step": t, "lr": 0.4 if t % 2 == 0 else 0.1, **({"sharpness": 10.0} if t % 20 == 0 else {})}
            for t in range(100)]  # fmt: skip
    task = Task(name="synthetic", measurements=(MeasurementSpec("sharpness", every=20),))
    run = Run.synthetic(recs, task=task)
    assert normalized_sharpness(run, task, span=1)[1] == pytest.approx([2.0] * 5)  # long steps only
    assert normalized_sharpness(run, task, span=2)[1] == pytest.approx([1.25] * 5)
    assert normalized_sharpness(run, task)[1] == pytest.approx([1.25] * 5)  # span = every = 20
    with pytest.raises(ValueError):
        normalized_sharpness(run, task, span=0)


def test_below_edge_passes_for_an_undershooting_sharpening_run_and_fails_otherwise():
    from eosbench.claims.tuners import tuner_below_edge
    from eosbench.record import Run

    greedy = Run.synthetic(_series(lambda t: 0.55, lambda t: 5.0 + 0.01 * t))
    v = tuner_below_edge(greedy, _task(), hi=0.8, rise=0.1)
    assert v.verdict == "PASS" and v.parts["below"] and v.parts["rising"]
    assert v.measured == pytest.approx(0.55)
    at_edge = Run.synthetic(_series(lambda t: 1.0 + 0.05 * (-1) ** (t // 20), lambda t: 5.0 + 0.01 * t))
    v = tuner_below_edge(at_edge, _task(), hi=0.8, rise=0.1)
    assert v.verdict == "FAIL" and not v.parts["below"] and v.parts["rising"]
    flat = Run.synthetic(_series(lambda t: 0.55, lambda t: 5.0))
    v = tuner_below_edge(flat, _task(), hi=0.8, rise=0.1)
    assert v.verdict == "FAIL" and v.parts["below"] and not v.parts["rising"]
    from eosbench.claims.tuners import tuner_sharpening

    assert tuner_sharpening(at_edge, _task(), rise=0.1).verdict == "PASS"  # rising at the edge
    v = tuner_sharpening(flat, _task(), rise=0.1)
    assert v.verdict == "FAIL" and v.measured == pytest.approx(1.0)


def test_at_edge_band_and_not_evaluable_cases():
    from eosbench.claims.tuners import tuner_at_edge, tuner_below_edge
    from eosbench.record import Run

    hover = Run.synthetic(_series(lambda t: 1.0 + 0.05 * (-1) ** (t // 20), lambda t: 5.0))
    v = tuner_at_edge(hover, _task(), band=(0.9, 1.1))
    assert v.verdict == "PASS" and v.parts["in_band"] and v.target == 1.0
    greedy = Run.synthetic(_series(lambda t: 0.5, lambda t: 5.0))
    assert tuner_at_edge(greedy, _task(), band=(0.9, 1.1)).verdict == "FAIL"
    diverged = Run.synthetic(_series(lambda t: 1.0, lambda t: 5.0), status="diverged", diverged_at=7)
    v = tuner_at_edge(diverged, _task())
    assert v.verdict == "FAIL" and v.parts == {"evaluable": False, "why": "diverged"}
    bare = Run.synthetic([{"step": 0, "train_loss": 1.0}])
    from eosbench.claims.tuners import tuner_sharpening

    for claim in (tuner_at_edge, tuner_below_edge, tuner_sharpening):
        v = claim(bare, _task())
        assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"
    with pytest.raises(ValueError):
        tuner_at_edge(hover, _task(), window=(0.8, 0.5))
    with pytest.raises(ValueError):
        tuner_at_edge(hover, _task(), quantity="trace")


def test_claims_are_registered_for_evaluate():
    from eosbench.claims import CLAIMS, evaluate
    from eosbench.record import Run
    from eosbench.task import ClaimSpec, Task

    task = Task(name="synthetic", optimizer=OptimizerSpec(name="cdat", lr=10.0),
                claims=(ClaimSpec("tuner_at_edge"), ClaimSpec("tuner_below_edge", expect="FAIL")))  # fmt: skip
    hover = Run.synthetic(_series(lambda t: 1.0, lambda t: 5.0 + 0.01 * t), task=task)
    verdicts = evaluate(task, hover)
    assert [v.verdict for v in verdicts] == ["PASS", "FAIL"]
    assert all(v.as_expected for v in verdicts)
    assert "tuner_at_edge" in CLAIMS.list()


def test_tuner_figure_only_with_tuned_runs_and_deterministic(tmp_path):
    from eosbench.record import Run
    from eosbench.report.tuners import write_tuner_figures
    from eosbench.task import Task

    def run(opt, seed=0):
        task = Task(name=f"digits/x/{opt.name}", optimizer=opt)
        recs = _series(lambda t: 0.6, lambda t: 5.0 + 0.01 * t, steps=200, lr=opt.name != "sgd")
        return Run.synthetic(recs, task=task, seed=seed)

    gd = run(OptimizerSpec(name="sgd", lr=0.1))
    assert write_tuner_figures([gd], tmp_path) == []
    runs = [gd, run(OptimizerSpec(name="cdat", lr=10.0, cdat_sigma=2.0)),
            run(OptimizerSpec(name="polyak", lr=10.0)), run(OptimizerSpec(name="polyak"), 1)]  # fmt: skip
    first = write_tuner_figures(runs, tmp_path / "a")
    second = write_tuner_figures(runs, tmp_path / "b")
    assert [p.name for p in first] == ["tuners.png", "tuners.pdf"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))

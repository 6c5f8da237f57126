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

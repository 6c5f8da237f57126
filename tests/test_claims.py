"""Claims on hand-made trajectories: passing, failing and not evaluable."""

from __future__ import annotations

import numpy as np
import pytest

from eosbench.claims import evaluate
from eosbench.claims.eos import eos
from eosbench.claims.linear import linear_net
from eosbench.claims.stochastic import eoss
from eosbench.record import Run
from eosbench.suites import TASKS
from eosbench.task import ClaimSpec, OptimizerSpec, Task

GD = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.1))  # threshold 2/lr = 20


def eos_traj(plateau=20.0, start=4.0, t_star=1000, end=2000, every=20, loss_bumps=True, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for s in range(end + 1):
        r = {
            "step": s,
            "train_loss": 0.5
            * np.exp(-s / 800)
            * (1.05 if loss_bumps and s % 7 == 0 and s > t_star else 1.0),
        }
        if s % every == 0:
            q = (
                start + (plateau * 1.001 - start) * s / t_star
                if s <= t_star
                else plateau * (1 + 0.02 * rng.standard_normal())
            )
            r["sharpness"] = float(q)
        recs.append(r)
    return Run.synthetic(recs)


def test_eos_passes_on_textbook_trajectory():
    v = eos(eos_traj(), GD)
    assert v.verdict == "PASS", v.detail
    assert v.target == pytest.approx(20.0)
    assert 19 < v.measured < 21
    assert v.parts["t_star"] == 1000 and v.parts["ratio"] == pytest.approx(v.measured / 20.0)
    assert all(v.parts[k] for k in ("sharpened", "hovers", "non_monotone", "decreasing"))


def test_eos_fails_when_plateau_is_off_threshold():
    v = eos(eos_traj(plateau=26.0), GD)  # reaches 20 at ~t=770 but hovers at 1.3 T
    assert v.verdict == "FAIL" and not v.parts["hovers"] and v.parts["sharpened"]


def test_eos_not_evaluable_when_threshold_never_reached():
    v = eos(eos_traj(plateau=15.0), GD)
    assert v.verdict == "FAIL" and v.parts == {"evaluable": False, "why": "never_reached"}


def test_eos_fails_without_sharpening():
    v = eos(eos_traj(start=19.0), GD)
    assert v.verdict == "FAIL" and not v.parts["sharpened"] and v.parts["hovers"]


def test_eos_fails_if_loss_monotone_after_t_star():
    v = eos(eos_traj(loss_bumps=False), GD)
    assert v.verdict == "FAIL" and not v.parts["non_monotone"] and v.parts["hovers"]


def test_eos_not_evaluable_when_diverged_or_too_short():
    t = eos_traj()
    diverged = eos(Run.synthetic(t.series.records(), "diverged", 1500), GD)
    assert diverged.parts["why"] == "diverged" and "1500" in diverged.detail
    short = Run.synthetic([r for r in t.series.records() if r["step"] <= 1040])
    v = eos(short, GD)
    assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"


def test_eos_uses_the_momentum_threshold():
    hb = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.15, momentum=0.5))  # (2+2b)/lr = 20
    assert eos(eos_traj(), hb).verdict == "PASS"
    gd15 = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.15))  # 2/lr = 13.3: hovers at 1.5 T
    assert eos(eos_traj(), gd15).verdict == "FAIL"


def test_eos_gd_edge_is_the_mirror_check_for_other_edges():
    """edge="gd" judges the same series against plain GD's 2/lr: heavy ball hovering at its
    own edge (2+2b)/lr = 20 passes its claim and fails the mirror at 2/lr = 13.3."""
    hb = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.15, momentum=0.5))
    own, mirror = eos(eos_traj(), hb), eos(eos_traj(), hb, edge="gd")
    assert own.verdict == "PASS" and own.claim == "eos[sharpness]"
    assert mirror.verdict == "FAIL" and mirror.claim == "eos[sharpness, T=2/lr]"
    assert mirror.target == pytest.approx(2 / 0.15) and not mirror.parts["hovers"]
    # on plain GD the two edges coincide, so the mirror check cannot fail there
    assert eos(eos_traj(), GD, edge="gd").verdict == "PASS"
    with pytest.raises(ValueError, match="edge must be one of"):
        eos(eos_traj(), GD, edge="sam")
    with pytest.raises(ValueError, match="threshold on sharpness"):
        eos(eos_traj(), GD, quantity="preconditioned_sharpness", edge="gd")


def ce_traj(fitted_at=1500, end=3000, every=20):
    """Cross-entropy shape: the sharpness hovers at T = 20 from t* = 1000 while the loss falls
    tenfold by ``fitted_at``, then decays towards zero as the data are fitted."""
    recs = []
    for s in range(end + 1):
        loss = 1.0 if s <= 1000 else 1.0 * 0.05 ** ((s - 1000) / (fitted_at - 1000) * 0.77)
        r = {"step": s, "train_loss": loss * (1.03 if s % 7 == 0 and s > 1000 else 1.0)}
        if s % every == 0:
            r["sharpness"] = (4 + 16.02 * s / 1000 if s <= 1000
                              else 20.0 * (1 + 0.01 * (s % 3)) if s <= fitted_at
                              else 20.0 * np.exp(-(s - fitted_at) / 400))
        recs.append(r)
    return Run.synthetic(recs)


def test_eos_loss_drop_ends_the_window_where_the_loss_has_fallen():
    t = ce_traj()
    whole = eos(t, GD)  # the decay after the fit drags the median far below T
    assert whole.verdict == "FAIL" and not whole.parts["hovers"]
    v = eos(t, GD, loss_drop=0.1)
    assert v.verdict == "PASS", v.detail
    fitted = next(r["step"] for r in t.series.records() if r["step"] > 1000 and r["train_loss"] < 0.1)
    assert f"in steps 1000-{fitted} (loss < 0.1 x loss at t* from step {fitted})" in v.detail
    assert "until loss < 0.1 x loss(t*)" in v.tolerance
    # a loss that never falls tenfold keeps the whole span (here: the decay is in it)
    assert eos(t, GD, loss_drop=1e-6).verdict == "FAIL"
    # the window still needs enough points before the fit
    v = eos(ce_traj(fitted_at=1040), GD, loss_drop=0.1)
    assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"
    assert "the window is steps 1000-1040 (loss < 0.1" in v.detail


def test_a_cut_off_run_is_never_as_expected():
    """A run that did not finish FAILs every claim; a negative control must not count that
    as its expected FAIL."""
    task = Task("t", optimizer=GD.optimizer,
                claims=(ClaimSpec("eos"), ClaimSpec("eos", expect="FAIL")))
    t = eos_traj()
    for v in evaluate(task, Run.synthetic(t.series.records(), "running")):
        assert v.verdict == "FAIL" and not v.finished and not v.as_expected
        assert v.to_dict()["as_expected"] is False
    assert [v.as_expected for v in evaluate(task, t)] == [True, False]


def test_expected_verdicts_are_attached():
    task = Task(
        "t", optimizer=GD.optimizer, claims=(ClaimSpec("eos"), ClaimSpec("eos", expect="FAIL"))
    )
    v_pass, v_fail = evaluate(task, eos_traj())
    assert v_pass.as_expected and not v_fail.as_expected
    assert v_fail.to_dict()["as_expected"] is False


def eoss_traj(batch_level, full_level, end=1000, every=50):
    return Run.synthetic(
        [
            {
                "step": s,
                "batch_sharpness": batch_level * (1 + 0.01 * (s % 3)),
                "sharpness": full_level,
            }
            for s in range(0, end + 1, every)
        ]
    )


SGD = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=32))


def test_eoss_pass_fail_and_negative_control():
    assert eoss(eoss_traj(20.0, 12.0), SGD).verdict == "PASS"
    low = eoss(eoss_traj(12.0, 8.0), SGD)  # plateau below 2/lr: the authors' control
    assert low.verdict == "FAIL" and not low.parts["hovers"] and low.parts["below"]
    above = eoss(eoss_traj(20.0, 21.0), SGD)  # full-batch sharpness not below
    assert above.verdict == "FAIL" and above.parts["hovers"] and not above.parts["below"]
    assert eoss(eoss_traj(20.0, 12.0, end=100), SGD).parts["why"] == "too_few_points"


def test_eoss_hover_alone_reports_but_does_not_judge_the_full_batch_sharpness():
    at_edge = eoss(eoss_traj(20.0, 20.4), SGD, full_below=False)  # GD-like full-batch sharpness
    assert at_edge.verdict == "PASS" and not at_edge.parts["below"]
    assert at_edge.parts["full"] / at_edge.target == pytest.approx(1.02, abs=1e-3)
    assert "not judged" in at_edge.tolerance
    # the hover half still decides: a plateau below the edge FAILs, so does too few points
    assert eoss(eoss_traj(12.0, 8.0), SGD, full_below=False).verdict == "FAIL"
    assert eoss(eoss_traj(20.0, 12.0, end=100), SGD, full_below=False).verdict == "FAIL"
    assert eoss(eoss_traj(20.0, 20.4), SGD).verdict == "FAIL"  # the default judges it


def test_eoss_momentum_targets():
    m = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.1, momentum=0.5, batch_size=8))
    assert eoss(eoss_traj(10.0, 5.0), m, target="momentum-small-batch").verdict == "PASS"
    assert eoss(eoss_traj(30.0, 25.0), m, target="momentum-large-batch").verdict == "PASS"
    assert eoss(eoss_traj(10.0, 5.0), m, target="momentum-large-batch").verdict == "FAIL"


def lin_traj(final_sharpness, gf=16.5, final_loss=1e-12):
    return Run.synthetic(
        [
            {"step": 0, "gf_sharpness": gf, "sharpness": 16.0, "train_loss": 1.0},
            {
                "step": 100,
                "gf_sharpness": 3.0,
                "sharpness": final_sharpness,
                "train_loss": final_loss,
            },
        ]
    )


def test_linear_net():
    t = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.2))  # 2/lr = 10
    assert linear_net(lin_traj(6.0), t).verdict == "PASS"
    small = Task("t", optimizer=OptimizerSpec(lr=0.05))
    assert linear_net(lin_traj(16.4), small).parts == {
        "converged": True, "stable": True, "flatter": False,
        "final_sharpness": 16.4, "gf_sharpness": 16.5, "final_loss": 1e-12,
    }  # fmt: skip
    assert not linear_net(lin_traj(12.0), t).parts["stable"]
    assert not linear_net(lin_traj(6.0, final_loss=1e-2), t).parts["converged"]
    bare = Run.synthetic([{"step": 0, "train_loss": 1.0}])
    assert linear_net(bare, t).parts == {"evaluable": False, "why": "missing"}


def test_eoss_suppression():
    from eosbench.claims.stochastic import eoss_suppression

    sgd = Task("t", optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=16))  # 2/lr = 20
    assert eoss_suppression(eoss_traj(16.0, 12.0), sgd).verdict == "PASS"
    at_edge = eoss_suppression(eoss_traj(16.0, 19.8), sgd)  # GD-like: sharpness at 2/lr
    assert at_edge.verdict == "FAIL" and not at_edge.parts["below_edge"]
    inverted = eoss_suppression(eoss_traj(10.0, 12.0), sgd)
    assert inverted.verdict == "FAIL" and not inverted.parts["below_batch"]
    assert eoss_suppression(eoss_traj(16.0, 12.0, end=100), sgd).parts["why"] == "too_few_points"


@pytest.mark.parametrize("status", ["running", "interrupted", "failed"])
def test_unfinished_run_is_not_evaluable(status):
    t = eos_traj()
    task = Task("t", optimizer=GD.optimizer, claims=(ClaimSpec("eos"),))
    (v,) = evaluate(task, Run.synthetic(t.series.records(), status))
    assert v.verdict == "FAIL" and v.parts["why"] == "unfinished" and status in v.detail
    (ok,) = evaluate(task, Run.synthetic(t.series.records(), "completed"))
    assert ok.verdict == "PASS"


@pytest.mark.parametrize("name", TASKS.list())
def test_every_registered_claim_evaluates(name):
    """Each registered task's claims take the options written for them (a typo there would
    only surface at check time, after the training) and a series with nothing to judge is
    not evaluable: FAIL, never PASS."""
    task = TASKS.get(name)
    traj = Run.synthetic([{"step": s, "train_loss": 1.0 - 0.1 * s} for s in range(3)])
    verdicts = evaluate(task, traj)
    assert len(verdicts) == len(task.claims)
    assert all(v.verdict == "FAIL" for v in verdicts), [v.detail for v in verdicts]
    # a series that reaches every threshold, so that the claims read all their options (a
    # value of the wrong type would raise here); the verdicts themselves do not matter
    keys = ("sharpness", "batch_sharpness", "preconditioned_sharpness", "gf_sharpness")
    rich = Run.synthetic([
        {"step": s, "train_loss": 2.0 ** (-s / 50) * (1.1 if s % 7 == 0 else 1.0),
         **({k: 10.0 ** (s / 20) for k in keys} if s % 10 == 0 else {})}
        for s in range(401)
    ])  # fmt: skip
    assert len(evaluate(task, rich)) == len(task.claims)


def test_a_run_that_never_trained_proves_no_control():
    """Non-finite at step 0 (e.g. model.init_scale=1e30): every claim FAILs and none counts
    as expected, not even a negative control's; a run that diverged later still judges."""
    task = Task("t", optimizer=OptimizerSpec(lr=0.1), claims=(ClaimSpec("eos", expect="FAIL"),))
    (v,) = evaluate(task, Run.synthetic([{"step": 0}], "diverged", 0))
    assert (v.verdict, v.as_expected, v.parts["why"]) == ("FAIL", False, "untrained")
    (w,) = evaluate(task, Run.synthetic(eos_traj().series.records(), "diverged", 9))
    assert (w.verdict, w.as_expected, w.parts["why"]) == ("FAIL", True, "diverged")

"""Regularization and the Hessian's two parts (the ``regularization`` suites): the
``nme_vanishes`` claim on hand-made series.  The ``split`` measurement's oracle tests are in
``test_curvature.py`` (dense Hessian and dense Gauss-Newton matrix)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eosbench.claims import evaluate
from eosbench.record import Run
from eosbench.task import ClaimSpec, OptimizerSpec, Task


def _series(start: float, end: float, n: int = 20, sign: float = 1.0):
    """The NME share falling linearly from ``start`` to ``end`` over ``n`` measurements."""
    return [{"step": 10 * i, "sharpness": 10.0, "sharpness_gn": 10.0 * (1 - start),
             "sharpness_nme_share": sign * (start + (end - start) * i / (n - 1)),
             "train_loss": 1.0 / (1 + i)} for i in range(n)]  # fmt: skip


TASK = Task(name="t", claims=(ClaimSpec("nme_vanishes"),))


@pytest.mark.parametrize("start,end,verdict,why", [
    (0.4, 0.01, "PASS", None),
    (0.4, 0.06, "FAIL", "small"),    # not small enough at the end
    (0.04, 0.03, "FAIL", "shrank"),  # small throughout: nothing vanished
    (0.1, 0.3, "FAIL", "shrank"),    # grows
])  # fmt: skip
def test_nme_vanishes_on_hand_made_series(start, end, verdict, why):
    (v,) = evaluate(TASK, Run.synthetic(_series(start, end), task=TASK))
    assert v.verdict == verdict
    if why:
        assert v.parts[why] is False
    # the first value, and the median over the last 2 of 20 measurements
    assert v.parts["first"] == pytest.approx(start)
    assert v.parts["last"] == pytest.approx(abs(end + (start - end) * 0.5 / 19), rel=1e-9)


def test_nme_vanishes_judges_the_magnitude_of_a_negative_share():
    (v,) = evaluate(TASK, Run.synthetic(_series(0.4, 0.01, sign=-1.0), task=TASK))
    assert v.verdict == "PASS" and v.parts["first"] > 0.3


def test_nme_vanishes_is_not_evaluable_without_measurements_or_after_divergence():
    (v,) = evaluate(TASK, Run.synthetic(_series(0.4, 0.01)[:3], task=TASK))  # < 4 points
    assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"
    (v,) = evaluate(TASK, Run.synthetic(_series(0.4, 0.01), status="diverged", diverged_at=90,
                                        task=TASK))  # fmt: skip
    assert v.parts["why"] == "diverged"
    bad = replace(TASK, claims=(ClaimSpec("nme_vanishes", options=(("max_share", 1.5),)),))
    with pytest.raises(ValueError, match="max_share"):
        evaluate(bad, Run.synthetic(_series(0.4, 0.01), task=bad))


WD_TASK = Task(name="wd", optimizer=OptimizerSpec(name="sgd", lr=0.2, weight_decay=0.01),
               claims=(ClaimSpec("settles_below_edge"),))  # fmt: skip
EDGE = 2 / 0.2 - 0.01  # GD's edge on lambda_max of the unregularized loss, 2/lr - wd


def _wd_series(level: float, drift: float = 0.0, loss_end: float = 0.05, n: int = 41):
    """Sharpness rising to ``level`` x EDGE by the middle of the run, then drifting by ``drift``
    (relative) to the end; the loss falling from 0.2 to ``loss_end`` over the second half."""
    out = []
    for i in range(n):
        u = i / (n - 1)
        q = level * (2 * u if u < 0.5 else 1 + drift * (u - 0.5) * 2)
        loss = 0.2 if u < 0.5 else 0.2 + (loss_end - 0.2) * (u - 0.5) * 2
        out.append({"step": 50 * i, "sharpness": q * EDGE, "train_loss": loss})
    return out


@pytest.mark.parametrize("series,verdict,part", [
    (_wd_series(0.53), "PASS", None),                  # the wd=0.01 pilot's plateau
    (_wd_series(1.02), "FAIL", "below"),               # at the edge: the negative control
    (_wd_series(0.81), "FAIL", "below"),               # just above 1 - margin
    (_wd_series(0.5, drift=0.4), "FAIL", "settled"),   # still rising
    (_wd_series(0.5, loss_end=0.2), "FAIL", "falling"),  # stopped training
])  # fmt: skip
def test_settles_below_edge_on_hand_made_series(series, verdict, part):
    (v,) = evaluate(WD_TASK, Run.synthetic(series, task=WD_TASK))
    assert v.verdict == verdict and v.target == pytest.approx(EDGE)
    if part:
        assert v.parts[part] is False
    else:
        assert v.parts["ratio"] == pytest.approx(0.53)


def test_settles_below_edge_is_not_evaluable_on_short_or_diverged_runs():
    (v,) = evaluate(WD_TASK, Run.synthetic(_wd_series(0.5, n=9), task=WD_TASK))
    assert v.verdict == "FAIL" and v.parts["why"] == "too_few_points"
    (v,) = evaluate(WD_TASK, Run.synthetic(_wd_series(0.5), status="diverged", diverged_at=900,
                                           task=WD_TASK))  # fmt: skip
    assert v.parts["why"] == "diverged"
    bad = replace(WD_TASK, claims=(ClaimSpec("settles_below_edge", options=(("margin", 0),)),))
    with pytest.raises(ValueError, match="margin"):
        evaluate(bad, Run.synthetic(_wd_series(0.5), task=bad))


# -- mini-batch sampling: per-epoch permutations or i.i.d. batches ---------------------------------


def _draw(sampling: str, steps: int, n: int = 20, b: int = 5, seed: int = 0):
    from eosbench.runner import _Batches

    batches = _Batches(n, b, seed, sampling)
    return batches, [batches.indices(t).tolist() for t in range(steps)]


def test_epoch_sampling_sees_every_example_once_per_epoch():
    _, drawn = _draw("epoch", 8)
    for epoch in (drawn[:4], drawn[4:]):
        assert sorted(i for batch in epoch for i in batch) == list(range(20))


def test_iid_sampling_draws_distinct_examples_independently_of_the_other_steps():
    _, drawn = _draw("iid", 400)
    assert all(len(set(batch)) == 5 for batch in drawn)  # no repeat within a batch
    epochs = [sorted(i for batch in drawn[k:k + 4] for i in batch) for k in range(0, 400, 4)]
    assert sum(e != list(range(20)) for e in epochs) > 90  # repeats across steps of an "epoch"
    counts = np.bincount([i for batch in drawn for i in batch], minlength=20)
    assert counts.min() > 60 and counts.max() < 140  # uniform: 100 each in expectation
    batches, _ = _draw("iid", 3)  # resumes where it stopped
    state = batches.state_dict()
    ahead = [batches.indices(t).tolist() for t in range(3, 6)]
    batches.load_state_dict(state)
    assert [batches.indices(t).tolist() for t in range(3, 6)] == ahead


@pytest.mark.parametrize("spec,match", [
    (OptimizerSpec(batch_size=8, sampling="bootstrap"), "sampling"),
    (OptimizerSpec(sampling="iid"), "batch_size"),
])  # fmt: skip
def test_a_bad_sampling_is_refused(spec, match):
    from eosbench.errors import UserError
    from eosbench.optim import validate

    with pytest.raises(UserError, match=match):
        validate(spec)


def test_the_default_sampling_leaves_the_task_hash_unchanged():
    from eosbench.task import content_hash

    task = Task(name="t", optimizer=OptimizerSpec(batch_size=8))
    assert content_hash(task) == content_hash(
        replace(task, optimizer=OptimizerSpec(batch_size=8, sampling="epoch")))
    assert content_hash(task) != content_hash(
        replace(task, optimizer=OptimizerSpec(batch_size=8, sampling="iid")))


def test_hessian_parts_figure_only_with_split_runs_and_deterministic(tmp_path):
    from eosbench.report.regularization import write_regularization_figures

    plain = Run.synthetic([{"step": 10 * i, "sharpness": 1.0, "train_loss": 1.0 / (1 + i)}
                           for i in range(5)], task=Task(name="plain"))  # fmt: skip
    assert write_regularization_figures([plain], tmp_path) == []
    runs = [plain, *(Run.synthetic(_series(0.4, 0.01), task=replace(TASK, name=f"t{k}"), seed=s)
                     for k in range(2) for s in range(2))]  # fmt: skip
    first = write_regularization_figures(runs, tmp_path / "a")
    second = write_regularization_figures(runs, tmp_path / "b")
    assert [p.name for p in first] == ["hessian_parts.png", "hessian_parts.pdf"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))

"""Task specs: type-checked overrides, canonical form and content hash."""

from __future__ import annotations

from dataclasses import replace

import pytest

from eosbench.errors import OverrideError, UserError
from eosbench.suites import SUITES, TASKS
from eosbench.task import (
    ClaimSpec,
    Task,
    apply_overrides,
    computation_hash,
    content_hash,
    from_dict,
    options,
    slug,
    to_dict,
)


def test_required_overrides_work():
    t = Task("x")
    t2 = apply_overrides(
        t,
        [
            "optimizer.lr=0.05",
            "optimizer.momentum=0.9",
            "optimizer.batch_size=32",
            "schedule.steps=10",
            "data.n_train=500",
            "model.width=100",
            "seed=7",
        ],
    )
    assert t2.optimizer.lr == 0.05 and isinstance(t2.optimizer.lr, float)
    assert t2.optimizer.momentum == 0.9
    assert t2.optimizer.batch_size == 32
    assert t2.schedule.steps == 10
    assert t2.data.n_train == 500
    assert t2.model.width == 100
    assert t2.seeds == (7,)
    assert apply_overrides(t2, ["optimizer.batch_size=none"]).optimizer.batch_size is None
    assert apply_overrides(t, ["optimizer.lr=1"]).optimizer.lr == 1.0  # int accepted for float
    assert apply_overrides(t, ["optimizer.nesterov=true"]).optimizer.nesterov is True
    assert apply_overrides(t, ["loss=ce"]).loss == "ce"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("optimizer.lrr=0.1", "did you mean 'optimizer.lr'"),
        ("optimizer.lr=fast", "expected float"),
        ("optimizer.lr=nan", "finite"),
        ("model.width=1.5", "expected int or none"),
        ("schedule.steps=ten", "expected int or none"),
        ("optimizer.nesterov=maybe", "expected bool"),
        ("foo=1", "unknown override key 'foo'"),
        ("optimizer", "KEY=VALUE"),
        ("=3", "KEY=VALUE"),
        ("seed=1.5", "expected int"),
        ("optimizer.lr", "KEY=VALUE"),
    ],
)
def test_bad_overrides_are_user_errors(bad, message):
    with pytest.raises(OverrideError, match=message.replace("(", r"\(")):
        apply_overrides(Task("x"), [bad])


def test_measurement_overrides_set_options_and_drop_defaults():
    """``measurements.NAME.OPTION``: typed like the factory's default, the cadence too; a value
    equal to the default leaves the options (and so the hash) as a hand-written task has
    them; the other measurements are untouched."""
    from eosbench.task import MeasurementSpec

    t = Task("x", measurements=(MeasurementSpec("sharpness", 20, options(split=True)),
                                MeasurementSpec("trace", 100)))  # fmt: skip
    u = apply_overrides(t, ["measurements.sharpness.n_examples=100",
                            "measurements.sharpness.spare=2",
                            "measurements.sharpness.tol=1e-2",
                            "measurements.sharpness.every=5"])  # fmt: skip
    assert u.measurements[0] == MeasurementSpec(
        "sharpness", 5, options(n_examples=100, spare=2, split=True, tol=0.01))
    assert u.measurements[1] == t.measurements[1]
    assert isinstance(dict(u.measurements[0].options)["tol"], float)
    back = apply_overrides(u, ["measurements.sharpness.n_examples=none",
                               "measurements.sharpness.spare=0",
                               "measurements.sharpness.tol=0.001",
                               "measurements.sharpness.every=20"])  # fmt: skip
    assert back == t and content_hash(back) == content_hash(t)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("measurements.foo.k=3", "no measurement 'foo' \\(it has: sharpness\\)"),
        ("measurements.sharpness.sparee=2", "did you mean 'spare'"),
        ("measurements.sharpness.spare=two", "expected int"),
        ("measurements.sharpness.every=0", "positive integer"),
        ("measurements.sharpness=3", "measurements.NAME.OPTION"),
    ],
)
def test_bad_measurement_overrides_are_user_errors(bad, message):
    from eosbench.task import MeasurementSpec

    t = Task("x", measurements=(MeasurementSpec("sharpness"),))
    with pytest.raises(OverrideError, match=message):
        apply_overrides(t, [bad])


@pytest.mark.parametrize("name", TASKS.list())
def test_registered_tasks_round_trip_and_hash(name):
    t = TASKS.get(name)
    d = to_dict(t)
    assert from_dict(d) == t
    assert content_hash(from_dict(d)) == content_hash(t)
    assert "/" not in slug(name)


def test_hash_ignores_prose_but_not_computation():
    t = Task("x", claims=(ClaimSpec("eos", options=options(band=(0.9, 1.1))),))
    assert content_hash(replace(t, description="other words")) == content_hash(t)
    assert content_hash(replace(t, seeds=(5,))) == content_hash(t)
    assert content_hash(apply_overrides(t, ["optimizer.lr=0.02"])) != content_hash(t)
    assert content_hash(replace(t, name="y")) != content_hash(t)


def test_from_dict_rejects_malformed():
    d = to_dict(Task("x"))
    d["optimizer"]["learning_rate"] = 1
    with pytest.raises(UserError, match="invalid task definition"):
        from_dict(d)


def test_every_suite_task_is_registered():
    for s in SUITES:
        for name in SUITES.get(s).tasks:
            assert name in TASKS


def test_task_names_follow_the_scheme():
    for name in TASKS.list():
        parts = name.split("/")
        assert len(parts) >= 4, name
        assert parts[2] in ("mse", "ce"), name


def test_hash_leaves_out_defaults_so_new_fields_keep_old_hashes():
    t = TASKS.get("digits/fc-tanh/mse/gd/lr=0.1")
    # pinned: a change of this value invalidates every stored run's reuse by hash
    assert content_hash(t) == "3b5a9a4639c22785efedc8eea1fc5ee51d1510d881f6237d07e45311065ac55b"
    assert computation_hash(t) == (
        "e4b954fd60b3485eee51c0b23507f9b5325a1088f5e658520ac9b1bdb5545b5c"
    )
    sgd = TASKS.get("cifar10-1k/fc-tanh/mse/sgd/lr=0.001,bs=16")  # with measurement options
    assert computation_hash(sgd) == (
        "c6ccf21609229c0976253fa20e6a81dc59346d2421c78cc92fa6c34362eb1901"
    )
    # a field set to its default is not part of the identity ...
    assert content_hash(replace(t, schedule=replace(t.schedule, lr_schedule="constant"))) == (
        content_hash(t)
    )
    # ... any other value is
    assert content_hash(replace(t, schedule=replace(t.schedule, lr_schedule="cosine"))) != (
        content_hash(t)
    )
    assert content_hash(replace(t, model=replace(t.model, init_scale=1.5))) != content_hash(t)

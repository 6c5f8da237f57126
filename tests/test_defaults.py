"""The defaults behind the run-reuse hash, pinned.

:func:`eosbench.task.content_hash` leaves out every field equal to its default, and a
measurement's options name only what differs from its factory's keyword defaults, so a
default is part of what every recorded hash means.  Changing one silently changes what a
reused run computed; it must come with a bump of :data:`eosbench.task.HASH_VERSION` (which
changes every hash).  Adding a field or a measurement option whose default keeps the old
computation needs no bump, only a new row here.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from eosbench import task as T
from eosbench.measure import MEASUREMENTS

BUMP = "a default changed: bump task.HASH_VERSION and update this table"
TABLE_VERSION = 1  # the HASH_VERSION these tables describe
REQUIRED = "<required>"

SPEC_DEFAULTS = {
    T.DataSpec: {
        "name": "digits",
        "n_train": None,
        "n_test": None,
        "subset": "first",
        "subset_seed": 0,
        "standardize": True,
        "label_noise": 0.0,
        "noise_seed": 0,
        "augment": False,
        "classes": None,
        "options": (),
    },
    T.ModelSpec: {
        "name": "fc-tanh",
        "width": None,
        "depth": None,
        "batchnorm": False,
        "init_scale": 1.0,
        "options": (),
    },
    T.OptimizerSpec: {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.0,
        "nesterov": False,
        "batch_size": None,
        "sampling": "epoch",
        "weight_decay": 0.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "rho": 0.05,
        "normalized": True,
        "base": "sgd",
        "armijo_c": 0.1,
        "armijo_backtrack": 0.9,
        "armijo_growth": 2.0,
        "polyak_loss_star": 0.0,
        "cdat_sigma": 1.0,
        "cdat_ema": 0.0,
        "clip_norm": None,
        "orthogonalizer": "svd",
    },
    T.ScheduleSpec: {
        "steps": 1000,
        "epochs": None,
        "stop_loss": None,
        "stop_accuracy": None,
        "eval_every": 100,
        "lr_schedule": "constant",
    },
    T.MeasurementSpec: {"name": REQUIRED, "every": 20, "options": ()},
    T.ClaimSpec: {"name": REQUIRED, "expect": "PASS", "options": ()},
    T.Task: {
        "name": REQUIRED,
        "data": T.DataSpec(),  # whose own defaults are the rows above
        "model": T.ModelSpec(),
        "loss": "mse",
        "optimizer": T.OptimizerSpec(),
        "schedule": T.ScheduleSpec(),
        "measurements": (),
        "claims": (),
        "seeds": (0, 1, 2),
        "description": "",
        "reference": "",
        "meta": (),  # not hashed: report metadata
    },
}

# build_measurements calls MEASUREMENTS.get(spec.name)(**dict(spec.options)): an option
# left out takes the factory's keyword default
MEASUREMENT_DEFAULTS = {
    "sharpness": {"k": 1, "tol": 1e-3, "max_products": 500, "n_examples": None, "split": False,
                  "spare": 0},
    "preconditioned_sharpness": {"k": 1, "tol": 1e-3, "max_products": 500, "spare": 0},
    "batch_sharpness": {
        "batch_size": None,  # None: the task's optimizer.batch_size
        "rel_se": 0.05,
        "min_batches": 8,
        "max_batches": 64,
        "direction": "gradient",
    },
    "trace": {"n_samples": 30, "method": "hutch++", "n_examples": None},
    "ntk_trace": {"memory_mb": 8},
    "sharpness_gap": {"tol": 1e-3, "max_products": 500},
    "linear2_state": {},
    "support_norm": {"relevant": 5},
    "excess_risk": {},
    "deq_solver": {},
    "generalized_sharpness": {"norm": "linf", "iters": 50, "restarts": 5, "tol": 0.0, "step": "auto"},
    "central_flow": {
        "start": 0.9,
        "substeps": 4,
        "critical": 0.975,
        "k": 2,
        "tol": 1e-3,
        "gf_probe": 10,
        "sharpness_tol": 1e-3,
        "max_products": 300,
        "dtype": "float32",
    },
    "smoothed_sharpness": {"tol": 1e-3, "max_products": 500},
}


def _curvature_defaults():
    """The estimators the measurements call, with the keyword defaults the measurements
    leave to them (the arguments they pass are not listed: those defaults do not apply)."""
    from eosbench.curvature import (
        LossOperator,
        batch_sharpness,
        hutchinson_trace,
        top_eigenpairs,
    )

    return {
        top_eigenpairs: {"block_size": None, "max_basis": None, "bound": "residual"},
        batch_sharpness: {"dtype": None},
        hutchinson_trace: {"rel_se": None},
        LossOperator.__init__: {"kind": "hessian", "dtype": None},
    }


def _spec_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        d = T._field_default(f)
        out[f.name] = REQUIRED if d is dataclasses.MISSING else d
    return out


def _keyword_defaults(fn) -> dict:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _same(got: dict, pinned: dict) -> bool:
    """Equal values of equal types (``1 == 1.0 == True`` would hide a changed type)."""
    return got.keys() == pinned.keys() and all(
        type(got[k]) is type(pinned[k]) and got[k] == pinned[k] for k in pinned
    )


def test_the_tables_describe_the_current_hash_version():
    assert T.HASH_VERSION == TABLE_VERSION, "update TABLE_VERSION with the tables"


@pytest.mark.parametrize("cls", list(SPEC_DEFAULTS), ids=lambda c: c.__name__)
def test_spec_defaults_are_pinned(cls):
    got = _spec_defaults(cls)
    new = sorted(got.keys() - SPEC_DEFAULTS[cls].keys())
    assert not new, f"{cls.__name__}: new fields {new}: add them to this table ({BUMP} if a "
    "field's default does not keep the old computation)"
    assert _same(got, SPEC_DEFAULTS[cls]), f"{cls.__name__}: {BUMP}"


def test_every_measurement_is_pinned():
    assert sorted(MEASUREMENTS.list()) == sorted(MEASUREMENT_DEFAULTS), (
        "a measurement was added or removed: update this table"
    )


@pytest.mark.parametrize("name", sorted(MEASUREMENT_DEFAULTS))
def test_measurement_factory_defaults_are_pinned(name):
    got = _keyword_defaults(MEASUREMENTS.get(name))
    assert _same(got, MEASUREMENT_DEFAULTS[name]), f"measurement {name!r}: {BUMP}"


def test_estimator_defaults_the_measurements_rely_on_are_pinned():
    for fn, pinned in _curvature_defaults().items():
        got = {k: v for k, v in _keyword_defaults(fn).items() if k in pinned}
        assert _same(got, pinned), f"{fn.__qualname__}: {BUMP}"


def test_hash_version_1_leaves_the_hashes_as_they_were(monkeypatch):
    from eosbench.suites import TASKS

    t = TASKS.get("digits/fc-tanh/mse/gd/lr=0.1")
    pinned = "3b5a9a4639c22785efedc8eea1fc5ee51d1510d881f6237d07e45311065ac55b"
    assert T.content_hash(t) == pinned
    computation = T.computation_hash(t)
    monkeypatch.setattr(T, "HASH_VERSION", 2)
    assert T.content_hash(t) != pinned
    assert T.computation_hash(t) != computation

"""The ``smoke`` suite: the main job on a fresh offline machine.

scikit-learn's ``digits`` (1,000 training examples, standardized; no download)
with the fully-connected tanh network of Cohen et al. (two hidden layers of
200), and the depth-2 scalar linear network.  All of it runs in a few minutes
on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import replace

from ..task import (
    ClaimSpec,
    DataSpec,
    MeasurementSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    Task,
    options,
)
from . import register, suite
from . import sharp as _sharp  # noqa: F401

COHEN2021 = "Cohen et al. 2021, Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability (arXiv:2103.00065v3)"

# --- smoke: digits, fc-tanh -------------------------------------------------------------------

DIGITS = DataSpec(name="digits", n_train=1000)
FC_TANH = ModelSpec(name="fc-tanh")

# Calibration (seeds 0,1,2 on this 2-core CPU, 3000 steps): see results/smoke/README.md.
gd_mse = register(
    Task(
        name="digits/fc-tanh/mse/gd/lr=0.1",
        data=DIGITS,
        model=FC_TANH,
        loss="mse",
        optimizer=OptimizerSpec(name="sgd", lr=0.1),
        schedule=ScheduleSpec(steps=3000, eval_every=250),
        measurements=(_sharp(20),),
        claims=(ClaimSpec("eos", options=options(band=(0.95, 1.1))),),
        description="GD at lr=0.1 sharpens from ~4 to 2/lr=20 and hovers there while the loss falls",
        reference=COHEN2021,
    )
)
gd_mse_small_lr = register(
    replace(
        gd_mse,
        name="digits/fc-tanh/mse/gd/lr=0.02",
        optimizer=OptimizerSpec(name="sgd", lr=0.02),
        claims=(ClaimSpec("eos", expect="FAIL", options=options(band=(0.95, 1.1))),),
        description="negative control: at lr=0.02, 2/lr=100 is not reached in the budget",
    )
)
hb_mse = register(
    replace(
        gd_mse,
        name="digits/fc-tanh/mse/hb/lr=0.15,beta=0.5",
        optimizer=OptimizerSpec(name="sgd", lr=0.15, momentum=0.5),
        description="heavy-ball GD sharpens to (2+2beta)/lr=20 (not 2/lr=13.3) and hovers there",
    )
)

sgd_mse = register(replace(
    gd_mse, name="digits/fc-tanh/mse/sgd/lr=0.1,bs=16",
    optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=16),
    schedule=ScheduleSpec(steps=15000, eval_every=1000),
    measurements=(_sharp(500), MeasurementSpec("batch_sharpness", every=250)),
    claims=(ClaimSpec("eoss"),),
    description="SGD: batch sharpness rises to 2/lr and hovers there; full-batch sharpness stays below",
    reference="Andreyev & Beneventano, Edge of Stochastic Stability (arXiv:2412.20553v3)",
))

# --- linear2: large steps regularize ------------------------------------------------------------

lin_large = register(
    Task(
        name="scalar/linear2/mse/gd/lr=0.2",
        data=DataSpec(name="scalar", standardize=False),
        model=ModelSpec(name="linear2", init_scale=4.0),
        loss="mse",
        optimizer=OptimizerSpec(name="sgd", lr=0.2),
        schedule=ScheduleSpec(steps=300, eval_every=0),
        measurements=(_sharp(10), MeasurementSpec("linear2_state", every=10)),
        claims=(ClaimSpec("linear_net"),),
        description="GD with 2/lr=10 below the gradient-flow solution's sharpness ~16.5 converges to a flatter solution",
        reference="Kreisler et al. 2023; Zhu et al. 2023",
    )
)
lin_small = register(
    replace(
        lin_large,
        name="scalar/linear2/mse/gd/lr=0.05",
        optimizer=OptimizerSpec(name="sgd", lr=0.05),
        claims=(ClaimSpec("linear_net", expect="FAIL"),),
        description="negative control: with 2/lr=40 above the gradient-flow solution's sharpness, "
        "GD tracks gradient flow and ends as sharp",
    )
)

SMOKE = suite(
    "smoke",
    [gd_mse, gd_mse_small_lr, hb_mse, lin_large, lin_small],
    "the main job: digits + fc-tanh on CPU in minutes; EoS, momentum, EoSS, linear net",
)

"""Tasks on data that users get from the Hugging Face Hub (``eosbench.data.hub``).

``hub-mnist``: Cohen et al.'s edge of stability on MNIST as the Hub serves it (``ylecun/mnist``
at a pinned commit; the first 1,000 training and test images, standardized per pixel), with
the digits smoke task's network, loss and schedule: fc-tanh, MSE, full-batch GD at lr 0.1 for
3,000 steps, and the step 0.02 whose 2/lr = 100 the budget should not reach (the negative
control).  The data needs the network once (``eosbench data download hub-mnist``); the
machine these tasks were written on has none, so **the bands are the digits ones, not
calibrated on MNIST**: the first run that calibrates them records its seeds' values here.
"""

from __future__ import annotations

from dataclasses import replace

from ..task import ClaimSpec, DataSpec, ModelSpec, OptimizerSpec, ScheduleSpec, Task, options
from . import register, sharp, suite
from .specs import COHEN21

MNIST = DataSpec(name="hub-mnist", n_train=1000, n_test=1000)

gd = register(
    Task(
        name="hub-mnist-1k/fc-tanh/mse/gd/lr=0.1",
        data=MNIST,
        model=ModelSpec(name="fc-tanh"),
        loss="mse",
        optimizer=OptimizerSpec(name="sgd", lr=0.1),
        schedule=ScheduleSpec(steps=3000, eval_every=250),
        measurements=(sharp(20),),
        claims=(ClaimSpec("eos", options=options(band=(0.95, 1.1))),),
        description="GD at lr=0.1 on MNIST from the Hub sharpens to 2/lr=20 and hovers there "
        "[band uncalibrated on MNIST: needs the network]",
        reference=COHEN21,
    )
)
control = register(
    replace(
        gd,
        name="hub-mnist-1k/fc-tanh/mse/gd/lr=0.02",
        optimizer=OptimizerSpec(name="sgd", lr=0.02),
        claims=(ClaimSpec("eos", expect="FAIL", options=options(band=(0.95, 1.1))),),
        description="negative control: at lr=0.02, 2/lr=100 is not reached in the budget "
        "[uncalibrated on MNIST]",
    )
)
suite("hub-mnist", [gd, control],
      "the edge of stability on MNIST from the Hugging Face Hub (fc-tanh, MSE, GD; needs the "
      "network once; bands uncalibrated)")  # fmt: skip

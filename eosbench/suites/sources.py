"""Tasks on data that users get from the Hugging Face Hub (``eosbench.data.hub``).

``hub-mnist``: Cohen et al.'s edge of stability on MNIST as the Hub serves it (``ylecun/mnist``
at a pinned commit; the first 1,000 training and test images, standardized per pixel), with
the digits smoke tasks' network, loss, schedule, measurements and claims (:mod:`.smoke`):
fc-tanh, MSE, full-batch GD at lr 0.1 for 3,000 steps, and the step 0.02 whose 2/lr = 100
the budget should not reach (the negative control).  The data needs the network once
(``eosbench data download hub-mnist``); the machine these tasks were written on has none, so
**the bands are the digits ones, not calibrated on MNIST**: the first run that calibrates
them records its seeds' values here.
"""

from __future__ import annotations

from dataclasses import replace

from ..data.hub import MNIST_REVISION
from ..task import DataSpec, options
from . import register, smoke, suite

# the pinned commit in the task itself, so that it enters the task's hash
MNIST = DataSpec(name="hub-mnist", n_train=1000, n_test=1000,
                 options=options(revision=MNIST_REVISION))  # fmt: skip
UNCALIBRATED = " [band uncalibrated on MNIST: needs the network]"

gd = register(replace(
    smoke.gd_mse, name="hub-mnist-1k/fc-tanh/mse/gd/lr=0.1", data=MNIST,
    description="GD at lr=0.1 on MNIST from the Hub sharpens to 2/lr=20 and hovers there"
    + UNCALIBRATED))  # fmt: skip
control = register(replace(
    smoke.gd_mse_small_lr, name="hub-mnist-1k/fc-tanh/mse/gd/lr=0.02", data=MNIST,
    description="negative control: at lr=0.02, 2/lr=100 is not reached in the budget"
    + UNCALIBRATED))  # fmt: skip
suite("hub-mnist", [gd, control],
      "the edge of stability on MNIST from the Hugging Face Hub (fc-tanh, MSE, GD; needs the "
      "network once; bands uncalibrated)")  # fmt: skip

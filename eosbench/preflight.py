"""The domain of every input of a run, checked before anything is written.

:func:`check_task` needs the task and the seed only (``reproduce`` calls it for every run
before the first starts); :func:`check_fit` the data set and the device too.  Each raises
:class:`~eosbench.errors.UserError` naming the field and its domain:

* the seed and the data seeds: integers in ``[0, SEED_MAX]`` (torch's and NumPy's seeds,
  with the generator seeds the runner derives from the run's seed);
* ``schedule.steps``: an integer >= 1, or none with ``schedule.epochs`` >= 1;
  ``schedule.eval_every`` >= 0; ``schedule.lr_schedule`` a known one;
* the optimizer's hyperparameters (:func:`eosbench.optim.validate`: step sizes and their
  products finite in float32), the loss, model and measurement names;
* ``model.init_scale`` finite in float32; the model buildable, its parameters (counted on
  the meta device, without allocating) within the memory of the device
  (:func:`eosbench.models.check_memory`);
* ``loss=ce`` only on a classification data set, ``data.augment`` only on images,
  ``optimizer.batch_size`` at most the training examples.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from .errors import UserError
from .task import LR_SCHEDULES, Task

SEED_MAX = 2**63 - 1 - 10_000_000  # the runner seeds generators with seed + 3,000,017 at most


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_seed(seed: Any, key: str = "seed") -> None:
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"{key}={seed!r}: expected an integer in [0, {SEED_MAX}]")


def check_schedule(task: Task) -> None:
    s = task.schedule
    for key in ("steps", "epochs"):
        v = getattr(s, key)
        if v is not None and (not _is_int(v) or v < 1):
            raise UserError(f"schedule.{key}={v!r}: expected an integer >= 1 (or none)")
    if s.steps is None and s.epochs is None:
        raise UserError("schedule.steps=none needs schedule.epochs (an integer >= 1)")
    if not _is_int(s.eval_every) or s.eval_every < 0:
        raise UserError(f"schedule.eval_every={s.eval_every!r}: expected an integer >= 0")
    for key in ("stop_loss", "stop_accuracy"):
        v = getattr(s, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):  # fmt: skip
            raise UserError(f"schedule.{key}={v!r}: expected a finite number (or none)")
    if s.lr_schedule not in LR_SCHEDULES:
        raise UserError(
            f"schedule.lr_schedule={s.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}"
        )


def check_task(task: Task, seed: int) -> None:
    """What can be checked of a run of ``task`` with ``seed`` without its data."""
    from .claims import check_claims
    from .losses import LOSSES
    from .measure import build_measurements
    from .models import MODELS
    from .optim import OPTIMIZERS, validate

    check_seed(seed)
    check_seed(task.data.subset_seed, "data.subset_seed")
    check_seed(task.data.noise_seed, "data.noise_seed")
    check_schedule(task)
    LOSSES.get(task.loss)
    MODELS.get(task.model.name)
    OPTIMIZERS.get(task.optimizer.name)
    validate(task.optimizer)
    s = task.model.init_scale
    big = torch.finfo(torch.get_default_dtype()).max
    if isinstance(s, bool) or not isinstance(s, int | float) or not abs(s) <= big:
        raise UserError(f"model.init_scale={s!r}: expected a finite number (|x| <= {big:.3g})")
    build_measurements(task)
    check_claims(task)


def device_memory(device: torch.device) -> int | None:
    """The bytes of memory of ``device`` (physical RAM for the CPU), None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None


def check_fit(task: Task, data, device: torch.device) -> None:
    """What needs the data set and the device: the loss, augmentation and batch size fit the
    data, and the model is buildable within the device's memory."""
    from .models import check_memory, meta_model
    from .optim import build_optimizer

    if task.loss == "ce" and data.n_classes < 2:
        raise UserError(f"loss=ce needs a classification data set; {task.data.name!r} is "
                        "a regression data set (use loss=mse)")  # fmt: skip
    if task.data.augment and len(data.input_shape) != 3:
        raise UserError(f"data.augment=true needs images [C, H, W]; {task.data.name!r} has "
                        f"inputs of shape {tuple(data.input_shape)}")  # fmt: skip
    n, b = int(data.x_train.shape[0]), task.optimizer.batch_size
    if b is not None and b > n:
        raise UserError(f"optimizer.batch_size={b} exceeds the {n} training examples")
    model = meta_model(task.model, data.input_shape, data.n_classes)
    if model is None:
        return
    check_memory(task.model, model, device_memory(device), str(device))
    try:  # the optimizer's own checks of its hyperparameters, on the meta parameters
        build_optimizer(task.optimizer, model.parameters())
    except UserError:
        raise
    except Exception:  # noqa: BLE001, S110 - not buildable on meta: the real build decides
        pass

"""Checkpoints: resume a killed run to exactly the time series it would have produced.

A checkpoint is taken at the top of the training loop, between two steps, every
``RunOptions.checkpoint_every`` steps and when SIGTERM arrives (the signal only sets a flag;
the checkpoint is written at the next step boundary, then the run stops with status
``interrupted``).  It holds the step, the model and optimizer states, every random
generator the loop uses (data order, stochastic measurements, augmentation, and the global
Python/NumPy/torch states), the eigensolver warm-start cache and the records so far, in
``<run>/checkpoint.pt``, written atomically.  It is our own file, read back with
``weights_only=False``; never load a checkpoint from an untrusted source.

On CPU a resumed run's time series is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store

FILE = "checkpoint.pt"


def _gen_state(g: torch.Generator | None) -> torch.Tensor | None:
    return None if g is None else g.get_state()


def state(trainer) -> dict[str, Any]:
    b = trainer.batches
    return {
        "step": trainer.step,
        "computation_hash": trainer.computation_hash,
        "seed": trainer.seed,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "records": trainer.records,
        "measure_seconds": trainer.measure_seconds,
        "gradients": (trainer.objective.gradient_evaluations, trainer.objective.gradient_examples),
        "cache": trainer.ctx.cache,
        "measure_generator": _gen_state(trainer.ctx.generator),
        "augment_generator": _gen_state(trainer.augment_gen),
        "batches": None if b is None else {"gen": b.gen.get_state(), "perm": b.perm},
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def save(trainer, rdir: Path) -> None:
    """Write the trainer's state to ``rdir/checkpoint.pt`` atomically."""
    buf = io.BytesIO()
    torch.save(state(trainer), buf)
    store.atomic_write_bytes(Path(rdir) / FILE, buf.getvalue())


def restore(trainer, rdir: Path) -> bool:
    """Load ``rdir/checkpoint.pt`` into ``trainer`` if it belongs to the same task hash and
    seed; return whether it did.  A checkpoint that cannot be read is ignored."""
    path = Path(rdir) / FILE
    if not path.is_file():
        return False
    try:
        ck = torch.load(path, map_location=trainer.x_tr.device, weights_only=False)
    except Exception:  # a truncated or foreign file: start over rather than crash
        return False
    same = ck.get("computation_hash") == trainer.computation_hash or (
        "computation_hash" not in ck and ck.get("task_hash") == trainer.task_hash
    )  # a checkpoint written before the computation hash keyed it: the same whole task
    if not same or ck.get("seed") != trainer.seed:
        return False
    trainer.model.load_state_dict(ck["model"])
    trainer.optimizer.load_state_dict(ck["optimizer"])
    trainer.step = ck["step"]
    trainer.records = ck["records"]
    trainer.measure_seconds = ck["measure_seconds"]
    # absent from checkpoints written before gradients were counted
    trainer.objective.gradient_evaluations, trainer.objective.gradient_examples = ck.get(
        "gradients", (0, 0)
    )
    trainer.ctx.cache.update(ck["cache"])
    if ck["measure_generator"] is not None:
        trainer.ctx.generator.set_state(ck["measure_generator"])
    if ck["augment_generator"] is not None:
        trainer.augment_gen.set_state(ck["augment_generator"])
    if ck["batches"] is not None:
        trainer.batches.gen.set_state(ck["batches"]["gen"])
        trainer.batches.perm = ck["batches"]["perm"]
    random.setstate(ck["python_rng"])
    np.random.set_state(ck["numpy_rng"])
    torch.set_rng_state(ck["torch_rng"])
    if ck["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["cuda_rng"])
    return True


_ACTIVE: list[TermFlag] = []  # the flags of the runs training in this process


def request_stop() -> bool:
    """Ask every run training in this process to checkpoint at its next step boundary and
    stop with status ``interrupted``, as SIGTERM does (for a signal handler, e.g. a cluster's
    preemption signal); whether a run was training."""
    for flag in _ACTIVE:
        flag.set = True
    return bool(_ACTIVE)


class TermFlag:
    """Turns SIGTERM into a flag checked at step boundaries (main thread only)."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self) -> TermFlag:
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            self._old = signal.signal(signal.SIGTERM, self._handle)
        _ACTIVE.append(self)
        return self

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

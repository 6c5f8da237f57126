"""Checkpoints: resume a killed run to exactly the time series it would have produced.

A checkpoint is taken at the top of the training loop, between two steps, every
``RunOptions.checkpoint_every`` steps and when SIGTERM arrives (the signal only sets a flag;
the checkpoint is written at the next step boundary, then the run stops with status
``interrupted``).  It holds the trainer's state (``_Trainer.state_dict`` in
:mod:`eosbench.runner`: the step, the model and optimizer states, every random generator
the loop uses, the eigensolver warm-start cache and the records so far) and the computation
hash and seed it belongs to, in ``<run>/checkpoint.pt``, written atomically.  It is our
own file, read back with ``weights_only=False``; never load a checkpoint from an untrusted
source.

On CPU a resumed run's time series is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import signal
from pathlib import Path
from typing import Any

import torch

from . import store
from .task import computation_hash

FILE = "checkpoint.pt"


def _owner(trainer) -> dict[str, Any]:
    """The integrity fields: the computation and the seed a checkpoint belongs to."""
    return {"computation_hash": computation_hash(trainer.task), "seed": trainer.seed}


def save(trainer, rdir: Path) -> None:
    """Write the trainer's state to ``rdir/checkpoint.pt`` atomically."""
    buf = io.BytesIO()
    torch.save({**_owner(trainer), **trainer.state_dict()}, buf)
    store.atomic_write_bytes(Path(rdir) / FILE, buf.getvalue())


def restore(trainer, rdir: Path) -> bool:
    """Load ``rdir/checkpoint.pt`` into ``trainer`` if it belongs to the same computation and
    seed; return whether it did.  A checkpoint that cannot be read is ignored."""
    path = Path(rdir) / FILE
    if not path.is_file():
        return False
    owner = _owner(trainer)
    try:
        ck = torch.load(path, map_location=trainer.device, weights_only=False)
        ours = all(ck[k] == v for k, v in owner.items())
    except Exception:  # a truncated or foreign file: start over rather than crash
        return False
    if ours:
        trainer.load_state_dict({k: v for k, v in ck.items() if k not in owner})
    return ours


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

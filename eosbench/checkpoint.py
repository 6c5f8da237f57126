"""Checkpoints: resume a killed run to exactly the time series it would have produced.

A checkpoint is taken at the top of the training loop, between two steps, every
``RunOptions.checkpoint_every`` steps and when SIGTERM arrives (the signal only sets a flag;
the checkpoint is written at the next step boundary, then the run stops with status
``interrupted``).  It holds the trainer's state (``_Trainer.state_dict`` in
:mod:`eosbench.runner`: the step, the model and optimizer states, every random generator
the loop uses, the eigensolver warm-start cache and the records so far), written atomically
to ``<run>/checkpoint.pt`` (``run.json`` and ``metrics.jsonl`` are rewritten with it, so
their step is the checkpoint's).

The file carries its own integrity: a first line :data:`MAGIC`, a JSON header line with the
computation hash and seed of the run it belongs to, the step, and the SHA-256 and length of
the rest, the ``torch.save`` bytes of the state (every tensor and every other value).  On
load each is checked before anything is unpickled; a checkpoint that fails any check, or
whose state does not load into the trainer, is *set aside* (renamed
``checkpoint.pt.rejected[-N]``, one warning line on standard error) and the run starts over
from step 0.  Temporary files of writes a kill interrupted are removed by the next run of
the directory (:func:`clean_up`).  The payload is read back with ``weights_only=False``
once its hash matches: never resume a run directory from an untrusted source.

On CPU a resumed run's time series is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from . import store
from .task import computation_hash

FILE = "checkpoint.pt"
MAGIC = b"EOSBENCH-CHECKPOINT 2\n"
REJECTED = FILE + ".rejected"
WRITTEN = (FILE, store.METRICS_FILE, store.RUN_FILE)  # what a run writes: its temp files


class Rejected(Exception):
    """Why a checkpoint is not resumed from."""


def _owner(trainer) -> dict[str, Any]:
    """The identity fields: the computation and the seed a checkpoint belongs to."""
    return {"computation_hash": computation_hash(trainer.task), "seed": trainer.seed}


def save(trainer, rdir: Path) -> None:
    """Write the trainer's state to ``rdir/checkpoint.pt`` atomically, with its header."""
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    payload = buf.getvalue()
    header = {
        **_owner(trainer),
        "step": trainer.step,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
    }
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    store.atomic_write_bytes(Path(rdir) / FILE, MAGIC + head + payload)


def read(path: Path, owner: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The header and the verified payload of the checkpoint at ``path`` if it belongs to
    ``owner`` (computation hash and seed); :class:`Rejected` otherwise."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise Rejected("not an eosbench checkpoint of this version (foreign, older or damaged)")
    head, sep, payload = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        header = None
    if not sep or not isinstance(header, dict):
        raise Rejected("its header is damaged")
    for k, v in owner.items():
        if header.get(k) != v:
            raise Rejected(f"it belongs to another run ({k} {header.get(k)!r:.24}, not {v!r:.24})")
    if len(payload) != header.get("bytes"):
        raise Rejected(f"it is truncated ({len(payload)} of {header.get('bytes')} bytes)")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise Rejected("its content does not match its SHA-256 (the file is damaged)")
    return header, payload


def restore(trainer, rdir: Path) -> str:
    """Load ``rdir/checkpoint.pt`` into ``trainer``: ``"restored"``, ``"absent"``, or
    ``"rejected"`` (the file set aside; the trainer may be partly loaded: build a new one)."""
    path = Path(rdir) / FILE
    if not path.is_file():
        return "absent"
    try:
        header, payload = read(path, _owner(trainer))
        state = torch.load(io.BytesIO(payload), map_location=trainer.device, weights_only=False)
        if not isinstance(state, dict) or state.get("step") != header.get("step"):
            raise Rejected("its state is not a trainer's state of the step its header names")
        trainer.load_state_dict(state)
    except Rejected as e:
        reason = str(e)
    except Exception as e:  # noqa: BLE001 - any failure to load means: start over
        reason = f"its state does not load ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    else:
        return "restored"
    set_aside(path, reason)
    return "rejected"


def set_aside(path: Path, reason: str) -> Path:
    """Rename the checkpoint ``path`` to the first free ``checkpoint.pt.rejected[-N]`` beside
    it, with one warning line; the new path."""
    path = Path(path)
    new, k = path.with_name(REJECTED), 1
    while new.exists():
        k += 1
        new = path.with_name(f"{REJECTED}-{k}")
    path.rename(new)
    print(
        f"eosbench: warning: {path}: {reason}; set aside as {new.name}, the run starts over",
        file=sys.stderr,
        flush=True,
    )
    return new


def clean_up(rdir: Path) -> list[Path]:
    """Remove the temporary files interrupted writes of a run left in ``rdir`` (call with
    the run's lock held); the paths removed."""
    removed = store.temp_files(rdir, WRITTEN)
    for p in removed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return removed


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

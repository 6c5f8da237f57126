"""The results store: one directory per run, plain files, atomic writes.

Layout::

    <out>/<task slug>/seed-<k>/run.json       # resolved task, hash, status, provenance
    <out>/<task slug>/seed-<k>/metrics.jsonl  # one JSON object per recorded step
    <out>/<task slug>/seed-<k>/claims.json    # written by ``eosbench check``

Every file is written to a temporary file in the same directory, flushed to
disk and renamed over the target, so a reader sees the old or the new
content, never a half-written file.  Non-finite floats are stored as ``null``
(JSON has no NaN); a run whose loss became non-finite has status
``diverged`` and ``diverged_at`` set.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CLAIMS_FILE = "claims.json"
FINISHED = ("completed", "diverged")


def finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + fsync + rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(
        path, json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    )


def dumps_records(records: Iterable[dict[str, Any]]) -> str:
    return "".join(
        json.dumps(finite(r), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
        for r in records
    )


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (an absent file has none)."""
    records = []
    if not Path(path).exists():
        return records
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e})") from None
    return records


def run_dir(out: Path, task_slug: str, seed: int) -> Path:
    return Path(out) / task_slug / f"seed-{seed}"


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories (holding ``run.json``) at or below each path, sorted."""
    found: set[Path] = set()
    for p in paths:
        p = Path(p)
        if (p / RUN_FILE).is_file():
            found.add(p)
        elif p.is_dir():
            found.update(f.parent for f in p.rglob(RUN_FILE))
        elif p.name == RUN_FILE and p.is_file():
            found.add(p.parent)
        else:
            raise UserError(f"{p}: not a run directory or a tree of them")
    return sorted(found)


def read_run_json(path: Path) -> dict[str, Any]:
    """The run record in ``path``, or ``{}`` when absent or unreadable."""
    try:
        return json.loads((Path(path) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def recorded_task(meta: dict[str, Any]):
    """The :class:`~eosbench.task.Task` a run record holds, or None if it holds none that
    parses."""
    from .task import from_dict

    try:
        return from_dict(meta["task"])
    except (UserError, KeyError, TypeError, ValueError):
        return None


def recorded_computation(meta: dict[str, Any]) -> str | None:
    """The computation hash (:func:`~eosbench.task.computation_hash`) of the task a run record
    holds, or None if it holds none that parses.  Recomputed from the recorded task, so runs
    written before the field existed are recognized too."""
    from .task import computation_hash

    task = recorded_task(meta)
    return None if task is None else computation_hash(task)


def finished_run(path: Path, computation: str, seed: int) -> dict[str, Any] | None:
    """The run record at ``path`` if it finished the same computation (the task up to its
    claims: ``computation`` is its :func:`~eosbench.task.computation_hash`) with this
    seed."""
    meta = read_run_json(path)
    if (
        meta.get("seed") == seed
        and meta.get("status") in FINISHED
        and recorded_computation(meta) == computation
    ):
        return meta
    return None


def load_run(path: Path):
    """The :class:`~eosbench.record.Run` in run directory ``path``: its record, its series
    (``metrics.jsonl``; empty while nothing is flushed) and its recorded verdicts."""
    from .claims import recorded_verdicts
    from .record import Run, Series

    path = Path(path)
    meta = read_json(path / RUN_FILE)
    series = Series.from_records(read_records(path / METRICS_FILE))
    try:
        return Run.from_record(str(path), meta, series, recorded_verdicts(path))
    except (UserError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / RUN_FILE}: {e}") from None


def load_runs(paths: Iterable[Path]) -> list:
    """The runs at or below ``paths``: each results folder's artifact
    (:mod:`eosbench.artifact`), else the run directories found there."""
    from .artifact import is_artifact, read_artifact

    paths = list(paths)
    out = [r for p in paths if is_artifact(p) for r in read_artifact(p)]
    dirs = [p for p in paths if not is_artifact(p)]
    return out + [load_run(r) for r in (find_runs(dirs) if dirs else [])]


@contextlib.contextmanager
def locked(path: Path, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on run directory ``path`` (never two workers on one run):
    wait for it, or raise :class:`UserError` at once if another process holds it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"{path}: another process is running this run") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

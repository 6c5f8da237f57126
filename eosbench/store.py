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
from collections.abc import Callable, Iterable, Iterator
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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_files(path: Path, names: Iterable[str]) -> list[Path]:
    """The temporary files that :func:`atomic_write_bytes` left in directory ``path`` for
    targets ``names`` (a write interrupted by a kill)."""
    path = Path(path)
    return sorted(p for n in names for p in path.glob(f".{n}.*.tmp") if p.is_file())


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


class LineError(ValueError):
    """A line of a JSON-lines file that does not parse; ``line`` counts from 1."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _loads_line(line: str) -> Any:
    return json.loads(line, parse_constant=_no_constant)


def json_lines(data: bytes, loads: Callable[[str], Any] = _loads_line) -> list[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of JSON-lines ``data``, each line parsed
    by ``loads`` (default: JSON without NaN/Infinity): the one JSON-lines parser of the
    package.  :class:`ValueError` for bytes that are not UTF-8, :class:`LineError` for the
    first line that does not parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((i, loads(line)))
        except RecursionError:
            raise LineError(i, "not valid JSON (nested too deeply)") from None
        except ValueError as e:
            msg = f"not valid JSON ({e})" if isinstance(e, json.JSONDecodeError) else str(e)
            raise LineError(i, msg) from None
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def loads_records(data: bytes, name: str) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` bytes (``name``: the file, for messages): objects with
    an integer ``step``, every other value a number or null.  Anything else is a one-line
    :class:`UserError` naming the file and the line."""
    try:
        lines = json_lines(data)
    except LineError as e:
        raise UserError(f"{name}:{e.line}: {e}") from None
    except ValueError as e:
        raise UserError(f"{name}: {e}") from None
    records = []
    for i, rec in lines:
        if not isinstance(rec, dict):
            raise UserError(f"{name}:{i}: expected a JSON object, got {type(rec).__name__}")
        if not isinstance(rec.get("step"), int) or isinstance(rec["step"], bool):
            raise UserError(f"{name}:{i}: expected an integer 'step'")
        for k, v in rec.items():
            if v is not None and not _is_number(v):
                raise UserError(f"{name}:{i}: {k}: expected a number or null, got {v!r:.40}")
        records.append(rec)
    return records


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (an absent file has none); see
    :func:`loads_records`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    return loads_records(data, str(path))


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
    (``metrics.jsonl``; empty while nothing is flushed) and its recorded verdicts.  A finished
    run whose series ends before the step ``run.json`` records (cut at a line boundary), or
    a completed run that never trained (step 0, no records), is a :class:`UserError`."""
    from .claims import recorded_verdicts
    from .record import Run, Series

    path = Path(path)
    meta = read_json(path / RUN_FILE)
    if not isinstance(meta, dict):
        raise UserError(f"{path / RUN_FILE}: expected a JSON object")
    metrics = path / METRICS_FILE
    records = read_records(metrics)
    _check_series(path, meta, records, metrics.exists())
    series = Series.from_records(records)
    try:
        return Run.from_record(str(path), meta, series, recorded_verdicts(path))
    except (UserError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / RUN_FILE}: {e}") from None


def _check_series(path: Path, meta: dict[str, Any], records: list, has_series: bool) -> None:
    """What the leaderboard validator requires of a finished run's series, for ``check``."""
    status, step = meta.get("status"), meta.get("step")
    if status == "completed" and ((isinstance(step, int) and step < 1) or
                                  (has_series and not records)):  # fmt: skip
        raise UserError(f"{path / RUN_FILE}: status completed, but the run never trained "
                        f"(step {step}, {len(records)} records)")  # fmt: skip
    if not has_series or status not in FINISHED or not isinstance(step, int):
        return
    last = -1
    for r in records:
        if r["step"] <= last:
            raise UserError(f"{path / METRICS_FILE}: step {r['step']} does not follow {last}")
        last = r["step"]
    if last != step:
        raise UserError(f"{path / METRICS_FILE}: the last record is step {last}, but "
                        f"{RUN_FILE} says step {step} (the series is cut or padded)")  # fmt: skip


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

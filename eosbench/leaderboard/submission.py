"""``eosbench submit validate``, ``submit template`` and ``submit plan``.

Validation reads data and nothing else: it never unpickles, imports or runs anything from
the submission, and no optimizer plug-in is imported while it runs (a method's threshold is
the one its manifest declares; for the built-in optimizers it must equal theirs).  Every
file is looked at with ``lstat`` first -- size, type, place -- and read only when it is a
regular file within the limits, inside the submission directory (``Path.resolve``), and
one a submission may hold (``manifest.json``, ``README.md``, and ``run.json``,
``metrics.jsonl`` and ``claims.json`` in the run directories the manifest lists).  A
symbolic link, a checkpoint (``*.pt``) or any other file is a problem; so are non-finite
numbers anywhere (``NaN``, ``Infinity``, ``1e999``: eosbench itself writes ``null``).

Then: the task of every run must be the registered track task with the entry's optimizer
(field by field, and its content hash), every seed of every task the entry's tracks
require must be there exactly once, the provenance complete, and the claims (each run's
``claims.json``) and the track scores (the manifest's) must equal those re-derived here
from the raw time series.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..task import Task, canonical_json, content_hash, slug, to_dict
from . import ENTRY_SCHEMA, SUBMISSION_SCHEMA
from .manifest import (
    MANIFEST,
    RUN_FILES,
    Manifest,
    Problem,
    SubmissionError,
    ThresholdDecl,
    TrackEntry,
    loads_strict,
    manifest_to_dict,
    parse_manifest,
)
from .tracks import TRACKS, RunData, Track, expected_task, optimizer_spec, score

README = "README.md"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib")
PROVENANCE_KEYS = (
    "eosbench",
    "python",
    "torch",
    "device",
    "device_name",
    "dataset",
    "dataset_checksum",
    "deterministic_algorithms",
)
REL_TOL = 1e-9  # re-derived numbers vs submitted ones (the same code on the same data)


@dataclass(frozen=True)
class Limits:
    """What a submission may hold; checked with ``lstat`` before anything is read."""

    file_bytes: int = 16 * 2**20  # any one file
    manifest_bytes: int = 1 * 2**20
    total_bytes: int = 256 * 2**20  # all files together
    files: int = 5000
    depth: int = 10  # directory levels below the submission directory


@dataclass
class Result:
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None
    entry: dict[str, Any] | None = None  # the leaderboard entry, when valid
    runs: dict[str, list[RunData]] = field(default_factory=dict)  # track -> runs

    @property
    def ok(self) -> bool:
        return not self.problems and self.entry is not None


# --- the file system ----------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class _TooMany(Exception):
    pass


def scan(root: Path, limits: Limits) -> tuple[dict[str, int], list[Problem]]:
    """Regular files under ``root`` (relative POSIX path -> size) and the problems of the
    tree: symbolic links, special files, files over the size limits, too many, too deep.
    Nothing is followed or read."""
    files: dict[str, int] = {}
    problems: list[Problem] = []
    total = 0
    root_real = root.resolve()

    def walk(d: Path, rel: str, depth: int) -> None:
        nonlocal total
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            problems.append(Problem(rel or ".", "-", f"cannot list the directory ({e.strerror})"))
            return
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            if len(files) + len(problems) > limits.files:
                problems.append(Problem(r, "-", f"more than {limits.files} files: stopped here"))
                raise _TooMany
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = Path(d, e.name).resolve()
                except (OSError, RuntimeError):  # a loop
                    target = None
                where = (
                    "inside the submission"
                    if target is not None and target.is_relative_to(root_real)
                    else f"pointing outside the submission ({target or 'a loop'})"
                )
                problems.append(
                    Problem(r, "-", f"symbolic link {where}: a submission holds plain files only")
                )
            elif stat.S_ISDIR(st.st_mode):
                if depth >= limits.depth:
                    problems.append(Problem(r, "-", f"more than {limits.depth} levels deep"))
                else:
                    walk(Path(d, e.name), r, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                files[r] = st.st_size
                total += st.st_size
                limit = limits.manifest_bytes if r == MANIFEST else limits.file_bytes
                if st.st_size > limit:
                    problems.append(
                        Problem(r, "-", f"{_mb(st.st_size)}, over the limit of {_mb(limit)}")
                    )
            else:
                problems.append(Problem(r, "-", "not a regular file (device, pipe or socket)"))

    with contextlib.suppress(_TooMany):
        walk(root, "", 0)
    if total > limits.total_bytes:
        problems.append(
            Problem(".", "-", f"{_mb(total)} in all, over the limit of {_mb(limits.total_bytes)}")
        )
    return files, problems


def read_limited(root: Path, rel: str, limit: int) -> bytes:
    """The bytes of the regular file ``root/rel`` (no symbolic link anywhere on the way,
    inside ``root``, at most ``limit`` bytes); :class:`ValueError` otherwise."""
    root_real = root.resolve()
    path = root_real / rel
    if not path.resolve().is_relative_to(root_real):
        raise ValueError("path escapes the submission directory")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{_mb(st.st_size)}, over the limit of {_mb(limit)}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"over the limit of {_mb(limit)} (grew while read)")
    return data


# --- optimizers: the declared threshold, no plug-ins -------------------------------------------


def _builtin_optimizers() -> frozenset[str]:
    from ..optim import OPTIMIZERS

    return frozenset(
        n for n, e in OPTIMIZERS._items.items() if getattr(e.build, "__module__", "").startswith(
            "eosbench."
        )
    )  # fmt: skip


@contextlib.contextmanager
def declared_optimizer(name: str, decl: ThresholdDecl | None) -> Iterator[None]:
    """While validating: no ``eosbench.optimizers`` plug-in is imported, and a non-built-in
    optimizer ``name`` has the threshold its manifest declares and cannot be built."""
    from ..optim import OPTIMIZERS, OptimizerEntry, Threshold, ThresholdError

    def refuse(*_: Any) -> Any:
        raise UserError(f"optimizer {name!r} is not built while validating a submission")

    def declared(spec: Any, grad_norm: float | None = None) -> Threshold:
        if decl is None:
            raise ThresholdError(f"the submission declares no threshold for {name!r}")
        return Threshold(decl.quantity, decl.value, decl.formula, "declared by the submission")

    reg = OPTIMIZERS
    items, loaded = dict(reg._items), reg._entry_points_loaded
    reg._entry_points_loaded = True
    if name not in _builtin_optimizers():
        reg._items[name] = OptimizerEntry(refuse, declared, "declared by a submission")
    try:
        yield
    finally:
        reg._items.clear()
        reg._items.update(items)
        reg._entry_points_loaded = loaded


# --- comparisons -----------------------------------------------------------------------------


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return a == b


def _diff(expected: Any, got: Any, path: str, out: list[str]) -> None:
    """Dotted paths where two JSON values differ (types too: 1 is not 1.0, nor true)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for k in sorted(set(expected) | set(got), key=str):
            p = f"{path}.{k}"
            if k not in got:
                out.append(f"{p}: missing (registered: {json.dumps(expected[k])})")
            elif k not in expected:
                out.append(f"{p}: not a field of the registered task")
            else:
                _diff(expected[k], got[k], p, out)
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            _diff(e, g, f"{path}[{i}]", out)
    elif canonical_json(expected) != canonical_json(got):
        out.append(f"{path}: registered {_j(expected)}, submitted {_j(got)}")


def _computation(task: Any) -> Any:
    """A task's JSON form without its claims (what a run computes)."""
    return {k: v for k, v in task.items() if k != "claims"} if isinstance(task, dict) else task


def _j(v: Any) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."


# --- validation -------------------------------------------------------------------------------


class _Checker:
    def __init__(self, root: Path, limits: Limits):
        self.root = Path(root)
        self.limits = limits
        self.problems: list[Problem] = []
        self._checksums: dict[Any, str | None] = {}

    def bad(self, file: str, fld: str, msg: str) -> None:
        self.problems.append(Problem(file, fld, msg))

    def read_json_file(self, rel: str, limit: int) -> Any:
        try:
            return loads_strict(read_limited(self.root, rel, limit))
        except OSError as e:
            self.bad(rel, "-", f"cannot read ({e.strerror})")
        except ValueError as e:
            self.bad(rel, "-", str(e))
        return None

    def dataset_checksum(self, task: Task) -> str | None:
        from ..data import load_dataset

        if task.data not in self._checksums:
            try:
                self._checksums[task.data] = load_dataset(task.data).checksum
            except UserError:
                self._checksums[task.data] = None  # data not here: not checked
        return self._checksums[task.data]


def validate(root: Path, limits: Limits = Limits()) -> Result:
    """Every problem of the submission in ``root``; the leaderboard entry when there is none.

    Raises :class:`UserError` only when ``root`` is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    res = Result()
    c = _Checker(root, limits)
    files, problems = scan(root, limits)
    c.problems += problems
    over = {p.file for p in problems}
    if MANIFEST not in files:
        c.bad(MANIFEST, "-", "missing: a submission needs a manifest")
        res.problems = c.problems
        return res
    if MANIFEST in over:
        res.problems = c.problems
        return res
    try:
        manifest = parse_manifest(read_limited(root, MANIFEST, limits.manifest_bytes))
    except (OSError, ValueError) as e:
        c.bad(MANIFEST, "-", f"cannot read ({e})")
        manifest = None
    except SubmissionError as e:
        c.problems += e.problems
        manifest = None
    if manifest is None:
        res.problems = c.problems
        return res
    res.manifest = manifest

    expected_files = {MANIFEST, README}
    for _, te in manifest.tracks:
        for r in te.runs:
            expected_files.update(f"{r.path}/{f}" for f in RUN_FILES)
    for rel in sorted(files):
        if rel in expected_files:
            continue
        if rel.lower().endswith(PICKLE_SUFFIXES):
            c.bad(rel, "-", "checkpoint/pickle files are not accepted (never loaded): remove it")
        else:
            c.bad(
                rel,
                "-",
                "unexpected file: a submission holds manifest.json, README.md and, in the run "
                "directories manifest.json lists, run.json, metrics.jsonl and claims.json",
            )

    tracks_out: dict[str, Any] = {}
    for name, te in manifest.tracks:
        track = TRACKS.get(name)
        out = _validate_track(c, files, over, manifest, track, te)
        if out is not None:
            res.runs[name], tracks_out[name] = out
    res.problems = c.problems
    if not c.problems:
        res.entry = _entry(
            manifest, tracks_out, read_limited(root, MANIFEST, limits.manifest_bytes)
        )
    return res


def _validate_track(c: _Checker, files, over, manifest: Manifest, track: Track, te: TrackEntry):
    from ..optim import ThresholdError
    from ..optim import threshold as builtin_threshold

    where = f"tracks.{track.name}"
    spec = optimizer_spec(track, manifest.code.optimizer, dict(te.hyperparameters))
    quantity = te.threshold.quantity if te.threshold is not None else None
    ok = True
    with declared_optimizer(manifest.code.optimizer, te.threshold):
        if te.threshold is not None and manifest.code.optimizer in _builtin_optimizers():
            try:
                t = builtin_threshold(spec)
            except (ThresholdError, UserError) as e:
                c.bad(MANIFEST, f"{where}.threshold", f"the built-in optimizer has none: {e}")
                ok = False
            else:
                if t.quantity != te.threshold.quantity or not _close(t.value, te.threshold.value):
                    c.bad(
                        MANIFEST,
                        f"{where}.threshold",
                        f"declared {te.threshold.quantity} <= {te.threshold.value!r}, but the "
                        f"built-in optimizer {spec.name!r} has {t.quantity} <= {t.value!r} "
                        f"({t.formula})",
                    )
                    ok = False
        required = {
            (task, seed) for task in track.tasks_for(quantity) for seed in _registered_seeds(task)
        }
        seen: dict[tuple[str, int], int] = {}
        paths: dict[str, int] = {}
        for i, r in enumerate(te.runs):
            fld = f"{where}.runs[{i}]"
            if (r.task, r.seed) in seen:
                c.bad(MANIFEST, fld, f"duplicate: task {r.task!r} seed {r.seed} is also "
                                     f"runs[{seen[(r.task, r.seed)]}]")  # fmt: skip
                ok = False
            seen.setdefault((r.task, r.seed), i)
            if r.path in paths:
                c.bad(MANIFEST, f"{fld}.path", f"also the path of runs[{paths[r.path]}]")
                ok = False
            paths.setdefault(r.path, i)
            if (r.task, r.seed) not in required:
                tasks = ", ".join(track.tasks_for(quantity))
                c.bad(MANIFEST, fld, f"task {r.task!r} seed {r.seed} is not a run of the "
                                     f"{track.name} track for this entry ({tasks})")  # fmt: skip
                ok = False
        for task, seed in sorted(required - set(seen)):
            c.bad(MANIFEST, f"{where}.runs", f"missing seed {seed} of task {task!r}")
            ok = False
        runs = []
        for i, r in enumerate(te.runs):
            if (r.task, r.seed) not in required:
                continue
            rd = _validate_run(c, files, over, f"{where}.runs[{i}]", track, spec, te, r)
            if rd is None:
                ok = False
            else:
                runs.append(rd)
    if not ok:
        return None
    scored = score(track, runs)
    submitted = dict(te.scores)
    for k in sorted(set(scored["scores"]) | set(submitted)):
        if k not in submitted:
            c.bad(MANIFEST, f"{where}.scores.{k}", "missing")
        elif k not in scored["scores"]:
            c.bad(MANIFEST, f"{where}.scores.{k}", "not a score of the track")
        elif not _close(scored["scores"][k], submitted[k]):
            c.bad(
                MANIFEST,
                f"{where}.scores.{k}",
                f"submitted {submitted[k]!r}, but the time series give {scored['scores'][k]!r}",
            )
    out = {
        "hyperparameters": dict(te.hyperparameters),
        "optimizer": asdict(spec),
        "threshold": asdict(te.threshold) if te.threshold is not None else None,
        "tasks": sorted({r.task.name for r in runs}),
        **scored,
    }
    return runs, out


def _registered_seeds(task: str) -> tuple[int, ...]:
    from ..suites import TASKS

    return TASKS.get(task).seeds


def _validate_run(c: _Checker, files, over, fld, track, spec, te: TrackEntry, r) -> RunData | None:
    from ..claims import Trajectory, evaluate

    n0 = len(c.problems)
    root_real = c.root.resolve()
    target = (root_real / r.path).resolve()
    if not target.is_relative_to(root_real):
        c.bad(MANIFEST, f"{fld}.path", f"{r.path!r} escapes the submission directory")
        return None
    if not target.is_dir():
        c.bad(MANIFEST, f"{fld}.path", f"{r.path!r} is not a directory of the submission")
        return None
    data: dict[str, bytes] = {}
    for name in RUN_FILES:
        rel = f"{r.path}/{name}"
        if rel not in files:
            c.bad(rel, "-", "missing")
            continue
        if rel in over:
            continue  # reported by the scan, never read
        try:
            data[name] = read_limited(c.root, rel, c.limits.file_bytes)
        except (OSError, ValueError) as e:
            c.bad(rel, "-", f"cannot read ({e})")
            continue
        digest = hashlib.sha256(data[name]).hexdigest()
        if digest != r.sha256(name):
            c.bad(rel, "-", f"SHA-256 {digest[:16]}... differs from manifest.json's "
                            f"{r.sha256(name)[:16]}... (the file changed after the manifest)")  # fmt: skip
    if len(data) != len(RUN_FILES):
        return None
    task = expected_task(track, r.task, spec)
    meta = _check_run_json(c, f"{r.path}/run.json", data["run.json"], task, r)
    records = _check_metrics(c, f"{r.path}/metrics.jsonl", data["metrics.jsonl"], meta)
    claims = _parse(c, f"{r.path}/claims.json", data["claims.json"])
    if meta is None or records is None or claims is None or len(c.problems) > n0:
        return None
    traj = Trajectory(records, meta["status"], meta.get("diverged_at"))
    try:
        verdicts = evaluate(task, traj)
    except (UserError, ValueError) as e:
        c.bad(f"{r.path}/metrics.jsonl", "-", f"the claims cannot be evaluated: {e}")
        return None
    _compare_claims(c, f"{r.path}/claims.json", claims, verdicts)
    if len(c.problems) > n0:
        return None
    return RunData(
        path=r.path,
        task=task,
        seed=r.seed,
        meta=meta,
        records=records,
        verdicts=verdicts,
        quantity=te.threshold.quantity if te.threshold is not None else None,
        threshold=te.threshold.value if te.threshold is not None else None,
    )


def _parse(c: _Checker, rel: str, data: bytes) -> Any:
    try:
        return loads_strict(data)
    except ValueError as e:
        c.bad(rel, "-", str(e))
        return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_run_json(c: _Checker, rel: str, data: bytes, task: Task, r) -> dict | None:
    from ..store import FINISHED, recorded_task

    meta = _parse(c, rel, data)
    if meta is None:
        return None
    if not isinstance(meta, dict):
        c.bad(rel, "-", "expected a JSON object")
        return None
    n0 = len(c.problems)
    spec = {
        "task": dict,
        "task_hash": str,
        "seed": int,
        "status": str,
        "step": int,
        "wall_seconds": (int, float),
        "measure_seconds": (int, float),
        "gradient_evaluations": int,
        "gradient_examples": int,
        "provenance": dict,
    }
    for k, t in spec.items():
        if k not in meta:
            c.bad(rel, k, "missing")
        elif isinstance(meta[k], bool) or not isinstance(meta[k], t):
            c.bad(rel, k, f"expected {getattr(t, '__name__', 'a number')}, got {_j(meta[k])}")
        elif _is_num(meta[k]) and meta[k] < 0:
            c.bad(rel, k, f"{meta[k]} is negative")
    if len(c.problems) > n0:
        return None
    if meta["seed"] != r.seed:
        c.bad(rel, "seed", f"{meta['seed']}, but manifest.json lists seed {r.seed}")
    if meta["status"] not in FINISHED:
        c.bad(rel, "status", f"{meta['status']!r}: the run did not finish ({', '.join(FINISHED)})")
    if meta["status"] == "diverged" and not _is_int(meta.get("diverged_at")):
        c.bad(rel, "diverged_at", "a diverged run needs the step it diverged at")
    diffs: list[str] = []
    # the claims are judged here by the registered ones, so a run made before they were
    # recalibrated (reused by `eosbench run`, which keys runs by their computation) is valid
    _diff(_computation(to_dict(task)), _computation(meta["task"]), "task", diffs)
    for d in diffs[:10]:
        fld, _, msg = d.partition(": ")
        c.bad(rel, fld, f"{msg} (the task must be the registered {task.name!r} with the "
                        "entry's optimizer)")  # fmt: skip
    if len(diffs) > 10:
        c.bad(rel, "task", f"{len(diffs) - 10} more fields differ from the registered task")
    recorded = None if (t := recorded_task(meta)) is None else content_hash(t)
    if not diffs and meta["task_hash"] != recorded:
        c.bad(
            rel,
            "task_hash",
            f"{meta['task_hash'][:16]}... is not the content hash of the task run.json "
            f"records ({(recorded or 'none: its claims do not parse')[:16]}...)",
        )
    prov = meta["provenance"]
    for k in PROVENANCE_KEYS:
        v = prov.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            c.bad(rel, f"provenance.{k}", "missing")
    if isinstance(prov.get("dataset_checksum"), str) and not diffs:
        here = c.dataset_checksum(task)
        if here is not None and here != prov["dataset_checksum"]:
            c.bad(
                rel,
                "provenance.dataset_checksum",
                f"{prov['dataset_checksum'][:16]}... is not the checksum of the data set here "
                f"({here[:16]}...)",
            )
    steps = task.schedule.steps
    if (
        meta["status"] == "completed"
        and steps is not None
        and meta.get("stop_reason") is None
        and meta["step"] != steps
    ):
        c.bad(rel, "step", f"the run ended at step {meta['step']} of the task's {steps}")
    return meta if len(c.problems) == n0 else None


def _check_metrics(c: _Checker, rel: str, data: bytes, meta: dict | None) -> list | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        c.bad(rel, "-", f"not UTF-8 text ({e.reason} at byte {e.start})")
        return None
    records: list[dict[str, Any]] = []
    last = -1
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = loads_strict(line)
        except ValueError as e:
            c.bad(rel, f"line {i}", str(e))
            return None
        if not isinstance(rec, dict) or not _is_int(rec.get("step")):
            c.bad(rel, f"line {i}", "expected an object with an integer 'step'")
            return None
        for k, v in rec.items():
            if v is not None and not _is_num(v):
                c.bad(rel, f"line {i}", f"{k}: expected a number or null, got {_j(v)}")
                return None
        if rec["step"] <= last:
            c.bad(rel, f"line {i}", f"step {rec['step']} does not follow step {last}")
            return None
        last = rec["step"]
        records.append(rec)
    if not records:
        c.bad(rel, "-", "no records")
        return None
    if meta is not None and _is_int(meta.get("step")) and last != meta["step"]:
        c.bad(rel, "-", f"the last record is step {last}, run.json says step {meta['step']}")
        return None
    return records


def _compare_claims(c: _Checker, rel: str, claims: Any, verdicts) -> None:
    if not isinstance(claims, list) or not all(isinstance(x, dict) for x in claims):
        c.bad(rel, "-", "expected an array of verdict objects")
        return
    if len(claims) != len(verdicts):
        c.bad(rel, "-", f"{len(claims)} verdicts, but the task has {len(verdicts)} claims")
        return
    for i, (got, v) in enumerate(zip(claims, verdicts, strict=True)):
        want = v.to_dict()
        for k in ("claim", "verdict", "expected", "measured", "target"):
            if k not in got:
                c.bad(rel, f"[{i}].{k}", "missing")
            elif not _close(want[k], got[k]):
                c.bad(
                    rel,
                    f"[{i}].{k}",
                    f"submitted {_j(got[k])}, but the time series give {_j(want[k])}",
                )


def _entry(manifest: Manifest, tracks: dict[str, Any], manifest_bytes: bytes) -> dict[str, Any]:
    return {
        "schema": ENTRY_SCHEMA,
        "id": manifest.id,
        "method": manifest.method,
        "authors": list(manifest.authors),
        "paper": manifest.paper,
        "code": asdict(manifest.code),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "tracks": tracks,
    }


def dumps_entry(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=1, sort_keys=True, allow_nan=False) + "\n"


# --- building a submission ----------------------------------------------------------------------


def _track_task_of(name: str) -> tuple[Track, str] | None:
    for tname in TRACKS.list():
        t = TRACKS.get(tname)
        if any(tt.task == name for tt in t.tasks):
            return t, name
    return None


def _distribution(optimizer: str) -> tuple[str, str] | None:
    """(package, version) of the installed distribution registering ``optimizer``."""
    from importlib import metadata

    if optimizer in _builtin_optimizers():
        return "eosbench", __version__
    for ep in metadata.entry_points(group="eosbench.optimizers"):
        if ep.name == optimizer and ep.dist is not None:
            return ep.dist.name, ep.dist.version
    return None


def template(
    out: Path,
    runs: list[Path],
    method: str,
    entry_id: str,
    authors: list[str],
    paper: str,
    package: str | None = None,
    version: str | None = None,
) -> Path:
    """Build a submission in ``out`` from finished run directories of track tasks (made by
    ``eosbench run``): copies ``run.json`` and ``metrics.jsonl``, evaluates the claims into
    ``claims.json``, declares the optimizer's threshold (from the installed optimizer) and
    writes ``manifest.json`` with the scores and file hashes, and a ``README.md``."""
    from ..claims import evaluate, Trajectory  # noqa: I001
    from ..optim import threshold
    from ..store import FINISHED, atomic_write_json, find_runs, read_json, read_records
    from ..task import from_dict
    from .tracks import hyperparameters_of

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory")
    found = find_runs(runs)
    if not found:
        raise UserError("no runs found under " + ", ".join(map(str, runs)))
    groups: dict[str, list[tuple[Path, dict, Task]]] = {}
    for rdir in found:
        meta = read_json(rdir / "run.json")
        task = from_dict(meta["task"])
        tt = _track_task_of(task.name)
        if tt is None:
            raise UserError(f"{rdir}: task {task.name!r} is not a task of a leaderboard track "
                            "(eosbench tasks --suite leaderboard)")  # fmt: skip
        if meta.get("status") not in FINISHED:
            raise UserError(f"{rdir}: the run did not finish (status {meta.get('status')!r})")
        groups.setdefault(tt[0].name, []).append((rdir, meta, task))
    optimizers = {t.optimizer.name for g in groups.values() for _, _, t in g}
    if len(optimizers) != 1:
        raise UserError(f"the runs use several optimizers ({', '.join(sorted(optimizers))}): "
                        "a submission is one method")  # fmt: skip
    optimizer = optimizers.pop()
    if package is None or version is None:
        dist = _distribution(optimizer)
        if dist is None:
            raise UserError(f"optimizer {optimizer!r}: no installed package registers it; "
                            "give --package and --version")  # fmt: skip
        package, version = package or dist[0], version or dist[1]
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)

    def build() -> None:
        tracks: dict[str, Any] = {}
        for tname in sorted(groups):
            track = TRACKS.get(tname)
            specs = {t.optimizer for _, _, t in groups[tname]}
            if len(specs) != 1:
                raise UserError(f"the {tname} track's runs use different hyperparameters: "
                                + "; ".join(sorted(map(str, specs))))  # fmt: skip
            spec = specs.pop()
            decl = None
            if track.needs_threshold:
                try:
                    t = threshold(spec)
                except UserError as e:
                    raise UserError(f"the {tname} track needs a stability threshold: {e}") from None
                decl = ThresholdDecl(t.quantity, float(t.value), t.formula)
            run_refs, data = [], []
            for rdir, meta, task in sorted(groups[tname], key=lambda g: (g[2].name, g[1]["seed"])):
                rel = f"runs/{tname}/{slug(task.name)}/seed-{meta['seed']}"
                dest = out / rel
                dest.mkdir(parents=True)
                shutil.copyfile(rdir / "run.json", dest / "run.json")
                shutil.copyfile(rdir / "metrics.jsonl", dest / "metrics.jsonl")
                records = read_records(dest / "metrics.jsonl")
                verdicts = evaluate(
                    task, Trajectory(records, meta["status"], meta.get("diverged_at"))
                )
                atomic_write_json(dest / "claims.json", [v.to_dict() for v in verdicts])
                files = {f: hashlib.sha256((dest / f).read_bytes()).hexdigest() for f in RUN_FILES}
                run_refs.append(
                    {"task": task.name, "seed": meta["seed"], "path": rel, "files": files}
                )
                data.append(
                    RunData(
                        rel,
                        task,
                        meta["seed"],
                        meta,
                        records,
                        verdicts,
                        decl.quantity if decl else None,
                        decl.value if decl else None,
                    )  # fmt: skip
                )
            entry: dict[str, Any] = {
                "hyperparameters": hyperparameters_of(spec, track),
                "runs": run_refs,
                "scores": score(track, data)["scores"],
            }
            if decl is not None:
                entry["threshold"] = asdict(decl)
            tracks[tname] = entry
        manifest = {
            "schema": SUBMISSION_SCHEMA,
            "id": entry_id,
            "method": method,
            "authors": authors,
            "paper": paper,
            "code": {"package": package, "version": version, "optimizer": optimizer},
            "tracks": tracks,
        }
        try:  # the manifest's own checks, before it is written
            manifest = manifest_to_dict(parse_manifest(manifest))
        except SubmissionError as e:
            raise UserError("the manifest would be invalid:\n" + str(e)) from None
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (out / README).write_text(_readme(manifest))

    try:
        build()
    except BaseException:  # leave no half-built submission behind
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise
    return out


def _readme(m: dict[str, Any]) -> str:
    lines = [
        f"# {m['method']}: an eosbench leaderboard submission",
        "",
        f"Authors: {', '.join(m['authors'])}. Paper: <{m['paper']}>.",
        f"Code: `pip install {m['code']['package']}=={m['code']['version']}`, optimizer "
        f"`{m['code']['optimizer']}` (entry point group `eosbench.optimizers`).",
        "",
        "Built by `eosbench submit template` from runs of `eosbench run`; check it with",
        "`eosbench submit validate .` and `eosbench submit verify . --sample 2`.",
        "",
    ]
    for name, t in sorted(m["tracks"].items()):
        hp = ", ".join(f"{k}={v}" for k, v in sorted(t["hyperparameters"].items())) or "defaults"
        lines.append(f"- **{name}**: {len(t['runs'])} runs; hyperparameters: {hp}")
        if "threshold" in t:
            th = t["threshold"]
            lines.append(f"  threshold: {th['quantity']} <= {th['value']:.6g} ({th['formula']})")
    return "\n".join(lines) + "\n"


def plan(
    optimizer: str,
    hyperparameters: dict[str, dict[str, Any]],
    out: Path,
    device: str | None = None,
) -> list[list[str]]:
    """The ``eosbench run`` command lines of a complete entry: for each track in
    ``hyperparameters`` (track -> fields), each task that applies, each registered seed."""
    from ..optim import threshold
    from ..suites import TASKS
    from .tracks import spec_overrides

    cmds = []
    for tname, hp in hyperparameters.items():
        track = TRACKS.get(tname)
        bad = [k for k in hp if k in track.fixed or k == "name"]
        if bad:
            raise UserError(f"the {tname} track fixes {', '.join(bad)}")
        try:
            spec = optimizer_spec(track, optimizer, hp)
        except TypeError as e:
            raise UserError(f"hyperparameters of the {tname} track: {e}") from None
        quantity = None
        if track.needs_threshold:
            try:
                quantity = threshold(spec).quantity
            except UserError as e:
                raise UserError(f"the {tname} track needs a stability threshold: {e}") from None
        for tn in track.tasks_for(quantity):
            task = TASKS.get(tn)
            sets = [x for o in spec_overrides(task, spec) for x in ("--set", o)]
            for seed in task.seeds:
                cmd = ["eosbench", "run", tn, "--seed", str(seed), *sets]
                cmd += ["--out", str(Path(out) / tname), "--no-progress"]
                cmds.append(cmd + (["--device", device] if device else []))
    return cmds


def accept(result: Result, leaderboard: Path) -> Path:
    """Write the entry of a valid submission to ``leaderboard/entries/<id>.json``."""
    from ..store import atomic_write_text

    if not result.ok:
        raise UserError("the submission is not valid")
    path = Path(leaderboard) / "entries" / f"{result.entry['id']}.json"
    atomic_write_text(path, dumps_entry(result.entry))
    return path

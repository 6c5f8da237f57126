"""``eosbench submit validate``: every problem of a submission, and its leaderboard entry.

Validation reads data and nothing else (:mod:`.sandbox`): it never unpickles, imports or
runs anything from the submission, and no optimizer plug-in is imported while it runs.  A
method's claims and scores are judged by the threshold its manifest declares
(:meth:`~.manifest.ThresholdDecl.threshold`, passed to :func:`eosbench.claims.evaluate`);
for the built-in optimizers the declaration must equal theirs (:func:`threshold_mismatch`),
and no other optimizer is ever built.  A symbolic link, a checkpoint (``*.pt``) or any other
file than ``manifest.json``, ``README.md`` and, in the run directories the manifest lists,
``run.json``, ``metrics.jsonl`` and ``claims.json`` is a problem; so are non-finite numbers
anywhere (``NaN``, ``Infinity``, ``1e999``: eosbench itself writes ``null``).

Then: the task of every run must be the registered track task with the entry's optimizer
(field by field, and its content hash), every seed of every task the entry's tracks
require must be there exactly once, the provenance complete, and the claims (each run's
``claims.json``) and the track scores (the manifest's) must equal those re-derived here
from the raw time series.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..record import Run, Series
from ..task import OptimizerSpec, Task, canonical_json, content_hash, to_dict
from . import ENTRY_SCHEMA
from .manifest import (
    MANIFEST,
    RUN_FILES,
    Manifest,
    Problem,
    SubmissionError,
    ThresholdDecl,
    TrackEntry,
    loads_strict,
    parse_manifest,
)
from .sandbox import (
    DEFAULT_LIMITS,
    PICKLE_SUFFIXES,
    Limits,
    LineError,
    loads_records,
    read_limited,
    scan,
)
from .tracks import TRACKS, Track, optimizer_spec

if TYPE_CHECKING:
    from ..optim.thresholds import Threshold

README = "README.md"
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
UNEXPECTED = (
    "unexpected file: a submission holds manifest.json, README.md and, in the run directories "
    "manifest.json lists, run.json, metrics.jsonl and claims.json"
)


@dataclass
class Result:
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None
    entry: dict[str, Any] | None = None  # the leaderboard entry, when valid
    runs: dict[str, list[Run]] = field(default_factory=dict)  # track -> runs, as validated

    @property
    def ok(self) -> bool:
        return not self.problems and self.entry is not None


# --- optimizers: the built-in ones, no plug-ins -----------------------------------------------


def builtin_optimizers() -> frozenset[str]:
    """The optimizers eosbench itself registers (looked up without loading any plug-in)."""
    from ..optim import OPTIMIZERS

    def module(name: str) -> str:
        return getattr(OPTIMIZERS.get(name, entry_points=False).build, "__module__", "")

    names = OPTIMIZERS.list(entry_points=False)
    return frozenset(n for n in names if module(n).startswith("eosbench."))


def threshold_mismatch(decl: ThresholdDecl, t: Threshold, whose: str) -> str | None:
    """Why the declared threshold is not ``t``, the one of ``whose`` optimizer (None when it
    is: the same quantity and value).  The one check of a declaration against an optimizer."""
    if t.quantity == decl.quantity and _close(t.value, decl.value):
        return None
    return (
        f"declared {decl.quantity} <= {decl.value!r}, but {whose} has {t.quantity} <= "
        f"{t.value!r} ({t.formula})"
    )


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
    """A task's JSON form without its claims (what a run computes), each spec's fields that
    the record leaves out at their defaults: a record made before a field existed computed
    its default (the content hash leaves defaults out for the same reason)."""
    if not isinstance(task, dict):
        return task
    defaults = to_dict(Task(name=""))
    return {
        k: {**defaults[k], **v} if k in SPECS and isinstance(v, dict) else v
        for k, v in task.items()
        if k != "claims"
    }


SPECS = ("data", "model", "optimizer", "schedule")


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
        """Report a problem; None, so that ``return c.bad(...)`` reports and gives up."""
        self.problems.append(Problem(file, fld, msg))

    def dataset_checksum(self, task: Task, seed: int) -> str | None:
        from ..data import load_dataset, seeded

        key = (task.data, seed if seeded(task.data.name) else None)  # a seeded pool is per seed
        if key not in self._checksums:
            try:
                self._checksums[key] = load_dataset(task.data, seed=key[1]).checksum
            except UserError:
                self._checksums[key] = None  # data not here: not checked
        return self._checksums[key]


def validate(root: Path, limits: Limits = DEFAULT_LIMITS) -> Result:
    """Every problem of the submission in ``root``; the leaderboard entry when there is none.

    Raises :class:`UserError` only when ``root`` is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    c = _Checker(root, limits)
    res = Result(problems=c.problems)  # the checker's list: every problem found
    files, problems = scan(root, limits)
    c.problems += problems
    over = {p.file for p in problems}
    if MANIFEST not in files:
        c.bad(MANIFEST, "-", "missing: a submission needs a manifest")
    if MANIFEST not in files or MANIFEST in over:
        return res
    try:
        manifest_bytes = read_limited(root, MANIFEST, limits.manifest_bytes)
        res.manifest = manifest = parse_manifest(manifest_bytes)
    except (OSError, ValueError) as e:
        c.bad(MANIFEST, "-", f"cannot read ({e})")
        return res
    except SubmissionError as e:
        c.problems += e.problems
        return res

    expected_files = {MANIFEST, README}
    for _, te in manifest.tracks:
        for r in te.runs:
            expected_files.update(f"{r.path}/{f}" for f in RUN_FILES)
    for rel in sorted(set(files) - expected_files):
        c.bad(rel, "-", "checkpoint/pickle files are not accepted (never loaded): remove it"
              if rel.lower().endswith(PICKLE_SUFFIXES) else UNEXPECTED)  # fmt: skip

    tracks_out: dict[str, Any] = {}
    for name, te in manifest.tracks:
        track = TRACKS.get(name)
        out = _validate_track(c, files, over, manifest, track, te)
        if out is not None:
            res.runs[name], tracks_out[name] = out
    _check_version(c, manifest, [r for runs in res.runs.values() for r in runs])
    if not c.problems:
        res.entry = _entry(manifest, tracks_out, manifest_bytes)
    return res


def _check_version(c: _Checker, manifest: Manifest, runs: list[Run]) -> None:
    """All runs made by one eosbench version at one commit, the version the manifest's
    ``code.version`` where the optimizer is eosbench's own."""
    for key in ("eosbench", "git_commit"):
        seen = {r.provenance.get(key) for r in runs}
        if len(seen) > 1:
            for r in runs:
                c.bad(f"{r.id}/run.json", f"provenance.{key}", f"{r.provenance.get(key)!r}: the "
                      f"runs of a submission must agree ({sorted(map(str, seen))})")  # fmt: skip
    versions = {r.provenance.get("eosbench") for r in runs}
    if (len(versions) == 1 and manifest.code.package == "eosbench"
            and versions != {manifest.code.version}):  # fmt: skip
        c.bad(MANIFEST, "code.version", f"{manifest.code.version!r}, but the runs were made by "
              f"eosbench {versions.pop()!r}")  # fmt: skip


def _check_threshold(c: _Checker, where: str, spec: OptimizerSpec, decl: ThresholdDecl) -> bool:
    """Whether the declared threshold is the built-in optimizer's (reported where not); a
    declaration for another optimizer is taken as it is."""
    from ..optim import OPTIMIZERS, ThresholdError
    from ..optim import validate as validate_spec

    if spec.name not in builtin_optimizers():
        return True
    try:  # eosbench.optim.threshold without loading any plug-in
        validate_spec(spec)
        t = OPTIMIZERS.get(spec.name, entry_points=False).threshold(spec)
    except (ThresholdError, UserError) as e:
        c.bad(MANIFEST, f"{where}.threshold", f"the built-in optimizer has none: {e}")
        return False
    why = threshold_mismatch(decl, t, f"the built-in optimizer {spec.name!r}")
    if why is not None:
        c.bad(MANIFEST, f"{where}.threshold", why)
    return why is None


def _validate_track(c: _Checker, files, over, manifest: Manifest, track: Track, te: TrackEntry):
    where = f"tracks.{track.name}"
    spec = optimizer_spec(track, manifest.code.optimizer, dict(te.hyperparameters))
    decl = te.threshold
    quantity = decl.quantity if decl is not None else None
    # what the claims and scores are judged by (None: the track needs no threshold); a
    # wrong declaration is reported once, and no claim is judged by it
    threshold = decl.threshold() if decl is not None else None
    n0 = len(c.problems)  # any problem from here on: the track is not scored
    judge = decl is None or _check_threshold(c, where, spec, decl)
    required = {(t, seed) for t in track.tasks_for(quantity) for seed in _registered(t).seeds}
    seen: dict[tuple[str, int], int] = {}
    paths: dict[str, int] = {}
    for i, r in enumerate(te.runs):
        fld = f"{where}.runs[{i}]"
        if (r.task, r.seed) in seen:
            c.bad(MANIFEST, fld, f"duplicate: task {r.task!r} seed {r.seed} is also "
                                 f"runs[{seen[(r.task, r.seed)]}]")  # fmt: skip
        seen.setdefault((r.task, r.seed), i)
        if r.path in paths:
            c.bad(MANIFEST, f"{fld}.path", f"also the path of runs[{paths[r.path]}]")
        paths.setdefault(r.path, i)
        if (r.task, r.seed) not in required:
            tasks = ", ".join(track.tasks_for(quantity))
            c.bad(MANIFEST, fld, f"task {r.task!r} seed {r.seed} is not a run of the "
                                 f"{track.name} track for this entry ({tasks})")  # fmt: skip
    for task, seed in sorted(required - set(seen)):
        c.bad(MANIFEST, f"{where}.runs", f"missing seed {seed} of task {task!r}")
    runs = [
        _validate_run(c, files, over, f"{where}.runs[{i}]", track, spec, r, threshold, judge)
        for i, r in enumerate(te.runs)
        if (r.task, r.seed) in required
    ]
    if len(c.problems) > n0 or None in runs:
        return None
    scored = track.score(runs, threshold)
    submitted, derived = dict(te.scores), scored["scores"]
    keys = sorted(set(derived) | set(submitted))
    _compare(c, MANIFEST, f"{where}.scores.", keys, submitted, derived, repr)
    out = {
        "hyperparameters": dict(te.hyperparameters),
        "optimizer": asdict(spec),
        "threshold": asdict(decl) if decl is not None else None,
        "tasks": sorted({r.task.name for r in runs}),
        **scored,
    }
    return runs, out


def _registered(task: str) -> Task:
    from ..suites import TASKS

    return TASKS.get(task)


def _validate_run(c: _Checker, files, over, fld, track, spec, r, threshold, judge) -> Run | None:
    """The run ``r`` of the manifest with its claims re-derived (by the declared
    ``threshold``), None when it has problems; ``judge=False``: its claims are not judged
    (the declaration is wrong, reported already)."""
    from ..claims import evaluate

    n0 = len(c.problems)
    root_real = c.root.resolve()
    target = (root_real / r.path).resolve()
    if not target.is_relative_to(root_real):
        return c.bad(MANIFEST, f"{fld}.path", f"{r.path!r} escapes the submission directory")
    if not target.is_dir():
        return c.bad(MANIFEST, f"{fld}.path", f"{r.path!r} is not a directory of the submission")
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
    task = replace(_registered(r.task), optimizer=spec)  # as registered, the entry's optimizer
    meta = _check_run_json(c, f"{r.path}/run.json", data["run.json"], task, r)
    records = _check_metrics(c, f"{r.path}/metrics.jsonl", data["metrics.jsonl"], meta)
    claims = _parse(c, f"{r.path}/claims.json", data["claims.json"])
    if meta is None or records is None or claims is None or len(c.problems) > n0:
        return None
    if not judge:
        return None
    run = Run.from_record(r.path, meta, Series.from_records(records))  # its task checked
    try:
        verdicts = evaluate(task, run, threshold=threshold)
    except (UserError, ValueError) as e:
        return c.bad(f"{r.path}/metrics.jsonl", "-", f"the claims cannot be evaluated: {e}")
    _compare_claims(c, f"{r.path}/claims.json", claims, verdicts)
    if len(c.problems) > n0:
        return None
    return replace(run, verdicts=tuple(verdicts))  # as re-derived (equal to claims.json's)


def _parse(c: _Checker, rel: str, data: bytes) -> Any:
    try:
        return loads_strict(data)
    except ValueError as e:
        return c.bad(rel, "-", str(e))


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
        return c.bad(rel, "-", "expected a JSON object")
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
        ours = (recorded or "none: its claims do not parse")[:16]
        c.bad(rel, "task_hash", f"{meta['task_hash'][:16]}... is not the content hash of the task "
                                f"run.json records ({ours}...)")  # fmt: skip
    prov = meta["provenance"]
    for k in PROVENANCE_KEYS:
        v = prov.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            c.bad(rel, f"provenance.{k}", "missing")
    if isinstance(prov.get("dataset_checksum"), str) and not diffs:
        here = c.dataset_checksum(task, meta["seed"])
        if here is not None and here != prov["dataset_checksum"]:
            c.bad(rel, "provenance.dataset_checksum", f"{prov['dataset_checksum'][:16]}... is not "
                  f"the checksum of the data set here ({here[:16]}...)")  # fmt: skip
    steps = task.schedule.steps
    early = steps is not None and meta["step"] != steps and meta.get("stop_reason") is None
    if meta["status"] == "completed" and early:
        c.bad(rel, "step", f"the run ended at step {meta['step']} of the task's {steps}")
    return meta if len(c.problems) == n0 else None


def _check_metrics(c: _Checker, rel: str, data: bytes, meta: dict | None) -> list | None:
    try:
        lines = loads_records(data)
    except LineError as e:
        return c.bad(rel, f"line {e.line}", str(e))
    except ValueError as e:
        return c.bad(rel, "-", str(e))
    records: list[dict[str, Any]] = []
    last = -1
    for i, rec in lines:
        if not isinstance(rec, dict) or not _is_int(rec.get("step")):
            return c.bad(rel, f"line {i}", "expected an object with an integer 'step'")
        for k, v in rec.items():
            if v is not None and not _is_num(v):
                return c.bad(rel, f"line {i}", f"{k}: expected a number or null, got {_j(v)}")
        if rec["step"] <= last:
            return c.bad(rel, f"line {i}", f"step {rec['step']} does not follow step {last}")
        last = rec["step"]
        records.append(rec)
    if not records:
        return c.bad(rel, "-", "no records")
    if meta is not None and _is_int(meta.get("step")) and last != meta["step"]:
        return c.bad(rel, "-", f"the last record is step {last}, run.json says step {meta['step']}")
    return records


def _compare_claims(c: _Checker, rel: str, claims: Any, verdicts) -> None:
    if not isinstance(claims, list) or not all(isinstance(x, dict) for x in claims):
        return c.bad(rel, "-", "expected an array of verdict objects")
    if len(claims) != len(verdicts):
        return c.bad(rel, "-", f"{len(claims)} verdicts, but the task has {len(verdicts)} claims")
    for i, (got, v) in enumerate(zip(claims, verdicts, strict=True)):
        keys = ("claim", "verdict", "expected", "measured", "target")
        _compare(c, rel, f"[{i}].", keys, got, v.to_dict(), _j)


def _compare(c: _Checker, rel: str, prefix: str, keys, submitted: dict, derived: dict, show):
    """Each of ``keys`` missing from ``submitted``, not ``derived``, or not equal to it."""
    for k in keys:
        if k not in submitted:
            c.bad(rel, prefix + k, "missing")
        elif k not in derived:
            c.bad(rel, prefix + k, "not a score of the track")
        elif not _close(derived[k], submitted[k]):
            why = f"submitted {show(submitted[k])}, but the time series give {show(derived[k])}"
            c.bad(rel, prefix + k, why)


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


def accept(result: Result, leaderboard: Path) -> Path:
    """Write the entry of a valid submission to ``leaderboard/entries/<id>.json``."""
    from ..store import atomic_write_text

    if not result.ok:
        raise UserError("the submission is not valid")
    path = Path(leaderboard) / "entries" / f"{result.entry['id']}.json"
    atomic_write_text(path, dumps_entry(result.entry))
    return path

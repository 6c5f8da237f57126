"""The submission manifest (``manifest.json``) and its parser.

A submission is a directory::

    manifest.json                        # this schema
    README.md                            # optional, free text
    runs/<track>/<task slug>/seed-<k>/   # one per (task, seed) of each track entered:
        run.json  metrics.jsonl  claims.json   # as written by `eosbench run` / `check`

``manifest.json`` (``"schema": "eosbench-submission/1"``)::

    {
      "schema": "eosbench-submission/1",
      "id": "my-method",                       # [a-z0-9][a-z0-9-]*, names the entry's file
      "method": "My method",                   # display name
      "authors": ["A. Author", "B. Author"],
      "paper": "https://arxiv.org/abs/...",    # http(s) link
      "code": {"package": "my-method",         # pip-installable distribution and version
               "version": "1.0.2",             # that registers the optimizer under the
               "optimizer": "my-opt"},         # `eosbench.optimizers` entry point group
      "tracks": {
        "stability": {
          "hyperparameters": {"lr": 0.2},      # OptimizerSpec fields other than defaults
          "threshold": {"quantity": "sharpness", "value": 10.0, "formula": "2/lr"},
          "runs": [{"task": "...", "seed": 0, "path": "runs/stability/.../seed-0",
                    "files": {"run.json": "<sha256>", "metrics.jsonl": "<sha256>",
                              "claims.json": "<sha256>"}}, ...],
          "scores": {...}                      # as re-derived by the validator
        },
        "generalization": {...}                # no threshold
      }
    }

Data only: the parser reads JSON and nothing else.  :func:`parse_manifest` raises
:class:`SubmissionError` -- and nothing else, whatever the input -- listing every problem
with its field.  Non-finite numbers (``NaN``, ``Infinity``, ``1e999``) and duplicate keys
are rejected.
"""

from __future__ import annotations

import json
import math
import re
import typing
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from . import SUBMISSION_SCHEMA

if TYPE_CHECKING:
    from ..optim.thresholds import Threshold

MANIFEST = "manifest.json"
RUN_FILES = ("run.json", "metrics.jsonl", "claims.json")
MAX_RUNS = 1000

_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_URL = re.compile(r"https?://[^\s<>\"'`\\]{1,500}")
_PACKAGE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")
_VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,5}((a|b|rc)\d{1,9})?(\.post\d{1,9})?(\.dev\d{1,9})?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PART = re.compile(r"[A-Za-z0-9_.=+,@-]{1,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission: ``file: field: message``."""

    file: str  # relative to the submission directory
    field: str  # dotted path in the file, "line N", or "-" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class SubmissionError(Exception):
    """A submission (or a part of it) is invalid; ``problems`` says what and where."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(map(str, self.problems)) or "invalid submission")


# --- strict JSON ----------------------------------------------------------------------------


class _Reject(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject(f"duplicate key {k!r}")
        out[k] = v
    return out


def _constant(name: str) -> Any:
    raise _Reject(f"non-finite number {name} is not allowed")


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Reject(f"number {text[:30]} is not finite")
    return v


def loads_strict(data: bytes | str) -> Any:
    """JSON without NaN/Infinity, out-of-range numbers or duplicate keys.

    Raises :class:`ValueError` with a short message for anything else."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(
            data, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float
        )
    except _Reject as e:
        raise ValueError(str(e)) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ValueError(f"not valid JSON ({str(e)[:100]})") from None


# --- the manifest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    package: str
    version: str
    optimizer: str


@dataclass(frozen=True)
class ThresholdDecl:
    quantity: str  # sharpness | preconditioned_sharpness
    value: float
    formula: str

    DECLARED: ClassVar[str] = "declared by the submission"

    def threshold(self) -> Threshold:
        """The :class:`~eosbench.optim.thresholds.Threshold` declared: what the entry's claims
        and scores are judged by."""
        from ..optim.thresholds import Threshold

        return Threshold(self.quantity, self.value, self.formula, self.DECLARED)


@dataclass(frozen=True)
class RunRef:
    task: str
    seed: int
    path: str  # relative POSIX path of the run directory
    files: tuple[tuple[str, str], ...]  # (file name, sha256)

    def sha256(self, name: str) -> str:
        return dict(self.files)[name]


@dataclass(frozen=True)
class TrackEntry:
    hyperparameters: tuple[tuple[str, Any], ...]
    threshold: ThresholdDecl | None
    runs: tuple[RunRef, ...]
    scores: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Manifest:
    schema: str
    id: str
    method: str
    authors: tuple[str, ...]
    paper: str
    code: Code
    tracks: tuple[tuple[str, TrackEntry], ...]  # sorted by track name

    def track(self, name: str) -> TrackEntry:
        return dict(self.tracks)[name]


class _Parser:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def bad(self, field: str, message: str) -> None:
        """Report a problem; None, so that ``return self.bad(...)`` reports and gives up."""
        self.problems.append(Problem(self.file, field, message))

    def obj(self, v: Any, path: str, keys: tuple[str, ...], partial: bool = False) -> dict | None:
        """``v`` if it is an object of exactly the fields ``keys`` (problems reported); one
        that lacks some is returned only when ``partial``, for its fields to be checked."""
        if not isinstance(v, dict):
            return self.bad(path, f"expected an object, got {_kind(v)}")
        for k in v:
            if k not in keys:
                self.bad(_join(path, k), f"unknown field (allowed: {', '.join(keys)})")
        missing = [k for k in keys if k not in v]
        for k in missing:
            self.bad(_join(path, k), "missing")
        return v if partial or not missing else None

    def string(
        self, v: Any, path: str, pattern: re.Pattern | None = None, max_len: int = 200, what=""
    ) -> str | None:
        if not isinstance(v, str):
            return self.bad(path, f"expected a string, got {_kind(v)}")
        if not v.strip():
            return self.bad(path, "must not be empty")
        if len(v) > max_len:
            return self.bad(path, f"longer than {max_len} characters")
        if _CONTROL.search(v):
            return self.bad(path, "control characters are not allowed")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return self.bad(path, "not valid Unicode (lone surrogate)")
        if pattern is not None and not pattern.fullmatch(v):
            return self.bad(path, f"{_short(v)} is not {what or 'of the form ' + pattern.pattern}")
        return v

    def integer(self, v: Any, path: str, lo: int, hi: int) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return self.bad(path, f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            return self.bad(path, f"{v} is not in [{lo}, {hi}]")
        return v

    def number(self, v: Any, path: str) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return self.bad(path, f"expected a number, got {_kind(v)}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            return self.bad(path, "must be finite")
        return f


def _join(path: str, key: Any) -> str:
    key = _short(key) if not isinstance(key, str) or _CONTROL.search(key) else key
    return f"{path}.{key}" if path else str(key)


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


_KINDS = ((type(None), "null"), (bool, "a boolean"), (int | float, "a number"),
          (str, "a string"), (list, "an array"), (dict, "an object"))  # fmt: skip


def _kind(v: Any) -> str:
    return next((kind for t, kind in _KINDS if isinstance(v, t)), type(v).__name__)


def _field_types(name: str) -> tuple[type, ...]:
    from ..task import OptimizerSpec

    hint = typing.get_type_hints(OptimizerSpec)[name]
    args = typing.get_args(hint)
    return args if args else (hint,)


def _hyperparameters(p: _Parser, v: Any, path: str, track, optimizer: str | None):
    from ..errors import UserError
    from ..optim import validate as validate_spec
    from ..task import OptimizerSpec
    from .tracks import HYPERPARAMETERS

    if not isinstance(v, dict):
        return p.bad(path, f"expected an object, got {_kind(v)}")
    out: dict[str, Any] = {}
    n0 = len(p.problems)
    for k, x in v.items():
        f = _join(path, k)
        types = _field_types(k) if k in HYPERPARAMETERS else ()
        if k == "name":
            p.bad(f, "the optimizer is code.optimizer, not a hyperparameter")
        elif k not in HYPERPARAMETERS:
            p.bad(f, f"not an optimizer field (fields: {', '.join(HYPERPARAMETERS)})")
        elif track is not None and k in track.fixed:
            p.bad(f, f"fixed by the {track.name} track (it is not the entry's to choose)")
        elif (
            (x is None and type(None) in types)
            or (isinstance(x, bool) and bool in types)
            or (isinstance(x, int) and not isinstance(x, bool) and int in types)
        ):
            out[k] = x
        elif isinstance(x, int | float) and not isinstance(x, bool) and float in types:
            if (val := p.number(x, f)) is not None:
                out[k] = val  # the CLI's --set gives floats: 1 and 1.0 hash differently
        elif isinstance(x, str) and str in types:
            if (s := p.string(x, f, _NAME, 64, "a name ([A-Za-z0-9_.-])")) is not None:
                out[k] = s
        else:
            p.bad(f, f"expected {_type_names(types)}, got {_kind(x)}")
    ok = len(p.problems) == n0
    if ok and optimizer is not None:
        try:
            validate_spec(OptimizerSpec(name=optimizer, **out))
        except UserError as e:
            return p.bad(path, str(e))
    return tuple(sorted(out.items())) if ok else None


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _threshold(p: _Parser, v: Any, path: str, track) -> ThresholdDecl | None:
    d = p.obj(v, path, ("quantity", "value", "formula"))
    if d is None:
        return None
    q = d["quantity"]
    quantities = track.quantities() if track is not None else ()
    if not isinstance(q, str) or q not in quantities:
        p.bad(_join(path, "quantity"), f"{_short(q)} is not one of {', '.join(quantities)}")
        q = None
    value = p.number(d["value"], _join(path, "value"))
    if value is not None and value <= 0:
        p.bad(_join(path, "value"), f"{value} must be > 0")
        value = None
    formula = p.string(d["formula"], _join(path, "formula"), max_len=200)
    if q is None or value is None or formula is None:
        return None
    return ThresholdDecl(q, value, formula)


def _runs(p: _Parser, v: Any, path: str) -> tuple[RunRef, ...] | None:
    if not isinstance(v, list):
        return p.bad(path, f"expected an array, got {_kind(v)}")
    if len(v) > MAX_RUNS:
        return p.bad(path, f"{len(v)} runs, more than {MAX_RUNS}")
    out, ok = [], True
    for i, r in enumerate(v):
        rp = f"{path}[{i}]"
        d = p.obj(r, rp, ("task", "seed", "path", "files"))
        if d is None:
            ok = False
            continue
        task = p.string(d["task"], _join(rp, "task"), max_len=300)
        seed = p.integer(d["seed"], _join(rp, "seed"), 0, 2**31 - 1)
        rel = run_path(p, d["path"], _join(rp, "path"))
        files = p.obj(d["files"], _join(rp, "files"), RUN_FILES, partial=True)
        hashes = []
        if files is not None:
            for name in RUN_FILES:
                if name in files:
                    h = p.string(files[name], _join(_join(rp, "files"), name), _SHA256, 64,
                                 "a SHA-256 (64 lower-case hex digits)")  # fmt: skip
                    if h is not None:
                        hashes.append((name, h))
        if None in (task, seed, rel) or len(hashes) != len(RUN_FILES):
            ok = False
            continue
        out.append(RunRef(task, seed, rel, tuple(hashes)))
    return tuple(out) if ok else None


def run_path(p: _Parser, v: Any, path: str) -> str | None:
    """A relative POSIX path of plain names: no ``..``, no absolute path, no backslash."""
    s = p.string(v, path, max_len=1000)
    if s is None:
        return None
    if s.startswith("/") or "\\" in s or re.match(r"[A-Za-z]:", s):
        p.bad(path, f"{_short(s)}: absolute paths are not allowed (give it relative to the "
                    "submission directory)")  # fmt: skip
        return None
    parts = s.split("/")
    if ".." in parts:
        return p.bad(path, f"{_short(s)}: path traversal ('..') is not allowed")
    for part in parts:
        if part in ("", ".") or not _PART.fullmatch(part):
            return p.bad(path, f"{_short(s)}: each part must be a plain name of [A-Za-z0-9_.=+,@-]")
    if len(parts) > 8:
        return p.bad(path, f"{_short(s)}: more than 8 levels deep")
    return s


def _scores(p: _Parser, v: Any, path: str) -> tuple[tuple[str, Any], ...] | None:
    if not isinstance(v, dict):
        return p.bad(path, f"expected an object, got {_kind(v)}")
    if len(v) > 50:
        return p.bad(path, "more than 50 scores")
    out, ok = [], True
    for k, x in v.items():
        f = _join(path, k)
        if not _NAME.fullmatch(k):
            p.bad(f, "not a score name")
            ok = False
        elif x is None or type(x) is int or isinstance(x, float) and math.isfinite(x):
            out.append((k, x))
        else:
            p.bad(f, f"expected a number or null, got {_kind(x)}")
            ok = False
    return tuple(sorted(out)) if ok else None


def _authors(p: _Parser, v: Any) -> tuple[str, ...] | None:
    if not isinstance(v, list) or not 1 <= len(v) <= 50:
        return p.bad("authors", f"expected an array of 1 to 50 names, got {_kind(v)}")
    out = [p.string(a, f"authors[{i}]", max_len=200) for i, a in enumerate(v)]
    return None if None in out else tuple(out)


def _code(p: _Parser, v: Any) -> Code | None:
    c = p.obj(v, "code", ("package", "version", "optimizer"))
    if c is None:
        return None
    pkg = p.string(c["package"], "code.package", _PACKAGE, 100, "a package name")
    ver = p.string(c["version"], "code.version", _VERSION, 60, "a release version (PEP 440)")
    opt = p.string(c["optimizer"], "code.optimizer", _NAME, 64, "an optimizer name")
    return None if None in (pkg, ver, opt) else Code(pkg, ver, opt)


def parse_manifest(data: bytes | str | Any, file: str = MANIFEST) -> Manifest:
    """Parse and check a manifest (bytes, text, or an already parsed JSON value).

    Raises :class:`SubmissionError` listing every problem; never anything else."""
    try:
        return _parse_manifest(data, file)
    except SubmissionError:
        raise
    except RecursionError:
        raise SubmissionError([Problem(file, "-", "nested too deeply")]) from None


def _parse_manifest(data: Any, file: str) -> Manifest:
    from .tracks import TRACKS

    p = _Parser(file)
    if isinstance(data, bytes | str):
        try:
            data = loads_strict(data)
        except ValueError as e:
            raise SubmissionError([Problem(file, "-", str(e))]) from None
    d = p.obj(data, "", ("schema", "id", "method", "authors", "paper", "code", "tracks"), True)
    if d is None:
        raise SubmissionError(p.problems)
    if "schema" in d and d["schema"] != SUBMISSION_SCHEMA:
        p.bad("schema", f"{_short(d['schema'])} is not {SUBMISSION_SCHEMA!r}")

    def get(key: str, check):
        return check(d[key]) if key in d else None

    entry_id = get("id", lambda v: p.string(v, "id", _ID, 63, "an id ([a-z0-9][a-z0-9-]*)"))
    method = get("method", lambda v: p.string(v, "method", max_len=100))
    authors = get("authors", lambda v: _authors(p, v))
    paper = get("paper", lambda v: p.string(v, "paper", _URL, 500, "an http(s) URL"))
    code = get("code", lambda v: _code(p, v))
    tracks: list[tuple[str, TrackEntry]] = []
    t = d.get("tracks", {})  # none: reported as missing
    if "tracks" in d and (not isinstance(t, dict) or not t):
        p.bad("tracks", f"expected an object with at least one track, got {_kind(t)}")
    else:
        for name, te in t.items():
            path = _join("tracks", name)
            if name not in TRACKS:
                p.bad(path, f"unknown track (tracks: {', '.join(TRACKS.list())})")
                continue
            track = TRACKS.get(name)
            keys = ("hyperparameters", "runs", "scores")
            keys += ("threshold",) if track.needs_threshold else ()
            e = p.obj(te, path, keys)
            if e is None:
                continue
            optimizer = code.optimizer if code else None
            hp = _hyperparameters(p, e["hyperparameters"], _join(path, "hyperparameters"), track,
                                  optimizer)  # fmt: skip
            thr = None
            if track.needs_threshold:
                thr = _threshold(p, e["threshold"], _join(path, "threshold"), track)
            runs = _runs(p, e["runs"], _join(path, "runs"))
            scores = _scores(p, e["scores"], _join(path, "scores"))
            if None in (hp, runs, scores) or (track.needs_threshold and thr is None):
                continue
            tracks.append((name, TrackEntry(hp, thr, runs, scores)))
    if p.problems or any(x is None for x in (entry_id, method, authors, paper, code)):
        raise SubmissionError(p.problems or [Problem(file, "-", "invalid manifest")])
    return Manifest(
        schema=d["schema"],
        id=entry_id,
        method=method,
        authors=authors,
        paper=paper,
        code=code,
        tracks=tuple(sorted(tracks)),
    )


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    """The JSON form of a parsed manifest (``parse_manifest(manifest_to_dict(m)) == m``)."""
    tracks = {
        name: {
            "hyperparameters": dict(te.hyperparameters),
            "runs": [{**asdict(r), "files": dict(r.files)} for r in te.runs],
            "scores": dict(te.scores),
            **({"threshold": asdict(te.threshold)} if te.threshold is not None else {}),
        }
        for name, te in m.tracks
    }
    return {**asdict(m), "authors": list(m.authors), "tracks": tracks}

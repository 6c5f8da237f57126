"""A benchmark task is data: a frozen dataclass composed of small specs.

Variants come from :func:`dataclasses.replace` (or :func:`apply_overrides` for
the CLI's dotted ``--set`` keys), never from subclasses.  A task's identity is
the SHA-256 of its canonical JSON (:func:`content_hash`).  A completed run is reused by
the results store when it computed the same thing (:func:`computation_hash`: the same
hash without the claims, which judge a run afterwards and may be recalibrated).

The hashed form leaves out fields equal to their defaults, so a default is part of what a
hash means: every spec default and every measurement factory default is pinned by
``tests/test_defaults.py``, and changing one means bumping :data:`HASH_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import OverrideError, UserError, suggest

Options = tuple[tuple[str, Any], ...]  # frozen keyword arguments, sorted by key

# The meaning of a hash's omitted defaults.  Bump it when a default of a spec field or of a
# measurement factory changes (tests/test_defaults.py pins them all): every hash changes
# with it, so runs made under the old defaults are not reused as if made under the new.
HASH_VERSION = 1


def options(**kwargs: Any) -> Options:
    """Freeze keyword arguments into a hashable, canonically ordered tuple."""
    return tuple(sorted(kwargs.items()))


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"  # registered data set: digits | cifar10 | cifar100
    n_train: int | None = None  # training examples used (None = all available)
    n_test: int | None = None  # test examples used (None = all available)
    subset: str = "first"  # first (official order) | balanced | random
    subset_seed: int = 0  # seed of the balanced/random subsets
    standardize: bool = True  # center and scale with statistics of the training subset
    label_noise: float = 0.0  # fraction of training labels replaced uniformly at random
    noise_seed: int = 0  # seed of the label noise
    augment: bool = False  # random crop (4-pixel padding) + horizontal flip, per step
    classes: int | None = None  # keep only classes 0..classes-1 of both pools (None = all)
    options: Options = ()  # options of one data source (its loader's OPTIONS): a Hub repo, revision


@dataclass(frozen=True)
class ModelSpec:
    name: str = "fc-tanh"  # registered architecture, e.g. fc-tanh, cnn-relu, resnet20
    width: int | None = None  # hidden width / channels (None = the architecture's default)
    depth: int | None = None  # hidden layers / blocks (None = the architecture's default)
    batchnorm: bool = False  # BatchNorm after each hidden layer where the model supports it
    init_scale: float = 1.0  # multiplies the default initialization of every weight
    options: Options = ()  # options of one model family (its builder's OPTIONS): a DEQ's w_scale


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"  # registered optimizer: sgd | adam | rmsprop | sam | tracer ...
    lr: float = 0.01  # step size eta, per step
    momentum: float = 0.0  # heavy-ball/Nesterov beta (sgd and sgd-based methods)
    nesterov: bool = False  # Nesterov instead of heavy-ball momentum
    batch_size: int | None = None  # examples per step; None = full batch (GD)
    # mini-batches: "epoch" (a fresh permutation every epoch: without replacement) or "iid"
    # (every step b distinct examples drawn uniformly, independently of the other steps)
    sampling: str = "epoch"
    weight_decay: float = 0.0  # L2 coefficient added to the gradient
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.999  # Adam/RMSProp second-moment decay
    eps: float = 1e-8  # Adam/RMSProp denominator constant
    rho: float = 0.05  # SAM radius / TRACER regularization strength
    normalized: bool = True  # SAM: normalized ascent step (Foret et al. 2021)
    base: str = "sgd"  # base update of SAM/TRACER/CDAT: sgd | adam
    # step-size tuners (optim.tuners; lr is their cap eta_max and Armijo's first trial step)
    armijo_c: float = 0.1  # Armijo sufficient-decrease constant c
    armijo_backtrack: float = 0.9  # Armijo backtracking factor (trial step x this)
    armijo_growth: float = 2.0  # Armijo initial-step rule: first trial = this x previous step
    polyak_loss_star: float = 0.0  # Polyak L* in (L - L*) / |g|^2
    cdat_sigma: float = 1.0  # CDAT scale sigma: 1 quadratically greedy, 2 on edge
    cdat_ema: float = 0.0  # CDAT EMA factor of numerator and denominator (0 = none)
    clip_norm: float | None = None  # sgd: the step's gradient clipped to this l2 norm (None: not)
    orthogonalizer: str = "svd"  # spectral/muon polar factor: svd | newton-schulz


LR_SCHEDULES = ("constant", "cosine")  # ScheduleSpec.lr_schedule


@dataclass(frozen=True)
class ScheduleSpec:
    steps: int | None = 1000  # optimizer steps (None: use epochs)
    epochs: int | None = None  # passes over the training set (used when steps is None)
    stop_loss: float | None = None  # stop once the full-batch train loss is below this
    stop_accuracy: float | None = None  # stop once the train accuracy is at least this
    eval_every: int = 100  # steps between test-set evaluations (0 = never)
    lr_schedule: str = "constant"  # constant | cosine (eta_t = eta (1 + cos(pi t / T)) / 2)


@dataclass(frozen=True)
class MeasurementSpec:
    name: str  # registered measurement, e.g. sharpness, batch_sharpness
    every: int = 20  # steps between measurements (also taken at step 0 and the last step)
    options: Options = ()


@dataclass(frozen=True)
class ClaimSpec:
    name: str  # registered claim, e.g. gd_eos
    expect: str = "PASS"  # PASS, or FAIL for a negative control
    options: Options = ()


@dataclass(frozen=True)
class Task:
    name: str
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: str = "mse"  # mse | ce
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    measurements: tuple[MeasurementSpec, ...] = ()
    claims: tuple[ClaimSpec, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""  # one line: what the task shows
    reference: str = ""  # the paper it reproduces
    meta: Options = ()  # what reports need to place its runs (e.g. a table cell); not hashed

    def measurement(self, name: str) -> MeasurementSpec | None:
        return next((m for m in self.measurements if m.name == name), None)

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps implied by the schedule for ``n_train`` examples."""
        if self.schedule.steps is not None:
            return self.schedule.steps
        bs = self.optimizer.batch_size or n_train
        return self.schedule.epochs * math.ceil(n_train / bs)


# ---------------------------------------------------------------------------
# canonical form, hash, slug


def _tuples(x: Any) -> Any:
    return tuple(_tuples(e) for e in x) if isinstance(x, list | tuple) else x


OPTION_FIELDS = ("options", "meta")  # frozen keyword arguments: dicts in the JSON form


def to_dict(task: Task) -> dict[str, Any]:
    """Plain JSON-able dict of a task (``options`` as dicts, tuples as lists; ``meta`` only
    where set, so the records of tasks without it read as they always have)."""

    def conv(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {
                f.name: (
                    {k: conv(v) for k, v in getattr(x, f.name)}
                    if f.name in OPTION_FIELDS
                    else conv(getattr(x, f.name))
                )
                for f in fields(x)
                if f.name != "meta" or getattr(x, f.name)
            }
        if isinstance(x, tuple):
            return [conv(e) for e in x]
        return x

    return conv(task)


def from_dict(d: dict[str, Any]) -> Task:
    """Inverse of :func:`to_dict`: ``from_dict(to_dict(t)) == t``."""

    def spec(cls, sub):
        kw = {
            k: (options(**{o: _tuples(w) for o, w in v.items()}) if k == "options" else v)
            for k, v in sub.items()
        }
        return cls(**kw)

    try:
        return _from_dict(d, spec)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise UserError(f"invalid task definition ({type(e).__name__}: {e})") from None


def _from_dict(d: dict[str, Any], spec) -> Task:
    return Task(
        name=d["name"],
        data=spec(DataSpec, d["data"]),
        model=spec(ModelSpec, d["model"]),
        loss=d["loss"],
        optimizer=spec(OptimizerSpec, d["optimizer"]),
        schedule=spec(ScheduleSpec, d["schedule"]),
        measurements=tuple(spec(MeasurementSpec, m) for m in d["measurements"]),
        claims=tuple(spec(ClaimSpec, c) for c in d["claims"]),
        seeds=tuple(d["seeds"]),
        description=d.get("description", ""),
        reference=d.get("reference", ""),
        meta=options(**d.get("meta", {})),
    )


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _compact(x: Any) -> Any:
    """``to_dict`` without the spec fields that equal their defaults."""
    if dataclasses.is_dataclass(x):
        out = {}
        for f in fields(x):
            v = getattr(x, f.name)
            if v == _field_default(f):
                continue
            out[f.name] = {k: _compact(w) for k, w in v} if f.name in OPTION_FIELDS else _compact(v)
        return out
    if isinstance(x, tuple):
        return [_compact(e) for e in x]
    return x


def content_hash(task: Task) -> str:
    """SHA-256 of everything that defines the computation (not the prose fields).

    Fields equal to their defaults are left out of the hashed form, so adding a field
    with a default that keeps the old behaviour leaves every existing hash unchanged.
    :data:`HASH_VERSION` enters the hashed form from version 2 on (so the hashes of
    version 1, recorded with every run so far, stay as they are).
    """
    d = _compact(replace(task, description="", reference="", seeds=(), meta=()))
    if HASH_VERSION != 1:
        d["hash_version"] = HASH_VERSION
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()


def computation_hash(task: Task) -> str:
    """:func:`content_hash` without the claims: what a run of ``task`` computes.

    Claims judge a finished run's series afterwards, so recalibrating a band (or adding a
    claim) re-checks the runs already made instead of making them stale.
    """
    return content_hash(replace(task, claims=()))


def slug(name: str) -> str:
    """A file-system-safe directory name for a task name."""
    s = name.replace("/", "__")
    return re.sub(r"[^A-Za-z0-9_.=+,-]", "-", s)


# ---------------------------------------------------------------------------
# type-checked dotted overrides (nanoGPT's configurator, with types enforced)

_SPEC_FIELDS = {
    "data": DataSpec,
    "model": ModelSpec,
    "optimizer": OptimizerSpec,
    "schedule": ScheduleSpec,
}


def _allowed_types(cls: type, name: str) -> tuple[type, ...]:
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(typing.get_args(hint))
    return (hint,)


def parse_value(text: str, allowed: tuple[type, ...], key: str) -> Any:
    """Parse ``text`` as one of ``allowed`` (int, float, bool, str, NoneType)."""
    t = text.strip()
    if type(None) in allowed and t.lower() in ("none", "null"):
        return None
    if bool in allowed:
        if t.lower() in ("true", "1", "yes"):
            return True
        if t.lower() in ("false", "0", "no"):
            return False
    if int in allowed and re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if float in allowed:
        try:
            v = float(t)
        except ValueError:
            pass
        else:
            if not math.isfinite(v):
                raise OverrideError(f"override {key}={text!r}: value must be finite")
            return v
    if str in allowed and t:
        return t
    names = " or ".join("none" if a is type(None) else a.__name__ for a in allowed)
    raise OverrideError(f"override {key}={text!r}: expected {names}")


def _family_option(spec, known: dict[str, Any], key: str, what: str, name: str, text: str):
    """``spec`` (a model or data spec) with option ``name`` of its family (``known``: the
    builder's or loader's ``OPTIONS``, name: default) set from ``text``, parsed as the type of
    the option's default; ``key`` and ``what`` name it in errors."""
    if name not in known:
        have = f" (it has: {', '.join(sorted(known))})" if known else " (it has none)"
        raise OverrideError(f"unknown override key {key!r}: {what} has no option "
                            f"{name!r}{have}")  # fmt: skip
    default = known[name]
    allowed = (int, float) if type(default) is float else (type(default),)
    value = "" if isinstance(default, str) and not text.strip() else parse_value(text, allowed, key)
    value = float(value) if type(default) is float else value
    return replace(spec, options=options(**{**dict(spec.options), name: value}))


def _measurement_option(task: Task, name: str, option: str, text: str) -> Task:
    """``task`` with option ``option`` of its measurement ``name`` (``every``, or a keyword of
    the measurement's factory) set from ``text``, parsed as the type of the default; a value
    equal to the factory's default is dropped, as a task written by hand leaves it out."""
    import inspect

    from .measure import MEASUREMENTS

    key = f"measurements.{name}.{option}"
    mine = [m for m in task.measurements if m.name == name]
    if not mine:
        have = ", ".join(m.name for m in task.measurements) or "none"
        raise OverrideError(f"unknown override key {key!r}: the task has no measurement "
                            f"{name!r} (it has: {have})")  # fmt: skip
    if option == "every":
        every = parse_value(text, (int,), key)
        if every < 1:
            raise OverrideError(f"override {key}={text!r}: expected a positive integer")
        new = {id(m): replace(m, every=every) for m in mine}
    else:
        params = inspect.signature(MEASUREMENTS.get(name)).parameters
        known = {n: p.default for n, p in params.items() if p.default is not p.empty}
        if option not in known:
            raise OverrideError(f"unknown override key {key!r}: measurement {name!r} has no "
                                f"option {option!r}{suggest(option, [*known, 'every'])}")
        default = known[option]
        allowed = ((int, float, str, bool, type(None)) if default is None
                   else (int, float) if type(default) is float else (type(default),))
        value = parse_value(text, allowed, key)
        value = float(value) if type(default) is float else value
        same = type(value) is type(default) and value == default
        new = {id(m): replace(m, options=options(**{
            **{k: v for k, v in m.options if k != option}, **({} if same else {option: value})}))
            for m in mine}  # fmt: skip
    return replace(task, measurements=tuple(new.get(id(m), m) for m in task.measurements))


def apply_overrides(task: Task, overrides: list[str] | tuple[str, ...]) -> Task:
    """Apply ``KEY=VALUE`` overrides with dotted keys, checking keys and types; the
    ``*.name`` ones first, so that ``data.options.KEY`` and ``model.options.KEY`` are checked
    against the family the overrides name, in whatever order they are given.

    ``seed=N`` restricts the task to that one seed; ``measurements.NAME.OPTION`` sets an
    option of the task's measurement ``NAME`` (``every`` or a keyword of its factory, e.g.
    ``measurements.sharpness.spare=2``).  Raises :class:`OverrideError`.
    """
    # a spec's name first: the options that follow are those of the family it names
    names_first = sorted(overrides, key=lambda o: not o.partition("=")[0].strip().endswith(".name"))
    for item in names_first:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"override {item!r} is not of the form KEY=VALUE")
        if key in ("seed", "seeds"):
            seeds = tuple(parse_value(v, (int,), key) for v in value.split(","))
            task = replace(task, seeds=seeds)
            continue
        head, _, attr = key.partition(".")
        if head == "measurements":
            name, _, option = attr.partition(".")
            if not name or not option:
                raise OverrideError(f"override key {key!r}: expected measurements.NAME.OPTION")
            task = _measurement_option(task, name, option, value)
            continue
        if head in ("model", "data") and attr.startswith("options."):
            spec, name = getattr(task, head), attr[len("options."):]
            if head == "model":
                from .models import MODELS as family
            else:
                from .data import DATASETS as family
            known = getattr(family.get(spec.name), "OPTIONS", {})
            what = f"{head} {spec.name!r}"
            new = _family_option(spec, known, key, what, name, value)
            task = replace(task, **{head: new})
            continue
        if head == "loss" and not attr:
            task = replace(task, loss=parse_value(value, (str,), key))
            continue
        cls = _SPEC_FIELDS.get(head)
        if cls is None or not attr:
            valid = [f"{h}.{f.name}" for h, c in _SPEC_FIELDS.items() for f in fields(c)]
            valid += ["loss", "seed", "measurements.NAME.OPTION"]
            raise OverrideError(f"unknown override key {key!r}{suggest(key, valid)}")
        names = [f.name for f in fields(cls)]
        if attr not in names:
            close = suggest(key, [f"{head}.{n}" for n in names])
            raise OverrideError(f"unknown override key {key!r}{close}")
        parsed = parse_value(value, _allowed_types(cls, attr), key)
        task = replace(task, **{head: replace(getattr(task, head), **{attr: parsed})})
    return task

r"""Leaderboard tracks: each a fixed set of registered tasks and seeds and a scoring rule.

An entry runs every task of a track that applies to it, on every seed the task registers,
with its own optimizer: the task as registered with ``optimizer`` replaced by
``OptimizerSpec(name=<the entry's optimizer>, **<its hyperparameters>)``, except for the
fields the track fixes (``batch_size``), which keep the registered task's values.  The
hyperparameters are the :class:`~eosbench.task.OptimizerSpec` fields that differ from their
defaults.

``stability``
    Full-batch training of fc-tanh on digits (MSE, 600 steps, seeds 0-2), with the
    curvature quantity the method's *declared* stability threshold :math:`T` bounds:
    ``digits/fc-tanh/mse/leaderboard-stability/sharpness`` for :math:`\lambda_{\max}(H)` (GD, heavy
    ball, SAM, ...), ``.../preconditioned_sharpness`` for :math:`\lambda_{\max}(P^{-1}H)`
    (Adam, RMSProp, ...), and ``.../sharpness_<norm>`` and ``.../sharpness_<norm>_normalized``
    for the generalized sharpness of non-Euclidean steepest descent and its normalized form
    (norm ``linf``, ``spectral`` or ``block``: sign descent, spectral descent, Muon without
    momentum, block coordinate descent; Islamov et al., arXiv:2603.05002v1).  Per seed, the *EoS window* runs from :math:`t^*`, the first
    measured step with :math:`q \ge T`, to the end of the run (the last half of the run
    when :math:`q` never reaches :math:`T`), and the seed's ratio is the median of
    :math:`q/T` over it.  Scores: ``ratio_median`` (median over seeds; min and max too),
    ``seeds_reached`` (seeds with a :math:`t^*`), ``t_star_median``, and
    ``claims_as_expected`` / ``claims_total`` (the family's claims -- the task's ``eos``
    claim on its quantity, each seed -- re-derived from the time series).  Ranked by the
    fraction of claims as expected, then by :math:`|\text{ratio} - 1|`.

``generalization``
    Mini-batch training (batch 32, 1,000 steps, seeds 0-4) of fc-tanh on digits with
    cross-entropy.  Per seed the final test accuracy (at the last step; 0 for a run that
    diverged).  Scores: ``test_acc_mean`` and its standard error ``test_acc_se``
    (:math:`s/\sqrt{n}`, :math:`s` the sample standard deviation over seeds), min, max, and
    the median final sharpness.  Ranked by ``test_acc_mean``.

Every track reports the entry's compute cost: Hessian-vector products of the measurements
(the ``*_hvps`` of each record), gradient evaluations of the optimizer and the examples
they covered (``run.json``), wall time, and the devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..record import Run
from ..registry import Registry
from ..task import OptimizerSpec, Task

if TYPE_CHECKING:
    from ..optim.thresholds import Threshold

# --- tracks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackTask:
    task: str  # registered task name (eosbench.suites.leaderboard)
    quantity: str | None = None  # for entries whose declared threshold bounds this; None: all


# (key, header, kind: num | text, the score shown or None) of a leaderboard table's column
Column = tuple[str, str, str, str | None]


@dataclass(frozen=True)
class Track:
    """A track; each kind of track (a subclass) scores and ranks its entries' runs."""

    name: str
    title: str
    description: str  # one paragraph: what is run and how it is scored
    tasks: tuple[TrackTask, ...]
    fixed: tuple[str, ...] = ("batch_size",)  # optimizer fields the track fixes
    needs_threshold: bool = False  # entries declare a stability threshold
    scoring: ClassVar[str] = ""  # the kind of track, as the rendered tables name it
    order: ClassVar[int] = 0  # tables of kinds with a lower order come first
    columns: ClassVar[tuple[Column, ...]] = ()  # the score columns of the track's table

    def tasks_for(self, quantity: str | None) -> tuple[str, ...]:
        """The task names an entry whose threshold bounds ``quantity`` runs."""
        return tuple(t.task for t in self.tasks if t.quantity is None or t.quantity == quantity)

    def quantities(self) -> tuple[str, ...]:
        return tuple(t.quantity for t in self.tasks if t.quantity is not None)

    def score(self, runs: list[Run], threshold: Threshold | None = None) -> dict[str, Any]:
        """``{"scores", "runs", "series", "cost"}`` of an entry's runs on the track, in a fixed
        order (task, seed), so equal runs give equal JSON.  ``threshold``: the one the entry
        declares (for a track that ``needs_threshold``)."""
        runs = sorted(runs, key=lambda r: (r.task.name, r.seed))
        out = self.score_runs(runs, threshold)
        out["cost"] = cost(runs)
        return out

    def score_runs(self, runs: list[Run], threshold: Threshold | None) -> dict[str, Any]:
        """``{"scores", "runs", "series"}`` of runs in (task, seed) order."""
        raise NotImplementedError

    def rank_key(self, entry_id: str, scores: dict[str, Any]) -> tuple:
        """Sort key of an entry with ``scores``: best first, ties by id."""
        raise NotImplementedError

    def cells(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The values of :attr:`columns` (and their extras) of an entry's track record."""
        return {k: entry["scores"].get(score) for k, _, _, score in self.columns if score}


@dataclass(frozen=True)
class StabilityTrack(Track):
    """Scored by the measured quantity against the declared threshold (module docstring)."""

    needs_threshold: bool = True
    scoring: ClassVar[str] = "stability"
    order: ClassVar[int] = 0
    columns: ClassVar[tuple[Column, ...]] = (
        ("threshold", "Threshold T", "num", None),
        ("ratio", "q/T (median)", "num", "ratio_median"),
        ("reached", "Seeds at T", "num", "seeds_reached"),
        ("t_star", "t* (median)", "num", "t_star_median"),
        ("claims", "Claims as expected", "num", "claims_as_expected"),
    )

    def score_runs(self, runs: list[Run], threshold: Threshold | None) -> dict[str, Any]:
        if threshold is None:
            raise ValueError(f"the {self.name} track scores by a declared threshold")
        per_run, series, T = [], [], threshold.value
        for r in runs:
            claims = {v.claim: v.verdict for v in r.verdicts}
            per_run.append(_per_run(r, **stability_run(r, threshold), claims=claims))
            steps, q = r.values(threshold.quantity)  # the plot: [[step, q/T], ...], 5 decimals
            points = [[int(t), round(float(v) / T, 5)] for t, v in zip(steps, q, strict=True)]
            series.append({"task": r.task.name, "seed": r.seed, "points": points})
        ratios = [p["ratio"] for p in per_run if p["ratio"] is not None]
        stars = [p["t_star"] for p in per_run if p["t_star"] is not None]
        verdicts = [v for r in runs for v in r.verdicts]
        scores = {
            "ratio_median": _median(ratios),
            "ratio_min": _num(min(ratios)) if ratios else None,
            "ratio_max": _num(max(ratios)) if ratios else None,
            "seeds": len(runs),
            "seeds_reached": sum(p["reached"] for p in per_run),
            "t_star_median": _median(stars),
            "claims_total": len(verdicts),
            "claims_as_expected": sum(v.as_expected for v in verdicts),
        }
        return {"scores": scores, "runs": per_run, "series": series}

    def rank_key(self, entry_id: str, scores: dict[str, Any]) -> tuple:
        total = scores.get("claims_total") or 0
        frac = scores.get("claims_as_expected", 0) / total if total else 0.0
        r = scores.get("ratio_median")
        return (-frac, abs(r - 1) if r is not None else math.inf, entry_id)

    def cells(self, entry: dict[str, Any]) -> dict[str, Any]:
        s, thr = entry["scores"], entry.get("threshold") or {}
        total = s.get("claims_total") or 0
        return super().cells(entry) | dict(
            quantity=thr.get("quantity", "-"),
            threshold=thr.get("value"),
            formula=thr.get("formula", ""),
            ratio_min=s.get("ratio_min"),
            ratio_max=s.get("ratio_max"),
            seeds=s.get("seeds"),
            claims_total=total,
            claims_fraction=(s.get("claims_as_expected", 0) / total) if total else None,
        )


@dataclass(frozen=True)
class GeneralizationTrack(Track):
    """Scored by the final test accuracy (module docstring)."""

    scoring: ClassVar[str] = "generalization"
    order: ClassVar[int] = 1
    columns: ClassVar[tuple[Column, ...]] = (
        ("acc", "Test acc. (mean)", "num", "test_acc_mean"),
        ("se", "SE", "num", "test_acc_se"),
        ("seeds", "Seeds", "num", "seeds"),
        ("sharpness", "Final sharpness", "num", "final_sharpness_median"),
    )

    def score_runs(self, runs: list[Run], threshold: Threshold | None) -> dict[str, Any]:
        per_run = []
        for r in runs:
            _, sh = r.values("sharpness")
            final = _num(sh[-1]) if len(sh) else None
            per_run.append(_per_run(r, test_acc=_num(final_test_acc(r)), final_sharpness=final))
        acc = [p["test_acc"] for p in per_run]
        sharp = [p["final_sharpness"] for p in per_run if p["final_sharpness"] is not None]
        n = len(acc)
        se = float(np.std(acc, ddof=1) / math.sqrt(n)) if n > 1 else None
        scores = {
            "test_acc_mean": _num(np.mean(acc)) if n else None,
            "test_acc_se": _num(se),
            "test_acc_min": _num(min(acc)) if n else None,
            "test_acc_max": _num(max(acc)) if n else None,
            "seeds": n,
            "final_sharpness_median": _median(sharp),
        }
        return {"scores": scores, "runs": per_run, "series": []}

    def rank_key(self, entry_id: str, scores: dict[str, Any]) -> tuple:
        acc = scores.get("test_acc_mean")
        return (-(acc if acc is not None else -math.inf), entry_id)


TRACKS: Registry[Track] = Registry("track")

STABILITY = StabilityTrack(
    name="stability",
    title="Stability",
    description="Full-batch fc-tanh on digits (MSE, 600 steps, seeds 0-2), measuring the "
    "quantity the method's declared threshold T bounds. Per seed: median of q/T over the EoS "
    "window (from the first step with q >= T to the end; the last half of the run if q never "
    "reaches T). Scores: the median over seeds of that ratio, the seeds that reached T, and "
    "the family's claims (eos on the quantity) re-derived per seed. Ranked by claims as "
    "expected, then by |ratio - 1|.",
    tasks=(
        TrackTask("digits/fc-tanh/mse/leaderboard-stability/sharpness", "sharpness"),
        TrackTask(
            "digits/fc-tanh/mse/leaderboard-stability/preconditioned_sharpness",
            "preconditioned_sharpness",
        ),
        *(TrackTask(f"digits/fc-tanh/mse/leaderboard-stability/{q}", q)
          for q in ("sharpness_linf", "sharpness_linf_normalized", "sharpness_spectral",
                    "sharpness_spectral_normalized", "sharpness_block")),
    ),
    needs_threshold=True,
)
GENERALIZATION = GeneralizationTrack(
    name="generalization",
    title="Generalization",
    description="Mini-batch fc-tanh on digits (cross-entropy, batch 32, 1,000 steps, seeds "
    "0-4). Score: the final test accuracy, mean over seeds with its standard error (0 for a "
    "diverged run). Ranked by the mean.",
    tasks=(TrackTask("digits/fc-tanh/ce/leaderboard-generalization/bs=32"),),
)
TRACKS.register(STABILITY.name, STABILITY)
TRACKS.register(GENERALIZATION.name, GENERALIZATION)

# --- the built-in baselines: per track, the hyperparameters of the reference entries ----------


@dataclass(frozen=True)
class Baseline:
    id: str
    method: str
    optimizer: str
    paper: str
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # track -> fields


BASELINES: dict[str, Baseline] = {
    b.id: b
    for b in (
        Baseline(
            "sgd",
            "SGD (GD when full batch)",
            "sgd",
            "https://arxiv.org/abs/2103.00065",
            {"stability": {"lr": 0.2}, "generalization": {"lr": 0.1}},
        ),
        Baseline(
            "momentum",
            "SGD with heavy-ball momentum",
            "sgd",
            "https://arxiv.org/abs/2103.00065",
            {
                "stability": {"lr": 0.3, "momentum": 0.5},
                "generalization": {"lr": 0.1, "momentum": 0.9},
            },
        ),
        Baseline(
            "sam",
            "SAM (unnormalized USAM for stability)",
            "sam",
            "https://arxiv.org/abs/2010.01412",
            {
                "stability": {"lr": 0.2, "rho": 0.02, "normalized": False},
                "generalization": {"lr": 0.1, "rho": 0.05},
            },
        ),
        Baseline(
            "adam",
            "Adam",
            "adam",
            "https://arxiv.org/abs/1412.6980",
            {"stability": {"lr": 0.002, "eps": 1e-7}, "generalization": {"lr": 0.001}},
        ),
        # non-Euclidean steepest descent (Islamov et al., arXiv:2603.05002v1): stability only,
        # step sizes from the seed-0 pilots in eosbench/suites/leaderboard.py
        *(Baseline(i, m, o, paper, {"stability": {"lr": lr}}) for i, m, o, paper, lr in (
            ("linf", "l_inf steepest descent", "linf", "https://arxiv.org/abs/2603.05002", 1.2e-5),
            ("signsgd", "Sign descent (full-batch signSGD)", "signsgd",
             "https://arxiv.org/abs/1802.04434", 1e-3),
            ("spectral", "Spectral descent", "spectral", "https://arxiv.org/abs/2603.05002", 0.015),
            ("muon", "Muon without momentum", "muon", "https://kellerjordan.github.io/posts/muon/",
             0.02),
            ("block-cd", "Block coordinate descent (greedy block)", "block_cd",
             "https://arxiv.org/abs/2603.05002", 0.6),
        )),
    )
}

# --- the tasks of an entry ----------------------------------------------------------------------

HYPERPARAMETERS = tuple(f.name for f in fields(OptimizerSpec) if f.name != "name")


def optimizer_spec(track: Track, optimizer: str, hyperparameters: dict[str, Any]) -> OptimizerSpec:
    """The entry's optimizer on ``track``: defaults, its hyperparameters, the fixed fields."""
    from ..suites import TASKS

    base = TASKS.get(track.tasks[0].task).optimizer
    fixed = {f: getattr(base, f) for f in track.fixed}
    return OptimizerSpec(name=optimizer, **{**hyperparameters, **fixed})


def hyperparameters_of(spec: OptimizerSpec, track: Track) -> dict[str, Any]:
    """The fields of ``spec`` that differ from the defaults, less name and fixed fields."""
    default = OptimizerSpec()
    return {
        f: getattr(spec, f)
        for f in HYPERPARAMETERS
        if f not in track.fixed and getattr(spec, f) != getattr(default, f)
    }


def option_text(v: Any, float_text: Callable[[float], str] = repr) -> str:
    """An optimizer field's value as ``--set`` spells it: none, true, false, floats by
    ``float_text`` (``repr`` by default: exact)."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "none"}[v]
    return float_text(v) if isinstance(v, float) else str(v)


def spec_overrides(task: Task, spec: OptimizerSpec) -> list[str]:
    """``--set`` overrides that turn ``task``'s optimizer into ``spec``."""
    return [
        f"optimizer.{f.name}={option_text(getattr(spec, f.name))}"
        for f in fields(OptimizerSpec)
        if getattr(spec, f.name) != getattr(task.optimizer, f.name)
        or type(getattr(spec, f.name)) is not type(getattr(task.optimizer, f.name))
    ]


# --- scores -----------------------------------------------------------------------------------


def _num(x: Any) -> Any:
    """A JSON-safe Python number (None for non-finite)."""
    if x is None:
        return None
    if isinstance(x, np.integer | int) and not isinstance(x, bool):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _median(xs: list[float]) -> float | None:
    return _num(np.median(xs)) if xs else None


def _per_run(r: Run, **stats: Any) -> dict[str, Any]:
    """A run's record in the scores: its task, seed and status, and the track's ``stats``."""
    return {"task": r.task.name, "seed": r.seed, "status": r.status, **stats}


def stability_run(r: Run, threshold: Threshold) -> dict[str, Any]:
    """Per-run statistics of the stability track (see the module docstring): the run's
    ``threshold.quantity`` against ``T = threshold.value``."""
    steps, q = r.values(threshold.quantity)
    T = threshold.value
    out: dict[str, Any] = {"t_star": None, "ratio": None, "reached": False}
    if not len(q) or not T:
        return out
    hit = np.nonzero(q >= T)[0]
    if len(hit):
        out["t_star"], out["reached"] = int(steps[hit[0]]), True
        sel = steps >= steps[hit[0]]
    else:
        sel = steps >= r.last_step / 2
    if sel.any():
        out["ratio"] = _num(np.median(q[sel] / T))
    return out


def final_test_acc(r: Run) -> float:
    if r.status == "diverged":
        return 0.0
    _, acc = r.values("test_acc")
    return float(acc[-1]) if len(acc) else 0.0


def cost(runs: list[Run]) -> dict[str, Any]:
    """Compute cost of a track's runs: HVPs, gradients, examples, wall time, devices."""
    hvps = sum(int(r.values(k)[1].sum()) for r in runs for k in r.keys if k.endswith("_hvps"))
    devices = sorted(
        {f"{r.provenance.get('device_name')} ({r.provenance.get('device')})" for r in runs}
    )
    return {
        "runs": len(runs),
        "steps": sum(r.step for r in runs),
        "hvps": hvps,
        "gradient_evaluations": sum(int(r.cost["gradient_evaluations"]) for r in runs),
        "gradient_examples": sum(int(r.cost["gradient_examples"]) for r in runs),
        "wall_seconds": round(sum(float(r.cost["wall_seconds"]) for r in runs), 3),
        "measure_seconds": round(sum(float(r.cost["measure_seconds"]) for r in runs), 3),
        "devices": devices,
    }

"""``eosbench submit verify DIR --sample K``: re-run K random runs of a submission.

Unlike validation this runs code: the method's optimizer, from the package installed here
(its version must be the manifest's).  Each sampled run is re-run from scratch with its
task and seed, and every recorded series is compared with the submitted one, step by step:
``|re-run - submitted| <= atol + rtol * |submitted|`` for every key of every record except
timings (``*_seconds``), eigensolver costs (``*_hvps``) and residuals (``*_residual``), which
depend on the machine.  Both must have the same steps and keys.

On the device type the submission was made on (see its provenance) eosbench runs are
deterministic, so the defaults (``rtol=1e-4``, ``atol=1e-6``) only absorb the last digit.
On another device type expect the edge-of-stability phase, which is chaotic, to diverge
pointwise: compare there with a looser ``--rtol``, or on the device the submission names.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .manifest import MANIFEST, Problem
from .validator import threshold_mismatch, validate

SKIPPED_SUFFIXES = ("_seconds", "_hvps", "_residual")


@dataclass
class Comparison:
    path: str  # run directory in the submission
    task: str
    seed: int
    problems: list[Problem] = field(default_factory=list)
    keys: int = 0  # series compared
    values: int = 0  # numbers compared
    max_abs: float = 0.0  # largest |re-run - submitted|
    max_rel: float = 0.0  # largest |re-run - submitted| / |submitted|

    @property
    def ok(self) -> bool:
        return not self.problems


def compare_series(
    rel: str, submitted: list[dict[str, Any]], rerun: list[dict[str, Any]], rtol: float, atol: float
) -> tuple[list[Problem], dict[str, Any]]:
    """Problems where ``rerun`` differs from ``submitted`` beyond the tolerance, and stats."""
    problems: list[Problem] = []
    stats = {"keys": set(), "values": 0, "max_abs": 0.0, "max_rel": 0.0}
    a = {r["step"]: r for r in submitted}
    b = {r["step"]: r for r in rerun}
    if sorted(a) != sorted(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        why = f"different steps: submitted only {only_a[:5]}, re-run only {only_b[:5]}"
        return [Problem(rel, "-", why)], stats
    reported: set[str] = set()  # keys with a problem: only their first step is reported
    for step in sorted(a):
        ra, rb = a[step], b[step]
        keys = {k for k in set(ra) | set(rb) if k != "step" and not k.endswith(SKIPPED_SUFFIXES)}
        for k in sorted(keys):
            va, vb = ra.get(k), rb.get(k)
            stats["keys"].add(k)
            why = f"{k}: submitted {va!r}, re-run {vb!r}"
            if (va is None) == (vb is None):
                if va is None:
                    continue
                stats["values"] += 1
                d = abs(float(va) - float(vb))
                stats["max_abs"] = max(stats["max_abs"], d)
                if va != 0:
                    stats["max_rel"] = max(stats["max_rel"], d / abs(float(va)))
                if d <= atol + rtol * abs(float(va)):
                    continue
                why += f" (|difference| {d:.3g} > {atol:g} + {rtol:g} x |submitted|)"
            if k not in reported:
                reported.add(k)
                problems.append(Problem(rel, f"step {step}", why))
    stats["keys"] = len(stats["keys"])
    return problems, stats


def verify(
    root: Path,
    sample: int,
    seed: int = 0,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    device: str = "cpu",
    work: Path | None = None,
    log=print,
) -> tuple[list[Problem], list[Comparison]]:
    """Validate the submission, then re-run ``sample`` of its runs drawn at random (with
    ``seed``) and compare their series; the problems and one comparison per re-run."""
    from importlib import metadata

    from .. import __version__, claims  # noqa: F401  (claims before the runner: registration)
    from ..optim import OPTIMIZERS, threshold
    from ..runner import RunOptions, run
    from ..store import METRICS_FILE, read_records

    if sample < 1:
        raise UserError("--sample must be at least 1")
    if not (math.isfinite(rtol) and math.isfinite(atol)) or rtol < 0 or atol < 0:
        raise UserError("--rtol and --atol must be finite and >= 0")
    res = validate(root)
    if not res.ok:
        return res.problems, []
    m = res.manifest
    pkg, want = m.code.package, m.code.version

    def stop(fld: str, why: str) -> tuple[list[Problem], list[Comparison]]:
        return [Problem(MANIFEST, fld, why)], []

    try:
        have = __version__ if pkg == "eosbench" else metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return stop("code.package", f"{pkg!r} is not installed here: pip install {pkg}=={want}")
    if have != want:
        return stop("code.version", f"{pkg} {have} is installed here, the submission was made "
                                    f"with {want}")  # fmt: skip
    if m.code.optimizer not in OPTIMIZERS:
        return stop("code.optimizer", f"{pkg} {have} registers no optimizer "
                    f"{m.code.optimizer!r} (entry point group eosbench.optimizers)")  # fmt: skip
    problems: list[Problem] = []
    for name, runs in sorted(res.runs.items()):
        te = m.track(name)
        if te.threshold is None or not runs:
            continue
        try:
            t = threshold(runs[0].task.optimizer)
            why = threshold_mismatch(te.threshold, t, "the installed optimizer")
        except UserError as e:
            why = str(e)
        if why is not None:
            problems.append(Problem(MANIFEST, f"tracks.{name}.threshold", why))
    all_runs = sorted(
        (r for runs in res.runs.values() for r in runs), key=lambda r: (r.task.name, r.seed)
    )
    chosen = random.Random(seed).sample(all_runs, min(sample, len(all_runs)))
    comparisons = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        opts = RunOptions(out=Path(tmp), device=device, force=True, checkpoint_every=0,
                          progress=False)  # fmt: skip
        for i, r in enumerate(chosen, 1):
            log(f"[{i}/{len(chosen)}] re-running {r.id} ({r.task.name}, seed {r.seed})")
            rerun = read_records(run(r.recorded_task, r.seed, opts) / METRICS_FILE)
            rel = f"{r.id}/{METRICS_FILE}"
            probs, stats = compare_series(rel, r.series.records(), rerun, rtol, atol)
            comparisons.append(Comparison(r.id, r.task.name, r.seed, probs, **stats))
            problems += probs
    return problems, comparisons

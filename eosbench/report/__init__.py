"""Reports of recorded runs: a verdict table on the terminal, LaTeX tables,
figures and a machine-readable summary.  Everything is regenerated from the
run directories alone; the same runs give byte-identical tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .. import store
from ..artifact import ARTIFACT_FILE, read_artifact, write_artifact
from ..claims import Verdict, check
from ..record import Run
from .figures import write_figures
from .flow import write_flow_figures
from .generalization import write_generalization
from .regularization import write_regularization_figures
from .tables import load_runs, write_tables
from .theory import write_theory_figures
from .tuners import write_tuner_figures


def print_verdicts(
    results: Sequence[tuple[str, Sequence[Verdict]]], comparisons: Sequence[Verdict] = ()
) -> None:
    """One line per claim: verdict, expected?, run, claim, measured vs target, detail;
    then one per suite comparison."""
    rows = [(str(where), v) for where, vs in results for v in vs]
    rows += [("[suite]", v) for v in comparisons]
    for where, v in rows:
        mark = "ok " if v.as_expected else "UNEXPECTED"
        m = "-" if v.measured is None else f"{v.measured:.4g}"
        t = "-" if v.target is None else f"{v.target:.4g}"
        print(
            f"{v.verdict:4s} (expected {v.expected}, {mark}) {where}  {v.claim}  "
            f"measured={m} target={t}  [{v.tolerance}]\n      {v.detail}"
        )
    n = len(rows)
    bad = sum(not v.as_expected for _, v in rows)
    print(f"{n - bad} of {n} verdicts as expected" + (f"; {bad} UNEXPECTED" if bad else ""))


def title_of(runs: Sequence[Run]) -> str:
    """What the runs are, for captions: "suite NAME" when they are every task of a suite,
    else "N task(s) of suite(s) A, B" (each task counted in the smallest suite that holds
    it), else "N tasks".  A function of the runs alone, so a regenerated report is
    byte-identical."""
    from ..suites import SUITES

    tasks = {r.task.name for r in runs}
    suites = [SUITES.get(n) for n in SUITES.list()]
    whole = [s for s in suites if tasks == set(s.tasks)]
    if whole:
        return "suite " + min(whole, key=lambda s: s.name).name
    homes = set()
    for t in tasks:
        holders = [s for s in suites if t in s.tasks]
        if holders:
            homes.add(min(holders, key=lambda s: (len(s.tasks), s.name)).name)
    n = f"{len(tasks)} task{'s' * (len(tasks) != 1)}"
    if not homes:
        return n
    return f"{n} of suite{'s' * (len(homes) != 1)} " + ", ".join(sorted(homes))


def verdicts_of(runs: Sequence[Run]) -> dict[str, list[Verdict]]:
    """Each run's verdicts by the claims that judge it now (:func:`eosbench.claims.check`)."""
    return {r.id: check(r) for r in runs}


def write_report(
    runs: Sequence[Run],
    out: Path,
    title: str | None = None,
    comparisons: Sequence[Verdict] | None = None,
) -> list[Path]:
    """Write ``claims.tex``/``.csv``, ``curvature.tex``, ``summary.csv``/``.json`` and the
    figures (PNG and PDF) for ``runs`` into ``out``, and the generalization and comparison
    tables where the runs have them; return the files written.  The default title names the
    suites the runs belong to (:func:`title_of`); ``comparisons`` default to every suite
    comparison whose tasks are among the runs."""
    from ..claims.compare import comparisons_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(runs, key=lambda r: (r.task.name, r.seed, r.id))
    frames = load_runs(runs, verdicts_of(runs))
    title = title or title_of(runs)
    if comparisons is None:
        comparisons = comparisons_for(runs)
    written = write_tables(frames, out, title)
    written += write_generalization(frames["runs"], runs, list(comparisons), out, title)
    written += write_figures(runs, out)
    written += write_tuner_figures(runs, out)  # only where tuned optimizers ran
    written += write_flow_figures(runs, out)  # only where a central flow was integrated
    written += write_theory_figures(runs, out)  # only where solvable models ran
    written += write_regularization_figures(runs, out)  # only where the Hessian was split
    index = {
        "title": title,
        "runs": [r.id for r in runs],
        "files": sorted(p.name for p in written),
    }
    store.atomic_write_text(out / "index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    return written


def published_id(run: Run, roots: Sequence[Path]) -> str:
    """A run's id in a results artifact: its directory relative to the first of ``roots``
    that holds it, at least ``<task>/seed-<n>``; a run read from an artifact keeps its id."""
    path = Path(run.id)
    if not path.is_dir():
        return run.id
    rel = Path(path.parent.name) / path.name
    for root in roots:
        root = Path(root).resolve()
        if path.resolve().is_relative_to(root):
            inside = path.resolve().relative_to(root)
            rel = inside if len(inside.parts) >= 2 else rel
            break
    return rel.as_posix()


def publish(runs: Sequence[Run], out: Path, roots: Sequence[Path] = ()) -> list[Path]:
    """Write the results artifact ``out/runs.parquet`` (:mod:`eosbench.artifact`: every run's
    series, record and verdicts) and the report read back from it, so that ``eosbench report
    out`` regenerates every table and figure byte for byte from the artifact alone."""
    out = Path(out)
    verdicts = verdicts_of(runs)
    published = [
        replace(r, id=published_id(r, roots), verdicts=tuple(verdicts[r.id])) for r in runs
    ]
    path = write_artifact(out / ARTIFACT_FILE, published)
    return [path, *write_report(read_artifact(path), out)]

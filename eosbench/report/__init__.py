"""Reports of recorded runs: a verdict table on the terminal, LaTeX tables,
figures and a machine-readable summary.  Everything is regenerated from the
run directories alone; the same runs give byte-identical tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .. import store
from ..claims import Verdict
from ..errors import UserError
from .figures import write_figures
from .generalization import write_generalization
from .tables import load_runs, write_tables


def print_verdicts(
    results: Sequence[tuple[Path, list[Verdict]]], comparisons: Sequence[Verdict] = ()
) -> None:
    """One line per claim: verdict, expected?, run, claim, measured vs target, detail;
    then one per suite comparison."""
    rows = [(str(rdir), v) for rdir, vs in results for v in vs]
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


def _title(frames) -> str:
    """ "suite NAME" for the smallest suite holding every task of the runs, else "N tasks":
    a function of the runs alone, so a regenerated report is byte-identical."""
    from ..suites import SUITES

    tasks = set(frames["runs"]["task"])
    holders = [SUITES.get(n) for n in SUITES.list() if tasks <= set(SUITES.get(n).tasks)]
    if holders:
        return "suite " + min(holders, key=lambda s: (len(s.tasks), s.name)).name
    return f"{len(tasks)} tasks"


RUN_RECORD_FILES = (store.RUN_FILE, store.CLAIMS_FILE)


def copy_runs(runs: Sequence[Path], dest: Path, roots: Sequence[Path] = ()) -> list[Path]:
    """Copy each run's record -- ``run.json`` (task, hash, status, provenance) and
    ``claims.json`` (verdicts with their numbers) -- to ``dest``, as ``results/`` publishes
    them; not the checkpoint, nor the per-step series (``metrics.jsonl``, megabytes for a
    long SGD run), which the run's command regenerates.  ``eosbench check`` of the copies
    prints the recorded verdicts.  Each copy keeps its path relative to the first of
    ``roots`` that holds it, and at least ``<task>/seed-<n>``; two runs that would land on
    one path are an error, and so is a run without ``claims.json`` (not checked yet)."""
    dest = Path(dest)
    resolved = [Path(r).resolve() for r in roots]
    targets: dict[Path, Path] = {}
    for r in runs:
        r = Path(r)
        if not (r / store.CLAIMS_FILE).is_file():
            raise UserError(f"{r}: no {store.CLAIMS_FILE} to publish; run `eosbench check` first")
        rel = Path(r.parent.name) / r.name
        for root in resolved:
            if r.resolve().is_relative_to(root):
                inside = r.resolve().relative_to(root)
                rel = inside if len(inside.parts) >= 2 else rel
                break
        t = dest / rel
        if t in targets:
            raise UserError(f"{r} and {targets[t]} would both be copied to {t}")
        targets[t] = r
    written = []
    for t, r in sorted(targets.items()):
        for name in RUN_RECORD_FILES:  # both exist: find_runs and the check above
            src = r / name
            if src.resolve() != (t / name).resolve():
                t.mkdir(parents=True, exist_ok=True)
                store.atomic_write_bytes(t / name, src.read_bytes())
            written.append(t / name)
    return written


def write_report(
    runs: Sequence[Path],
    out: Path,
    title: str | None = None,
    comparisons: Sequence[Verdict] | None = None,
) -> list[Path]:
    """Write ``claims.tex``, ``curvature.tex``, ``summary.csv``, ``summary.json`` and
    figures (PNG and PDF) for ``runs`` into ``out``, and the generalization and
    comparison tables where the runs have them; return the files written.  The default
    title names the suite the runs belong to; ``comparisons`` default to every suite
    comparison whose tasks are among the runs."""
    from ..claims.compare import comparisons_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_runs(runs)
    title = title or _title(frames)
    if comparisons is None:
        comparisons = comparisons_for(runs)
    written = write_tables(frames, out, title)
    written += write_generalization(frames["runs"], list(comparisons), out, title)
    written += write_figures(runs, out)
    index = {
        "title": title,
        "runs": [str(Path(r)) for r in runs],
        "files": sorted(p.name for p in written),
    }
    store.atomic_write_text(out / "index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    return written

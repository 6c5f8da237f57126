"""One-time migration of results/ to the artifact format (issue 17), kept for provenance.

For each results folder given: every committed run record (``runs/**/run.json``) is matched
by its computation hash and seed to a regenerated run directory under REGEN (made by
re-running the recorded task on the CPU); the regenerated verdicts are compared with the
committed ones (measured value bitwise equal, verdict equal) and the folder is rewritten as
``runs.parquet`` + its report.  With --no-series the committed records are kept without
series (a GPU session's records) and the committed tables stay as they are.

    python scripts/migrate_results.py REGEN results/smoke [results/...]
    python scripts/migrate_results.py --no-series results/gpu-h100-2026-11-23/cohen2021
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from eosbench import store
from eosbench.artifact import ARTIFACT_FILE, write_artifact
from eosbench.claims import check, recorded_verdicts
from eosbench.record import Run
from eosbench.report import write_report


def committed(folder: Path) -> list[tuple[str, dict, list]]:
    out = []
    for rdir in store.find_runs([folder / "runs"]):
        rel = rdir.relative_to(folder / "runs").as_posix()
        out.append((rel, store.read_json(rdir / store.RUN_FILE), recorded_verdicts(rdir)))
    return out


def regenerated(regen: Path) -> dict[tuple[str, int], Path]:
    found = {}
    for rdir in store.find_runs([regen]):
        meta = store.read_run_json(rdir)
        if meta.get("status") in store.FINISHED:
            found[(store.recorded_computation(meta), meta["seed"])] = rdir
    return found


def migrate(folder: Path, regen: dict | None) -> list[str]:
    notes = []
    runs = []
    for rel, meta, old in committed(folder):
        if regen is None:
            runs.append(Run.from_record(rel, meta, None, old))
            continue
        key = (store.recorded_computation(meta), meta["seed"])
        if key not in regen:
            raise SystemExit(f"{folder}: {rel} not regenerated yet")
        run = replace(store.load_run(regen[key]), id=rel)
        new = check(run)
        for o, n in zip(old, new, strict=True):
            same = o.verdict == n.verdict and o.measured == n.measured
            if not same:
                notes.append(f"{folder.name}/{rel} {o.claim}: {o.verdict} {o.measured!r} -> "
                             f"{n.verdict} {n.measured!r}")
        runs.append(replace(run, verdicts=tuple(new)))
    if regen is None:
        write_artifact(folder / ARTIFACT_FILE, runs)
        shutil.rmtree(folder / "runs")
        return notes
    keep = {"README.md"}
    for p in folder.iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    from eosbench.artifact import read_artifact

    write_artifact(folder / ARTIFACT_FILE, runs)
    write_report(read_artifact(folder), folder)
    return notes


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("regen", nargs="?", type=Path)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--no-series", action="store_true")
    a = p.parse_args()
    if a.no_series:
        a.folders = ([a.regen] if a.regen else []) + a.folders
    regen = None if a.no_series else regenerated(a.regen)
    for f in a.folders:
        notes = migrate(f, regen)
        print(f"{f}: migrated" + ("" if notes else " (every verdict and measured value equal)"))
        for n in notes:
            print("  differs:", n)
    return 0


if __name__ == "__main__":
    sys.exit(main())

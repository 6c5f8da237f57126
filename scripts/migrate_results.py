"""Give a results folder's series-less runs their time series back (issue 17), run by run.

A folder migrated without its series (``series: false`` for some runs in ``runs.parquet``)
gets them by re-running each such run's recorded task on the CPU, one thread per process;
the CPU runs are bitwise reproducible, so the regenerated run must give every recorded
verdict and measured value exactly.  Two steps, so that a long folder can be done over
several sessions (a run kept in REGEN is reused, a killed one resumes from its checkpoint):

    python scripts/migrate_results.py run results/cpu-cifar10-1k REGEN [--only SUBSTR ...]
    python scripts/migrate_results.py merge results/cpu-cifar10-1k REGEN

``merge`` puts each regenerated run (its new record and series) into the artifact in place
of the series-less record when every verdict and measured value is equal, and lists any that
differ without touching them; once every run of the folder has its series it rewrites the
folder's tables and figures from the artifact (the README is kept).

The runs are bitwise reproducible on one machine, not across CPUs: a run regenerated on
another x86-64 CPU can differ in the last bits of a float32 sum, which the edge of stability's
oscillation amplifies.  ``merge --same-verdicts`` also accepts a regenerated run whose every
verdict is the recorded one while a measured value differs, and prints each such difference
(old -> new, relative change), for the folder's README to record.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from eosbench import store
from eosbench.artifact import ARTIFACT_FILE, read_artifact, write_artifact
from eosbench.claims import check
from eosbench.task import computation_hash


def missing(folder: Path, only: list[str]) -> list:
    """The runs of ``folder`` kept without series (those whose id contains one of ``only``)."""
    return [r for r in read_artifact(folder) if not r.has_series
            and (not only or any(s in r.id for s in only))]  # fmt: skip


def regenerate(folder: Path, regen: Path, only: list[str]) -> None:
    import torch

    from eosbench.runner import RunOptions, run
    from eosbench.suites import is_registered

    torch.set_num_threads(1)
    todo = missing(folder, only)
    for i, r in enumerate(todo):
        task = r.recorded_task
        opts = RunOptions(out=regen / folder.name, device="cpu", progress=False,
                          checkpoint_every=200, data_root=os.environ.get("EOSBENCH_DATA"))
        rdir = run(task, r.seed, opts, registered=is_registered(task))
        print(f"[{i + 1}/{len(todo)}] {r.id}: {rdir}", flush=True)


def _changed(o, now: dict, same_verdicts: bool) -> bool:
    """Whether the recorded verdict ``o`` is not what the claims give now (``now``: by claim);
    with ``same_verdicts`` a measured value may differ."""
    if o.claim not in now or o.verdict != now[o.claim].verdict:
        return True
    return not same_verdicts and o.measured != now[o.claim].measured


def merge(folder: Path, regen: Path, same_verdicts: bool = False) -> int:
    done = {}
    for rdir in store.find_runs([regen / folder.name]):
        meta = store.read_run_json(rdir)
        if meta.get("status") in store.FINISHED:
            done[(store.recorded_computation(meta), meta["seed"])] = rdir
    runs, differs, merged = [], [], 0
    for old in read_artifact(folder):
        key = (computation_hash(old.task), old.seed)
        if old.has_series or key not in done:
            runs.append(old)
            continue
        new = replace(store.load_run(done[key]), id=old.id)
        verdicts = check(new)
        now = {v.claim: v for v in verdicts}  # claims added since the record are new ones
        bad = [f"{o.claim}: {o.verdict} {o.measured!r} -> " + (
                   f"{now[o.claim].verdict} {now[o.claim].measured!r}" if o.claim in now
                   else "no such claim now")
               for o in old.verdicts if _changed(o, now, same_verdicts)]  # fmt: skip
        moved = [(o, now[o.claim].measured) for o in old.verdicts
                 if not bad and now[o.claim].measured != o.measured]  # only with same_verdicts
        for o, m in moved:
            rel = f" ({m / o.measured - 1:+.2e})" if o.measured and m is not None else ""
            print(f"  {old.id} {o.claim}: {o.verdict} both; measured {o.measured!r} -> "
                  f"{m!r}{rel}")
        added = [v.claim for v in verdicts if v.claim not in {o.claim for o in old.verdicts}]
        if added:
            print(f"  {old.id}: claims judged now but not recorded: {', '.join(added)}")
        if bad:
            differs += [f"{old.id} {b}" for b in bad]
            runs.append(old)
        else:
            runs.append(replace(new, verdicts=tuple(verdicts)))
            merged += 1
    write_artifact(folder / ARTIFACT_FILE, runs)
    left = sum(not r.has_series for r in runs)
    print(f"{folder}: {merged} run(s) merged, {left} still without series")
    for d in differs:
        print("  differs (kept without series):", d)
    if not left:
        from eosbench.report import publish

        # publish beside the folder and swap it in whole: a failed publish leaves the folder
        # as it was, and nothing of the old tables survives in the new one
        fresh, old_dir = folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.old")
        for d in (fresh, old_dir):
            shutil.rmtree(d, ignore_errors=True)
        publish(read_artifact(folder), fresh)
        if (folder / "README.md").exists():
            shutil.copy2(folder / "README.md", fresh / "README.md")
        folder.rename(old_dir)
        fresh.rename(folder)
        shutil.rmtree(old_dir)
        print(f"{folder}: tables and figures rewritten from the artifact")
    return 1 if differs else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("run", "merge"))
    p.add_argument("folder", type=Path)
    p.add_argument("regen", type=Path)
    p.add_argument("--only", nargs="*", default=[], help="run ids containing one of these")
    p.add_argument("--same-verdicts", action="store_true",
                   help="merge: accept a run whose verdicts are the recorded ones while a "
                        "measured value differs (regenerated on another CPU); print each")
    a = p.parse_args()
    if a.action == "run":
        regenerate(a.folder, a.regen, a.only)
        return 0
    return merge(a.folder, a.regen, a.same_verdicts)


if __name__ == "__main__":
    sys.exit(main())

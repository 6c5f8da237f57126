"""Re-run a results folder's runs with measurement options changed, and compare every verdict.

Issue 21: a measurement setting (for example the eigensolver's stopping bound) may be adopted
only if every committed claim verdict stays what it was when its runs are regenerated with it,
or the differences are listed and explained.  This script does the regenerating and the
listing: each run of the folder (those whose id contains one of ``--only``) is re-run on the
CPU with its recorded task and the ``--set`` overrides that apply to it
(``measurements.NAME.OPTION=VALUE``; a task without measurement NAME keeps its own), one
thread per process, into REGEN (a finished run is reused, a killed one resumes).  ``compare``
then judges each regenerated run with the claims its task asks and prints, per run and claim,
the recorded verdict and measured value against the new ones, and each run's products and
measuring time, old and new.  The committed folder is never written.

    python scripts/regenerate_with.py run results/tuners-digits REGEN --set measurements.sharpness.bound=gap
    python scripts/regenerate_with.py compare results/tuners-digits REGEN --set ... [--baseline BASE]

CPU runs are bitwise reproducible on one kind of CPU only, so a folder committed from another
machine differs from any regeneration here in the last digits, whatever the settings.  To see
the settings' own effect, regenerate the folder once without ``--set`` into BASE (the recorded
tasks as they are) and pass ``--baseline BASE``: the "recorded" side of the comparison (verdicts
and costs) is then those runs, judged by the same claims, on the same machine.

Exit status 1 when a verdict differs (it is listed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from eosbench import store
from eosbench.artifact import read_artifact
from eosbench.claims import check, evaluate
from eosbench.errors import UserError
from eosbench.task import apply_overrides, computation_hash


def _with(task, sets: list[str]):
    """``task`` with each override of ``sets`` whose measurement it has."""
    names = {m.name for m in task.measurements}
    mine = [s for s in sets if s.split(".")[1] in names]
    return apply_overrides(task, mine)


def _runs(folder: Path, only: list[str]) -> list:
    return [r for r in read_artifact(folder) if not only or any(s in r.id for s in only)]


def regenerate(folder: Path, regen: Path, sets: list[str], only: list[str]) -> None:
    import torch

    from eosbench.runner import RunOptions, run

    torch.set_num_threads(1)
    todo = _runs(folder, only)
    for i, r in enumerate(todo):
        opts = RunOptions(out=regen / folder.name, device="cpu", progress=False,
                          checkpoint_every=200, data_root=os.environ.get("EOSBENCH_DATA"))
        rdir = run(_with(r.recorded_task, sets), r.seed, opts)
        print(f"[{i + 1}/{len(todo)}] {r.id}: {rdir}", flush=True)


def _hvps(run) -> float:
    return sum(float(run.values(k)[1].sum()) for k in run.keys if k.endswith("_hvps"))


def _finished(root: Path) -> dict:
    done = {}
    for rdir in store.find_runs([root]):
        meta = store.read_run_json(rdir)
        if meta.get("status") in store.FINISHED:
            done[(store.recorded_computation(meta), meta["seed"])] = rdir
    return done


def compare(folder: Path, regen: Path, sets: list[str], only: list[str],
            baseline: Path | None = None) -> int:  # fmt: skip
    done = _finished(regen / folder.name)
    base = _finished(baseline / folder.name) if baseline is not None else None
    differs, same, missing = [], 0, 0
    print("| run | claim | recorded | regenerated |")
    print("|---|---|---|---|")
    costs = []
    for old in _runs(folder, only):
        key = (computation_hash(_with(old.recorded_task, sets)), old.seed)
        if base is not None:  # the recorded task regenerated here, judged as the new one
            bkey = (computation_hash(old.recorded_task), old.seed)
            if bkey not in base:
                missing += 1
                continue
            b = store.load_run(base[bkey])
            old = replace(b, id=old.id, verdicts=tuple(check(b)))
        if key not in done:
            missing += 1
            continue
        new = store.load_run(done[key])
        # judged by the claims that judge the recorded side now (a run of an overridden task
        # is not registered, so check() would take the claims recorded with it)
        judge = replace(new.recorded_task, claims=old.judge().claims)
        now = {v.claim: v for v in evaluate(judge, new)}
        for o in old.verdicts:
            n = now.get(o.claim)
            got = "no such claim now" if n is None else f"{n.verdict} {n.measured!r}"
            mark = "" if n is not None and n.verdict == o.verdict else " **differs**"
            print(f"| {old.id} | {o.claim} | {o.verdict} {o.measured!r} | {got}{mark} |")
            if mark:
                differs.append(f"{old.id} {o.claim}")
            else:
                same += 1
        if old.has_series:
            costs.append((old.id, _hvps(old), _hvps(new), old.cost.get("measure_seconds"),
                          new.cost.get("measure_seconds"), old.cost.get("wall_seconds"),
                          new.cost.get("wall_seconds")))  # fmt: skip
    print("\n| run | products old -> new | measuring s old -> new | wall s old -> new |")
    print("|---|---|---|---|")
    for rid, h0, h1, m0, m1, w0, w1 in costs:
        print(f"| {rid} | {h0:.0f} -> {h1:.0f} | {m0:.0f} -> {m1:.0f} | {w0:.0f} -> {w1:.0f} |")
    if costs:
        h0, h1 = sum(c[1] for c in costs), sum(c[2] for c in costs)
        m0, m1 = sum(c[3] for c in costs), sum(c[4] for c in costs)
        w0, w1 = sum(c[5] for c in costs), sum(c[6] for c in costs)
        print(f"| all {len(costs)} | {h0:.0f} -> {h1:.0f} ({h1 / h0 - 1:+.0%}) | {m0:.0f} -> "
              f"{m1:.0f} ({m1 / m0 - 1:+.0%}) | {w0:.0f} -> {w1:.0f}; measuring share "
              f"{m0 / w0:.0%} -> {m1 / w1:.0%} |")
    print(f"\n{folder}: {same} verdicts the same, {len(differs)} differ, {missing} run(s) not "
          f"regenerated yet")
    for d in differs:
        print("  differs:", d)
    return 1 if differs else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "compare"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("regen", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="measurements.NAME.OPTION=VALUE (repeatable)")
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--baseline", type=Path, default=None,
                    help="compare against these regenerated recorded tasks (module docstring)")
    args = ap.parse_args()
    try:
        for s in args.sets:
            if not s.startswith("measurements.") or s.count(".") < 2 or "=" not in s:
                raise UserError(f"--set {s!r}: expected measurements.NAME.OPTION=VALUE")
        if args.command == "run":
            regenerate(args.folder, args.regen, args.sets, args.only)
            return 0
        return compare(args.folder, args.regen, args.sets, args.only, args.baseline)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

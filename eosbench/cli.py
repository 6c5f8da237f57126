"""Command-line interface: ``eosbench`` (also ``python -m eosbench``).

Every command checks its whole input before it writes anything.  User errors (unknown
task, bad override, a value outside its domain, missing data, a corrupt file) and the
failures of the file system (:class:`OSError`: a full disk, a read-only or missing
directory) print one line on standard error, naming the file where there is one, and exit
with status 2, never a traceback.  Any other exception is a bug: a line saying so, then
its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eosbench", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"eosbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tasks", help="list registered tasks")
    t.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'digits/*'")
    t.add_argument("--suite", help="only the tasks of this suite")
    t.add_argument("--suites", action="store_true", help="list the suites instead")
    t.add_argument("-v", "--verbose", action="store_true", help="show claims and description")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--out", type=Path, default=Path("runs"), help="results root (default: runs)"
        )
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
        sp.add_argument("--data", dest="data_root", help="data root (default: $EOSBENCH_DATA)")
        sp.add_argument(
            "--physical-batch-size",
            type=int,
            default=4096,
            help="examples per forward/backward chunk (default: 4096)",
        )
        sp.add_argument("--force", action="store_true", help="recompute finished runs")
        sp.add_argument(
            "--checkpoint-every",
            type=int,
            default=1000,
            metavar="STEPS",
            help="steps between checkpoints; an unfinished run resumes from its last one "
            "(default: 1000, 0 = none; --force starts over)",
        )
        sp.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on GPU")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="run one task; prints the run directory last")
    r.add_argument("task")
    r.add_argument("--seed", type=int, help="seed (default: the task's first seed)")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a task field, e.g. optimizer.lr=0.05 (repeatable)",
    )
    common(r)

    c = sub.add_parser("check", help="evaluate the claims of runs; exit 1 if any is unexpected")
    c.add_argument("paths", nargs="+", type=Path)

    rp = sub.add_parser("reproduce", help="run a suite, check it and write tables and figures")
    rp.add_argument("--suite", default="smoke")
    rp.add_argument("--seeds", help="comma-separated seeds (default: each task's seeds)")
    rp.add_argument("--report", type=Path, help="report directory (default: OUT/report)")
    rp.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once: pool worker processes, or local jobs (default: 1, in process)",
    )
    ex = rp.add_argument_group("where the runs execute (README: 'On a cluster')")
    ex.add_argument(
        "--executor",
        choices=["pool", "local", "slurm"],
        default="pool",
        help="pool: this process or --jobs worker processes (default); local: one submitit "
        "job process per run on this machine; slurm: one Slurm job per run (an array job). "
        "local and slurm need submitit (pip install 'eosbench[cluster]')",
    )
    ex.add_argument("--slurm-partition", metavar="NAME", help="partition of the jobs")
    ex.add_argument(
        "--slurm-time",
        type=int,
        metavar="MINUTES",
        help="time limit of each job (default: 240); a run that needs more checkpoints and "
        "is requeued",
    )
    ex.add_argument("--slurm-gpus-per-job", type=int, metavar="N", help="GPUs (default: 0)")
    ex.add_argument(
        "--slurm-cpus-per-task", type=int, metavar="N", help="CPUs (default: the cluster's)"
    )
    ex.add_argument(
        "--slurm-array-parallelism",
        type=int,
        metavar="N",
        help="jobs of the array running at once (default: 256)",
    )
    ex.add_argument(
        "--slurm-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another sbatch option, e.g. account=proj or mem=16G (repeatable)",
    )
    common(rp)

    rep = sub.add_parser("report", help="write LaTeX tables, figures and a summary of runs")
    rep.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="run directories, trees of them, or results folders (holding runs.parquet)",
    )
    rep.add_argument(
        "--out", type=Path, help="report directory (default: RESULTS/report for one RESULTS)"
    )
    rep.add_argument(
        "--publish",
        action="store_true",
        help="also write OUT/runs.parquet, every run's time series, record and verdicts in "
        "one file, and build the report from it (as results/ folders are published); "
        "`eosbench report OUT` and `eosbench check OUT` then work from that file alone",
    )

    _submit_parsers(sub)

    d = sub.add_parser("data", help="data sets: download, info, verify")
    d.add_argument("action", choices=["download", "info", "verify"],
                   help="download: fetch into the data root; info: load and describe; verify: "
                   "compare a Hub copy with the official files, row by row")  # fmt: skip
    d.add_argument("name", help="a registered data set: cifar10, cifar100, digits, hub, "
                   "hub-cifar10, hub-mnist, ...")  # fmt: skip
    d.add_argument("--data", dest="data_root", help="data root (default: $EOSBENCH_DATA)")
    d.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the data source, as data.options.KEY of a task "
                   "(e.g. --option repo=owner/name --option revision=COMMIT)")  # fmt: skip
    d.add_argument("--against", help="verify: the registered data set to compare with "
                   "(default: the one the source copies)")  # fmt: skip
    d.add_argument("--n", type=int, default=1000, help="verify: rows compared per split")
    return p


def _submit_parsers(sub) -> None:
    from .leaderboard.tracks import BASELINES

    s = sub.add_parser("submit", help="leaderboard submissions: plan, template, validate, verify")
    ss = s.add_subparsers(dest="submit_command", required=True)
    pl = ss.add_parser("plan", help="print the `eosbench run` commands of a complete entry")
    pl.add_argument("--baseline", choices=sorted(BASELINES), help="a built-in baseline")
    pl.add_argument("--optimizer", help="registered optimizer name (with --track)")
    pl.add_argument("--track", help="track to plan (with --optimizer)")
    pl.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="optimizer.KEY=VALUE",
        help="a hyperparameter of the entry (repeatable)",
    )
    pl.add_argument(
        "--out", type=Path, default=Path("runs/leaderboard"), help="results root of the runs"
    )
    pl.add_argument("--device", help="device of the runs (default: eosbench run's)")
    tp = ss.add_parser("template", help="build a submission directory from run directories")
    tp.add_argument("out", type=Path, help="new submission directory")
    tp.add_argument("--runs", type=Path, nargs="+", required=True, help="run directories/trees")
    tp.add_argument("--baseline", choices=sorted(BASELINES), help="fill in a baseline's details")
    tp.add_argument("--id", dest="entry_id", help="entry id ([a-z0-9-]), names its file")
    tp.add_argument("--method", help="display name of the method")
    tp.add_argument("--author", dest="authors", action="append", help="an author (repeatable)")
    tp.add_argument("--paper", help="http(s) link to the paper")
    tp.add_argument("--package", help="pip package registering the optimizer (default: found)")
    tp.add_argument("--version", dest="package_version", help="its version (default: found)")
    va = ss.add_parser("validate", help="check a submission (data only); exit 1 on problems")
    va.add_argument("dir", type=Path)
    va.add_argument(
        "--accept",
        type=Path,
        metavar="LEADERBOARD",
        help="when valid, write the entry to LEADERBOARD/entries/<id>.json",
    )
    ve = ss.add_parser("verify", help="re-run a random sample of a submission's runs")
    ve.add_argument("dir", type=Path)
    ve.add_argument("--sample", type=int, required=True, metavar="K", help="runs to re-run")
    ve.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    ve.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (1e-4)")
    ve.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (1e-6)")
    ve.add_argument("--device", default="cpu", help="device of the re-runs (default: cpu)")
    lb = sub.add_parser("leaderboard", help="render the accepted entries: Markdown, LaTeX, HTML")
    lb.add_argument(
        "--entries",
        type=Path,
        default=Path("leaderboard/entries"),
        help="directory of entry JSON files (default: leaderboard/entries)",
    )
    lb.add_argument(
        "--out",
        type=Path,
        default=Path("leaderboard"),
        help="output directory (default: leaderboard)",
    )


def _run_options(a: argparse.Namespace):
    from .runner import RunOptions

    if a.physical_batch_size is not None and a.physical_batch_size <= 0:
        raise UserError("--physical-batch-size must be positive")
    if a.checkpoint_every < 0:
        raise UserError("--checkpoint-every must be at least 0")
    return RunOptions(
        checkpoint_every=a.checkpoint_every,
        out=a.out,
        device=a.device,
        physical_batch_size=a.physical_batch_size,
        data_root=a.data_root,
        force=a.force,
        allow_tf32=a.tf32,
        progress=False if a.no_progress else None,
    )


def _executor_options(a: argparse.Namespace):
    from .cluster import ExecutorOptions, parse_params

    slurm = {
        "--slurm-partition": a.slurm_partition,
        "--slurm-time": a.slurm_time,
        "--slurm-gpus-per-job": a.slurm_gpus_per_job,
        "--slurm-cpus-per-task": a.slurm_cpus_per_task,
        "--slurm-array-parallelism": a.slurm_array_parallelism,
        "--slurm-param": a.slurm_param or None,
    }
    given = [flag for flag, value in slurm.items() if value is not None]
    if given and a.executor != "slurm":
        raise UserError(f"{given[0]} needs --executor slurm")
    if a.executor == "slurm" and a.jobs != 1:
        raise UserError("--jobs applies to --executor pool or local; use --slurm-array-parallelism")
    defaults = ExecutorOptions()
    eo = ExecutorOptions(
        executor=a.executor,
        jobs=a.jobs,
        partition=a.slurm_partition,
        time_min=defaults.time_min if a.slurm_time is None else a.slurm_time,
        gpus_per_job=a.slurm_gpus_per_job or 0,
        cpus_per_task=a.slurm_cpus_per_task,
        array_parallelism=defaults.array_parallelism
        if a.slurm_array_parallelism is None
        else a.slurm_array_parallelism,
        params=parse_params(a.slurm_param),
        name=f"eosbench-{a.suite}",
    )
    eo.check()
    return eo


def cmd_tasks(a: argparse.Namespace) -> int:
    from .suites import SUITES, TASKS

    if a.suites:
        for name in SUITES.list(a.pattern):
            s = SUITES.get(name)
            print(f"{name:16s} {len(s.tasks):3d} tasks  {s.description}")
        return 0
    names = TASKS.list(a.pattern)
    if a.suite:
        members = set(SUITES.get(a.suite).tasks)
        names = [n for n in names if n in members]
    for n in names:
        print(n)
        if a.verbose:
            t = TASKS.get(n)
            claims = ", ".join(f"{c.name}->{c.expect}" for c in t.claims) or "-"
            print(f"    {t.description}\n    claims: {claims}; seeds: {list(t.seeds)}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from .runner import run
    from .suites import TASKS, is_registered
    from .task import apply_overrides

    task = apply_overrides(TASKS.get(a.task), a.overrides)
    seed = a.seed if a.seed is not None else task.seeds[0]
    opts = _run_options(a)
    print(run(task, seed, opts, registered=is_registered(task)))
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from .artifact import is_artifact, read_artifact
    from .claims import check, check_run
    from .claims.compare import comparisons_for
    from .report import print_verdicts
    from .store import find_runs, load_run

    results, runs, rdirs = [], [], []
    for p in a.paths:  # a results folder's artifact is judged, not written to
        if is_artifact(p):
            for r in read_artifact(p):
                runs.append(r)
                results.append((f"{p}:{r.id}", check(r)))
        else:
            rdirs += find_runs([p])
    runs += [load_run(rdir) for rdir in rdirs]  # every run read before a claims.json is written
    results += [(rdir, check_run(rdir)) for rdir in rdirs]
    if not runs:
        raise UserError("no runs found under " + ", ".join(map(str, a.paths)))
    comparisons = comparisons_for(runs)
    print_verdicts(results, comparisons)
    ok = all(v.as_expected for _, vs in results for v in vs)
    return 0 if ok and all(v.as_expected for v in comparisons) else 1


def cmd_reproduce(a: argparse.Namespace) -> int:
    from .claims import check_run
    from .claims.compare import comparisons_for
    from .report import print_verdicts, write_report
    from .runner import run_many
    from .store import load_run
    from .suites import SUITES, TASKS
    from .task import parse_value

    suite = SUITES.get(a.suite)
    opts = _run_options(a)
    seeds = None
    if a.seeds:
        seeds = [parse_value(s, (int,), "--seeds") for s in a.seeds.split(",")]
    jobs = [(TASKS.get(n), s) for n in suite.tasks for s in (seeds or TASKS.get(n).seeds)]
    if a.jobs < 1:
        raise UserError("--jobs must be at least 1")
    eo = _executor_options(a)
    from .preflight import check_task

    for task, seed in jobs:  # every run's input before the first starts
        check_task(task, seed)
    failures: list = []
    if eo.executor == "pool":
        rdirs = run_many(jobs, opts, a.jobs, registered=True)
    else:
        from .cluster import submit_many

        rdirs, failures = submit_many(jobs, opts, eo, registered=True)
    ok = not failures
    if rdirs:
        results = [(rdir, check_run(rdir)) for rdir in rdirs]
        runs = [load_run(rdir) for rdir in rdirs]
        comparisons = comparisons_for(runs)
        print_verdicts(results, comparisons)
        report_dir = a.report or a.out / "report"
        write_report(runs, report_dir, comparisons=comparisons)
        print(report_dir)
        ok = ok and all(v.as_expected for _, vs in results for v in vs)
        ok = ok and all(v.as_expected for v in comparisons)
    if failures:
        print(
            f"eosbench: error: {len(failures)} of {len(jobs)} runs failed "
            f"(logs under {a.out / '.submitit'}):",
            file=sys.stderr,
        )
        for f in failures:
            print(f"  {f}", file=sys.stderr)
    return 0 if ok else 1


def cmd_report(a: argparse.Namespace) -> int:
    from .report import publish, write_report
    from .store import load_runs

    if a.out is None and (len(a.results) > 1 or a.publish):
        raise UserError("report of several RESULTS paths, or --publish: give --out")
    runs = load_runs(a.results)
    if not runs:
        raise UserError("no runs found under " + ", ".join(map(str, a.results)))
    out = a.out or a.results[0] / "report"
    if a.publish:
        publish(runs, out, roots=a.results)
    else:
        write_report(runs, out)
    print(out)
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    from .data import DATASETS, data_root, download, hub, load_dataset
    from .task import DataSpec, Task, apply_overrides

    DATASETS.get(a.name)  # an unknown name: one line, with suggestions
    sets = [f"data.options.{o}" for o in a.option]
    spec = apply_overrides(Task(name="data", data=DataSpec(name=a.name)), sets).data
    if a.action == "download":
        root = data_root(a.data_root)
        if root is None:
            raise UserError("set EOSBENCH_DATA or pass --data DIR to say where to store data")
        print(download(a.name, root, spec.options))
        return 0
    if a.action == "verify":
        ok, lines = hub.verify(a.name, spec, a.against, data_root(a.data_root), a.n)
        print("\n".join(lines))
        return 0 if ok else 1
    d = load_dataset(spec, a.data_root)
    print(
        f"{d.identity}\ntrain {tuple(d.x_train.shape)} test {tuple(d.x_test.shape)} "
        f"classes {d.n_classes}\nsha256 {d.checksum}"
    )
    return 0


def cmd_submit(a: argparse.Namespace) -> int:
    return {
        "plan": _submit_plan,
        "template": _submit_template,
        "validate": _submit_validate,
        "verify": _submit_verify,
    }[a.submit_command](a)


def _submit_plan(a: argparse.Namespace) -> int:
    import shlex

    from .leaderboard.submission import plan
    from .leaderboard.tracks import BASELINES, TRACKS, hyperparameters_of
    from .task import OptimizerSpec, Task, apply_overrides

    if a.baseline:
        if a.optimizer or a.track or a.overrides:
            raise UserError("--baseline takes no --optimizer, --track or --set")
        b = BASELINES[a.baseline]
        optimizer, hp, out = b.optimizer, b.hyperparameters, a.out / b.id
    else:
        if not a.optimizer or not a.track:
            raise UserError("give --baseline NAME, or --optimizer NAME and --track NAME")
        track = TRACKS.get(a.track)
        bad = [o for o in a.overrides if not o.strip().startswith("optimizer.")]
        if bad:
            raise UserError(f"--set {bad[0]!r}: only optimizer.KEY=VALUE (the entry's choice)")
        task = apply_overrides(
            Task(name="-", optimizer=OptimizerSpec(name=a.optimizer)), a.overrides
        )
        optimizer = a.optimizer
        hp = {track.name: hyperparameters_of(task.optimizer, track)}
        fixed = [o for o in a.overrides if o.split("=")[0].strip()[10:] in track.fixed]
        if fixed:
            raise UserError(f"--set {fixed[0]!r}: the {track.name} track fixes it")
        out = a.out / a.optimizer
    for cmd in plan(optimizer, hp, out, a.device):
        print(shlex.join(cmd))
    return 0


def _submit_template(a: argparse.Namespace) -> int:
    from .leaderboard.submission import template, validate
    from .leaderboard.tracks import BASELINES

    b = BASELINES.get(a.baseline) if a.baseline else None
    entry_id = a.entry_id or (b.id if b else None)
    method = a.method or (b.method if b else None)
    paper = a.paper or (b.paper if b else None)
    authors = a.authors or (["eosbench developers"] if b else None)
    missing = [f for f, v in (("--id", entry_id), ("--method", method), ("--paper", paper),
                              ("--author", authors)) if not v]  # fmt: skip
    if missing:
        raise UserError(f"give {', '.join(missing)} (or --baseline NAME)")
    out = template(a.out, a.runs, method, entry_id, authors, paper, a.package, a.package_version)
    res = validate(out)
    for p in res.problems:
        print(p)
    print(out)
    return 0 if res.ok else 1


def _submit_validate(a: argparse.Namespace) -> int:
    from .leaderboard.submission import accept, validate

    res = validate(a.dir)
    for p in res.problems:
        print(p)
    if not res.ok:
        n = len(res.problems)
        print(f"eosbench: {a.dir}: {n} problem{'s' * (n != 1)}: not valid", file=sys.stderr)
        return 1
    e = res.entry
    for name, t in sorted(e["tracks"].items()):
        scores = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(t["scores"].items()))  # fmt: skip
        print(f"{name}: {scores}")
    print(f"valid: {e['id']} ({e['method']})")
    if a.accept:
        print(accept(res, a.accept))
    return 0


def _submit_verify(a: argparse.Namespace) -> int:
    from .leaderboard.verify import verify

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    problems, comparisons = verify(a.dir, a.sample, a.seed, a.rtol, a.atol, a.device, log=log)
    for c in comparisons:
        mark = "ok" if c.ok else "MISMATCH"
        print(
            f"{mark} {c.path}: {c.keys} series, {c.values} values, max |difference| "
            f"{c.max_abs:.3g} (relative {c.max_rel:.3g}; rtol {a.rtol:g}, atol {a.atol:g})"
        )
    for p in problems:
        print(p)
    if problems:
        print(f"eosbench: {a.dir}: not verified", file=sys.stderr)
        return 1
    print(f"verified: {len(comparisons)} runs re-run and equal within the tolerance")
    return 0


def cmd_leaderboard(a: argparse.Namespace) -> int:
    from .leaderboard.render import write

    for path in write(a.entries, a.out):
        print(path)
    return 0


COMMANDS = {
    "tasks": cmd_tasks,
    "run": cmd_run,
    "check": cmd_check,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
    "data": cmd_data,
    "submit": cmd_submit,
    "leaderboard": cmd_leaderboard,
}


def one_line(message: object) -> str:
    """``message`` on one line (a library's multi-line message joined with ``; ``)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def describe_os_error(e: OSError) -> str:
    """An :class:`OSError` as ``file: what went wrong`` (both files of a rename)."""
    where = ": ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or type(e).__name__
    return f"{where}: {what}" if where else one_line(e) or what


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"eosbench: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the file system's answer: a full disk, no permission, no directory
        print(f"eosbench: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eosbench: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(
            "eosbench: internal error: this is a bug in eosbench, not in your input; "
            "please report it with the traceback below",
            file=sys.stderr,
            flush=True,
        )
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

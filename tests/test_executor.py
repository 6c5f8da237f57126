"""The submitit executors of ``reproduce``: local jobs (real subprocesses) give the pool's
numbers, finished runs are never run again, a preempted job resumes from its checkpoint, a
failed job is reported with its task and seed; Slurm parameters (no cluster needed)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from eosbench import checkpoint, cluster, store
from eosbench.cli import main
from eosbench.cluster import ExecutorOptions, RunJob, make_executor, submit_many
from eosbench.errors import UserError
from eosbench.runner import RunOptions, run, run_many
from eosbench.suites import SUITES, TASKS, Suite
from eosbench.task import MeasurementSpec, OptimizerSpec, ScheduleSpec, apply_overrides

BASE = apply_overrides(
    TASKS.get("digits/fc-tanh/mse/gd/lr=0.1"),
    ["data.n_train=200", "model.width=32", "schedule.steps=30"],
)
GD = replace(
    BASE, name="exec/gd", measurements=(MeasurementSpec("sharpness", every=10),), claims=()
)
SGD = replace(
    GD, name="exec/sgd", optimizer=OptimizerSpec(name="sgd", lr=0.05, momentum=0.9, batch_size=32)
)
# passes the checks made before any run starts, fails in the job (once its data are loaded)
BAD = replace(GD, name="exec/bad", optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=10**6))
THREADS = torch.get_num_threads()  # the same in the jobs: float reductions depend on it


def needs_submitit():
    return pytest.importorskip("submitit")


def opts(out: Path, **kw) -> RunOptions:
    return RunOptions(out=out, device="cpu", progress=False, **kw)


def local(**kw) -> ExecutorOptions:
    return ExecutorOptions(executor="local", threads=THREADS, **kw)


def series(rdir: Path):
    return [
        {k: v for k, v in r.items() if not k.endswith("_seconds")}
        for r in store.read_records(rdir / store.METRICS_FILE)
    ]


def meta(rdir: Path) -> dict:
    m = store.read_json(rdir / store.RUN_FILE)
    return {k: m[k] for k in ("task", "task_hash", "seed", "status", "step", "attempts")}


def test_local_jobs_match_the_pool_and_never_rerun_a_finished_run(tmp_path):
    needs_submitit()
    jobs = [(GD, 0), (SGD, 0)]
    pool = run_many(jobs, opts(tmp_path / "pool"))
    out = tmp_path / "local"
    rdirs, failures = submit_many(jobs, opts(out), local(jobs=2))
    assert failures == []
    assert [r.relative_to(out) for r in rdirs] == [r.relative_to(tmp_path / "pool") for r in pool]
    for p, r in zip(pool, rdirs, strict=True):
        assert series(r) == series(p)  # JSON floats round-trip: equal means bitwise equal
        assert meta(r) == meta(p) and meta(r)["status"] == "completed"
        assert meta(r)["attempts"] == 1
    logs = out / cluster.LOG_DIR
    assert len(list(logs.glob("*/*_log.err"))) == 2 and not (logs / "%j").exists()

    # the same suite again: nothing is submitted, nothing is written
    stamps = {r: (r / store.RUN_FILE).stat().st_mtime_ns for r in rdirs}
    job_dirs = sorted(logs.iterdir())
    again, failures = submit_many(jobs, opts(out), local(jobs=2))
    assert again == rdirs and failures == []
    assert sorted(logs.iterdir()) == job_dirs
    assert {r: (r / store.RUN_FILE).stat().st_mtime_ns for r in rdirs} == stamps

    # a job whose run another process finished meanwhile returns it without running it
    assert RunJob(GD, 0, opts(out), THREADS)() == rdirs[0]
    assert (rdirs[0] / store.RUN_FILE).stat().st_mtime_ns == stamps[rdirs[0]]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_preempted_job_checkpoints_is_requeued_and_resumes(tmp_path):
    needs_submitit()
    task = replace(
        GD,
        name="exec/long",
        schedule=ScheduleSpec(steps=1500, eval_every=100),
        measurements=(MeasurementSpec("sharpness", every=100),),
    )
    o = dict(checkpoint_every=25)
    reference = series(run(task, 0, opts(tmp_path / "ref", **o)))
    out = tmp_path / "jobs"
    executor = make_executor(local(), out / cluster.LOG_DIR / "%j")
    job = executor.submit(RunJob(task, 0, opts(out, **o), THREADS))
    t0 = time.time()
    while not (found := list(out.glob(f"*/seed-0/{checkpoint.FILE}"))):
        assert not job.done(), job.stderr()
        assert time.time() - t0 < 120
        time.sleep(0.02)
    workers = _children(int(job.job_id))  # the controller's task process
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGUSR2)  # what Slurm sends on preemption / near the time limit
    rdir = job.result()
    assert rdir == found[0].parent
    m = store.read_json(rdir / store.RUN_FILE)
    assert m["status"] == "completed" and m["attempts"] == 2 and m["resumed_from_step"] > 0
    assert series(rdir) == reference
    assert not (rdir / checkpoint.FILE).exists()
    assert "Requeued job" in (job.stderr() or "") + (job.stdout() or "")


def test_failed_job_is_reported_and_reproduce_exits_nonzero(tmp_path, monkeypatch, capsys):
    needs_submitit()
    argv = ["reproduce", "--suite", "exec-test", "--seeds", "0", "--out", str(tmp_path)]
    argv += ["--device", "cpu", "--no-progress", "--executor", "local", "--jobs", "2"]
    with (
        TASKS.temporarily(GD.name, GD),
        TASKS.temporarily(BAD.name, BAD),
        SUITES.temporarily("exec-test", Suite("exec-test", (GD.name, BAD.name))),
    ):
        assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "exec/bad seed 0 (job " in err and "optimizer.batch_size=1000000 exceeds" in err
    assert "    |   File " in err and "in check_fit" in err  # its stderr's tail
    assert "1 of 2 runs failed" in err
    assert "exec/gd seed 0: done" in err
    # the runs that finished are checked and reported as usual
    assert Path(out.strip().splitlines()[-1]) == tmp_path / "report"
    (good,) = store.find_runs([tmp_path])
    assert store.read_json(good / store.RUN_FILE)["task"]["name"] == GD.name


def test_missing_submitit_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    argv = ["reproduce", "--suite", "smoke", "--executor", "local", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'eosbench[cluster]'" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob(store.RUN_FILE))  # nothing ran


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
        (["--executor", "local", "--slurm-time", "60"], "--slurm-time needs --executor slurm"),
        (["--executor", "slurm", "--jobs", "4"], "use --slurm-array-parallelism"),
        (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time must be at least 1"),
        (["--executor", "slurm", "--slurm-param", "account"], "not of the form KEY=VALUE"),
        (["--executor", "local", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_executor_option_errors_exit_2(extra, message, tmp_path, capsys):
    assert main(["reproduce", "--suite", "smoke", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_slurm_without_slurm_is_a_user_error(tmp_path, monkeypatch):
    submitit = needs_submitit()
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    with pytest.raises(UserError, match="srun"):
        make_executor(ExecutorOptions(executor="slurm"), tmp_path / "%j")


def test_slurm_executor_parameters(tmp_path, monkeypatch):
    submitit = needs_submitit()
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    eo = ExecutorOptions(
        executor="slurm",
        partition="gpu",
        time_min=120,
        gpus_per_job=1,
        cpus_per_task=8,
        array_parallelism=4,
        params=(("account", "proj"), ("mem", "16G")),
        name="eosbench-smoke",
    )
    assert cluster.executor_parameters(eo) == {
        "name": "eosbench-smoke",
        "timeout_min": 120,
        "slurm_partition": "gpu",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "slurm_array_parallelism": 4,
        "slurm_additional_parameters": {"account": "proj", "mem": "16G"},
    }
    executor = make_executor(eo, tmp_path / cluster.LOG_DIR / "%j")
    assert executor.cluster == "slurm"
    p = executor.parameters
    assert (p["partition"], p["time"], p["gpus_per_node"], p["cpus_per_task"]) == (
        "gpu",
        120,
        1,
        8,
    )
    assert p["array_parallelism"] == 4 and p["job_name"] == "eosbench-smoke"
    # the sbatch script of an array of 10 runs (submitit's own renderer, nothing submitted)
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="run", folder=executor.folder, map_count=10, **p)
    for flag in (
        "--partition=gpu",
        "--time=120",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--array=0-9%4",
        "--account=proj",
        "--mem=16G",
        "--signal=USR2@90",
    ):
        assert f"#SBATCH {flag}\n" in script, (flag, script)
    assert str(tmp_path / cluster.LOG_DIR) in script  # logs under the results root
    # requeued after a timeout as often as a long run needs
    assert executor._executor.max_num_timeout == cluster.MAX_TIMEOUTS
    # a run requeued after preemption resumes, even when the suite was submitted with --force
    job = RunJob(GD, 0, opts(tmp_path, force=True))
    again = job.checkpoint()
    assert again.function == replace(job, opts=replace(job.opts, force=False))
    assert again.args == () and again.kwargs == {}


def test_refused_slurm_submission_is_a_user_error(tmp_path, monkeypatch):
    submitit = needs_submitit()
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    refuse = ["sh", "-c", "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1"]
    monkeypatch.setattr(
        submitit.SlurmExecutor, "_make_submission_command", lambda self, path: refuse
    )
    eo = ExecutorOptions(executor="slurm", partition="nope", array_parallelism=4)
    with pytest.raises(UserError, match="submission refused: sbatch: error: invalid partition"):
        submit_many([(GD, 0), (GD, 1)], opts(tmp_path), eo)
    # the array job's script, as it was handed to sbatch
    (script,) = (tmp_path / cluster.LOG_DIR).glob(".submission_file_*.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-1%2\n" in text and "#SBATCH --partition=nope\n" in text
    assert not list(tmp_path.rglob(store.RUN_FILE))


def test_failure_error_line():
    trace = (
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File x\neosbench.errors.UserError: bad lr\n"
        "----------------------\nYou can check full logs"
    )
    assert cluster._error_line(trace) == "eosbench.errors.UserError: bad lr"
    assert cluster._error_line("Job 7 has not produced any output\n(state: FAILED)") == (
        "Job 7 has not produced any output (state: FAILED)"
    )
    assert json.dumps(str(cluster.Failure("t", 1, "7", "boom", "", "log"))) == (
        '"t seed 1 (job 7): boom"'
    )

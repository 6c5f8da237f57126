"""Run a suite's runs as submitit jobs: on this machine or on a Slurm cluster.

``eosbench reproduce --executor local|slurm`` (the default, ``pool``, is
:func:`eosbench.runner.run_many`).  Each run (task, seed) is one job calling the function the
pool workers call (``runner._run_job``), so the per-run lock, the reuse of finished runs by
content hash and the checkpoints work as they do in the pool:

- a run that already finished with the same content hash is not submitted (unless
  ``--force``), and a job that finds its run finished by another process meanwhile returns
  at once: resubmitting a suite never runs a finished run twice;
- preemption and time limits: Slurm sends submitit's signal (``USR2``, ``--signal=USR2@90``)
  90 s before a job's time limit and, where the cluster sets ``preempt_send_user_signal``,
  on preemption.  The job turns it into the runner's stop request (as SIGTERM does): the run
  writes ``checkpoint.pt`` at its next step boundary and stops with status ``interrupted``;
  then submitit requeues the same callable (:meth:`RunJob.checkpoint`, never ``--force``
  again), which resumes from that checkpoint.  A plain SIGTERM (preemption without the user
  signal) checkpoints and stops the same way; a partition that requeues preempted jobs reruns
  the callable, which resumes.  Anything else (SIGKILL, a lost node): submit the suite again;
  unfinished runs resume from their last periodic checkpoint (``--checkpoint-every``);
- every job's stdout and stderr go to ``<out>/.submitit/<job id>/``.

The driver waits for all jobs and returns the run directories of the jobs that succeeded and
a :class:`Failure` (task, seed, job, the tail of its stderr) for each that did not.

submitit is an optional dependency (``pip install 'eosbench[cluster]'``), imported only here
and only when a job is submitted.  This module imports nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from .runner import RunOptions
    from .task import Task

EXECUTORS = ("pool", "local", "slurm")
LOG_DIR = ".submitit"  # under the results root; one folder per job id
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local executor kills a job after its time limit
MAX_TIMEOUTS = 20  # requeues after reaching the time limit (each one resumes from a checkpoint)
STDERR_TAIL = 20  # lines of a failed job's stderr shown
INSTALL_HINT = "pip install 'eosbench[cluster]'"


@dataclass(frozen=True)
class ExecutorOptions:
    """Where and how the runs of ``reproduce`` execute (see the module docstring)."""

    executor: str = "pool"  # pool | local | slurm
    jobs: int = 1  # pool: worker processes; local: jobs running at once
    partition: str | None = None  # slurm: --partition
    time_min: int = 240  # slurm: --time of each job, minutes (a run that needs more resumes)
    gpus_per_job: int = 0  # slurm: --gpus-per-node (one node, one task per job)
    cpus_per_task: int | None = None  # slurm: --cpus-per-task (default: the cluster's)
    array_parallelism: int = 256  # slurm: jobs of the array running at once (--array=...%N)
    params: tuple[tuple[str, str], ...] = ()  # slurm: more sbatch flags, e.g. (("account", "x"),)
    threads: int | None = None  # torch threads per job (default: CPUs / jobs, or the job's CPUs)
    name: str = "eosbench"  # job name

    def check(self) -> None:
        """Raise :class:`UserError` for an option out of range."""
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.jobs < 1:
            raise UserError("--jobs must be at least 1")
        for flag, value, least in (
            ("--slurm-time", self.time_min, 1),
            ("--slurm-gpus-per-job", self.gpus_per_job, 0),
            ("--slurm-cpus-per-task", self.cpus_per_task, 1),
            ("--slurm-array-parallelism", self.array_parallelism, 1),
        ):
            if value is not None and value < least:
                raise UserError(f"{flag} must be at least {least}")
        for key, _ in self.params:
            if not key or key != key.strip() or key.startswith("-"):
                raise UserError(f"--slurm-param {key!r}: expected KEY=VALUE, KEY an sbatch option")


@dataclass(frozen=True)
class Failure:
    """A job that did not return a run directory."""

    task: str
    seed: int
    job_id: str
    error: str  # one line: the exception, or why the job produced no result
    stderr_tail: str  # the last lines of its stderr log
    log: str  # the stderr log's path

    def __str__(self) -> str:
        return f"{self.task} seed {self.seed} (job {self.job_id}): {self.error}"


def parse_params(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``--slurm-param KEY=VALUE`` items as pairs; :class:`UserError` for another form."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-param {item!r} is not of the form KEY=VALUE")
        out.append((key.strip(), value))
    return tuple(out)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(
            f"--executor local/slurm needs the submitit package: {INSTALL_HINT}"
        ) from None
    return submitit


def _preempt_signal() -> signal.Signals:
    # submitit's preemption/timeout signal: USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, "SIG" + name, signal.SIGUSR2)


@dataclass(frozen=True)
class RunJob:
    """One run as a submitit job: ``runner.run(task, seed, opts)`` in the job's process.

    Checkpointable for submitit: on its preemption/timeout signal the run checkpoints at its
    next step boundary, then submitit requeues :meth:`checkpoint`'s submission (this run,
    resuming), so no work beyond the last step is lost.
    """

    task: Task
    seed: int
    opts: RunOptions
    threads: int | None = None  # torch threads; None: the CPUs this process may use
    registered: bool = False  # the task is the registered one (runner.run_path)

    def __call__(self) -> Path:
        import torch

        from . import checkpoint
        from .runner import _run_job

        torch.set_num_threads(self.threads or _cpus())
        sig = _preempt_signal()
        received: list[int] = []
        submitit_handler = signal.getsignal(sig)

        def on_preempt(signum, frame) -> None:
            received.append(signum)
            # a run training: it checkpoints and stops at its next step boundary; otherwise
            # there is nothing to save and submitit may requeue the job now
            if not checkpoint.request_stop() and callable(submitit_handler):
                submitit_handler(signum, frame)

        installed = False
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            signal.signal(sig, on_preempt)
            installed = True
        try:
            return _run_job((self.task, self.seed, self.opts, self.registered))
        except KeyboardInterrupt:
            if received and callable(submitit_handler):
                submitit_handler(received[0], None)  # requeues self.checkpoint(), then exits
            raise
        finally:
            if installed:
                signal.signal(sig, submitit_handler)

    def checkpoint(self) -> Any:
        """submitit's requeue hook: the same run, resuming from its checkpoint (a ``--force``
        run started over on its first attempt; later attempts must not start over again)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(replace(self, opts=replace(self.opts, force=False)))

    __submitit_checkpoint__ = checkpoint


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def executor_parameters(eo: ExecutorOptions) -> dict[str, Any]:
    """The keyword arguments of submitit's ``AutoExecutor.update_parameters``."""
    params: dict[str, Any] = {"name": eo.name}
    if eo.executor == "local":
        params["timeout_min"] = LOCAL_TIMEOUT_MIN
        return params
    params["timeout_min"] = eo.time_min
    params["slurm_array_parallelism"] = eo.array_parallelism
    if eo.partition:
        params["slurm_partition"] = eo.partition
    if eo.gpus_per_job:
        params["gpus_per_node"] = eo.gpus_per_job
    if eo.cpus_per_task:
        params["cpus_per_task"] = eo.cpus_per_task
    if eo.params:
        params["slurm_additional_parameters"] = dict(eo.params)
    return params


def make_executor(eo: ExecutorOptions, folder: Path):
    """A submitit ``AutoExecutor`` for ``eo`` (``local`` or ``slurm``) logging to ``folder``."""
    eo.check()
    if eo.executor == "pool":
        raise ValueError("the pool executor is eosbench.runner.run_many, not submitit")
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(
            folder=folder, cluster=eo.executor, slurm_max_num_timeout=MAX_TIMEOUTS
        )
    except RuntimeError as e:  # no srun on PATH
        raise UserError(f"--executor {eo.executor}: {e}") from None
    try:
        executor.update_parameters(**executor_parameters(eo))
    except (ValueError, NameError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--executor {eo.executor}: bad job parameters: {first}") from None
    return executor


def submit_many(
    jobs: list[tuple[Task, int]], opts: RunOptions, eo: ExecutorOptions, registered: bool = False
) -> tuple[list[Path], list[Failure]]:
    """Run (task, seed) pairs as submitit jobs and wait for them all; the run directories of
    the runs that finished (in the order of ``jobs``) and the failures.  Progress goes to
    standard error."""
    from . import store
    from .runner import run_path
    from .task import computation_hash

    executor = make_executor(eo, Path(opts.out) / LOG_DIR / "%j")
    n = len(jobs)
    done: dict[int, Path] = {}
    todo: list[tuple[int, RunJob]] = []
    threads = eo.threads
    if threads is None and eo.executor == "local":  # the pool's rule: no oversubscription
        threads = max(1, (os.cpu_count() or 1) // eo.jobs)
    root = Path(opts.out).absolute()  # jobs may start in another directory
    job_opts = replace(opts, out=root)
    for i, (task, seed) in enumerate(jobs):
        rdir = run_path(task, seed, opts, registered)
        if not opts.force and store.finished_run(rdir, computation_hash(task), seed):
            done[i] = rdir
        else:
            todo.append((i, RunJob(task, seed, job_opts, threads, registered)))
    _say(
        f"{eo.executor}: {len(todo)} of {n} runs to run as jobs ({len(done)} finished before); "
        f"logs under {Path(opts.out) / LOG_DIR}"
    )
    failures: list[Failure] = []
    if eo.executor == "slurm":  # one array job; Slurm runs array_parallelism at once
        limit, poll = len(todo), 15.0
        queued: list[tuple[int, RunJob, Any]] = []
        if todo:
            submitted = _submit(executor.submit_array, [rj for _, rj in todo])
            queued = [(i, rj, job) for (i, rj), job in zip(todo, submitted, strict=True)]
            _say(f"submitted array job {submitted[0].job_id.split('_')[0]} ({len(todo)} runs)")
        running, waiting = queued, []
    else:  # local: at most eo.jobs job processes at once
        limit, poll = eo.jobs, 0.5
        running, waiting = [], list(todo)
    finished = len(done)
    try:
        while running or waiting:
            while waiting and len(running) < limit:
                i, rj = waiting.pop(0)
                running.append((i, rj, _submit(executor.submit, rj)))
            still = []
            for i, rj, job in running:
                if not job.done():
                    still.append((i, rj, job))
                    continue
                finished += 1
                outcome = _collect(rj, job)
                if isinstance(outcome, Failure):
                    failures.append(outcome)
                    _say(f"[{finished}/{n}] {outcome}")
                    for line in outcome.stderr_tail.splitlines():
                        _say(f"    | {line}")
                else:  # under opts.out as given, as the pool returns it
                    done[i] = Path(opts.out) / outcome.relative_to(root)
                    _say(f"[{finished}/{n}] {rj.task.name} seed {rj.seed}: done (job {job.job_id})")
            if len(still) == len(running) and still:
                time.sleep(poll)
            running = still
    except KeyboardInterrupt:
        ids = " ".join(job.job_id for _, _, job in running)
        if eo.executor == "local":
            for _, _, job in running:
                job.cancel(check=False)
        else:
            _say(f"jobs still on the cluster: {ids} (scancel them, or run the command again)")
        raise
    finally:  # submitit's local executor leaves an empty folder named '%j' behind
        with contextlib.suppress(OSError):
            (Path(opts.out) / LOG_DIR / "%j").rmdir()
    return [done[i] for i in sorted(done)], failures


def _submit(submit, arg):
    """``submit(arg)``; a submission the scheduler refuses (sbatch's error) is a UserError."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:
        return submit(arg)
    except (FailedJobError, FailedSubmissionError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise UserError(f"submission refused: {lines[-1] if lines else type(e).__name__}") from None


def _collect(rj: RunJob, job) -> Path | Failure:
    try:
        exc = job.exception()
        if exc is None:
            return Path(job.result())
    except Exception as e:  # the outcome could not be read
        exc = e
    try:
        stderr = job.stderr() or ""
    except OSError:
        stderr = ""
    tail = "\n".join(stderr.rstrip().splitlines()[-STDERR_TAIL:]) or "(no stderr)"
    return Failure(
        task=rj.task.name,
        seed=rj.seed,
        job_id=str(job.job_id),
        error=_error_line(str(exc)),
        stderr_tail=tail,
        log=str(job.paths.stderr),
    )


def _error_line(message: str) -> str:
    """The exception of a failed job's traceback, or the first line of submitit's message."""
    lines = [ln for ln in message.splitlines() if ln.strip()]
    seps = [k for k, ln in enumerate(lines) if set(ln.strip()) == {"-"}]
    if len(seps) >= 2 and seps[1] > seps[0] + 1:  # FailedJobError: the trace between rules
        return lines[seps[1] - 1].strip()
    return " ".join(lines[:2]).strip() or "failed"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

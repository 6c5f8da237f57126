"""Exact resume: a run killed with SIGKILL at a random step and resumed from its last
checkpoint gives a bitwise identical time series (CPU), for GD, SGD with momentum, Adam and
SAM; SIGTERM checkpoints and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from eosbench import checkpoint, store
from eosbench.runner import RunOptions, run
from eosbench.suites import TASKS
from eosbench.task import (
    MeasurementSpec,
    OptimizerSpec,
    ScheduleSpec,
    apply_overrides,
)

BASE = apply_overrides(TASKS.get("digits/fc-tanh/mse/gd/lr=0.1"),
                       ["data.n_train=200", "model.width=32"])
OPTIMIZERS = {
    "gd": OptimizerSpec(name="sgd", lr=0.1),
    "sgd-momentum": OptimizerSpec(name="sgd", lr=0.05, momentum=0.9, batch_size=32),
    "sgd-iid": OptimizerSpec(name="sgd", lr=0.05, batch_size=32, sampling="iid"),
    "adam": OptimizerSpec(name="adam", lr=1e-3),
    "sam": OptimizerSpec(name="sam", lr=0.05, rho=0.05, batch_size=32),
    # TRACER keeps its own Fisher estimate; run with a cosine schedule (a function of the step)
    "tracer-cosine": OptimizerSpec(name="tracer", lr=0.05, momentum=0.9, rho=1e-6, batch_size=32),
}
STEPS, EVERY = 3000, 25
pytestmark = pytest.mark.slow  # real training runs in subprocesses (about a minute)


def task_for(name: str):
    return replace(BASE, name=f"resume/{name}", optimizer=OPTIMIZERS[name],
                   schedule=ScheduleSpec(steps=STEPS, eval_every=100,
                                         lr_schedule="cosine" if "cosine" in name else "constant"),
                   measurements=(MeasurementSpec("sharpness", every=50),), claims=())


def series(rdir: Path):
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")}
            for r in store.read_records(rdir / store.METRICS_FILE)]


def child(name: str, out: Path) -> subprocess.Popen:
    code = (f"from pathlib import Path; from tests.test_resume import task_for, EVERY; "
            f"from eosbench.runner import RunOptions, run; "
            f"run(task_for({name!r}), 0, RunOptions(out=Path({str(out)!r}), device='cpu', "
            f"progress=False, checkpoint_every=EVERY))")
    root = Path(__file__).resolve().parent.parent
    # the same thread count as this process: float reductions depend on it
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = f"import torch; torch.set_num_threads({torch.get_num_threads()}); " + code
    return subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env)


def wait_for_checkpoint(proc, out: Path, timeout=120.0) -> Path:
    """The run directory, once its first checkpoint exists."""
    t0 = time.time()
    while not (found := list(out.glob(f"*/seed-0/{checkpoint.FILE}"))):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() - t0 < timeout
        time.sleep(0.02)
    return found[0].parent


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sigkill_then_resume_is_bitwise_identical(name, tmp_path):
    import random

    task = task_for(name)
    opts = dict(device="cpu", progress=False, checkpoint_every=EVERY)
    ref_dir = run(task, 0, RunOptions(out=tmp_path / "ref", **opts))
    reference = series(ref_dir)
    ref_meta = store.read_json(ref_dir / store.RUN_FILE)
    out = tmp_path / "killed"
    proc = child(name, out)
    rdir = wait_for_checkpoint(proc, out)
    time.sleep(random.uniform(0.0, 0.5))  # a random step after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "running"  # killed: no chance to record anything
    resumed = run(task, 0, RunOptions(out=out, **opts))
    assert resumed == rdir
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "completed" and meta.get("resumed_from_step", 0) > 0
    assert meta["attempts"] == 2
    assert series(rdir) == reference
    for k in ("gradient_evaluations", "gradient_examples"):  # counted over both executions
        assert meta[k] == ref_meta[k] > 0, k
    assert not (rdir / checkpoint.FILE).exists()  # removed once the run completed


def test_sigterm_checkpoints_and_stops(tmp_path):
    out = tmp_path / "t"
    proc = child("gd", out)
    rdir = wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "interrupted"
    assert (rdir / checkpoint.FILE).exists()
    done = run(task_for("gd"), 0, RunOptions(out=out, device="cpu", progress=False,
                                              checkpoint_every=EVERY))
    assert store.read_json(done / store.RUN_FILE)["status"] == "completed"


def test_foreign_or_corrupt_checkpoint_is_ignored(tmp_path):
    task = task_for("gd")
    small = apply_overrides(task, ["schedule.steps=60"])
    rdir = run(small, 0, RunOptions(out=tmp_path, device="cpu", progress=False))
    ref = series(rdir)
    (rdir / checkpoint.FILE).write_bytes(b"not a checkpoint")
    again = run(small, 0, RunOptions(out=tmp_path, device="cpu", progress=False, force=False))
    assert series(again) == ref


def test_two_concurrent_reproduce_run_each_run_once(tmp_path):
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "eosbench", "reproduce", "--suite", "linear-net", "--out",
           str(tmp_path), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = store.find_runs([tmp_path])
    assert len(runs) == 15
    for r in runs:
        meta = store.read_json(r / store.RUN_FILE)
        assert meta["status"] in ("completed", "diverged")
        assert meta["attempts"] == 1, r  # executed once, by one of the two processes
        assert store.read_records(r / store.METRICS_FILE)  # readable, not corrupted
    # both wrote the same report
    a = (tmp_path / "report" / "claims.tex").read_bytes()
    assert b"suite linear-net" in a

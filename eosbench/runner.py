"""The runner: train one task with one seed, recording a time series.

Deterministic: Python, NumPy and torch are seeded from the run's seed,
deterministic algorithms are requested (``warn_only`` where an op has no
deterministic kernel) and TF32 is off unless asked for.  On CPU two runs with
the same task and seed give bitwise identical time series.

Data are placed on the device once.  Full-batch gradients are accumulated over
chunks of at most ``physical_batch_size`` examples (each chunk's mean loss
weighted by its share of the data), so memory stays bounded and the gradient
is that of the mean loss over all examples.  Mini-batch methods draw batches
from a per-epoch random permutation (a seeded generator; the last partial
batch of an epoch is dropped so every step sees ``batch_size`` examples), or
with ``optimizer.sampling = "iid"`` as independent uniform draws of
``batch_size`` distinct examples at every step (sampling with replacement across
steps: an example can come back before the others have been seen).

At step ``k`` the runner (1) takes the due measurements on the parameters
:math:`\\theta_k`, (2) evaluates on the test set when due, (3) performs the
update; the record of step ``k`` holds the training loss at :math:`\\theta_k`.
A non-finite loss or parameter ends the run with status ``diverged`` at that
step; no curve is padded.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint, preflight, provenance, store
from .errors import UserError
from .losses import LOSSES
from .measure import Context, build_measurements
from .objective import Objective, preserved_buffers  # noqa: F401 (re-exported)
from .task import LR_SCHEDULES, Task, computation_hash, content_hash, slug, to_dict

FLUSH_SECONDS = 30.0  # the time series on disk is at most this old while a run is going
PARAM_CHECK_EVERY = 100  # steps between explicit checks that all parameters are finite


@dataclass(frozen=True)
class RunOptions:
    out: Path = Path("runs")  # results root
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    physical_batch_size: int | None = 4096  # examples per forward/backward chunk (None = all)
    data_root: str | None = None  # CIFAR root; default: the EOSBENCH_DATA variable
    force: bool = False  # recompute even if a finished run with the same hash exists
    progress: bool | None = None  # progress bar; None = only when stderr is a terminal
    allow_tf32: bool = False  # TF32 matmuls on Ampere+ GPUs (faster, less exact)
    checkpoint_every: int = 1000  # steps between checkpoints (0 = none); see eosbench.checkpoint
    resume: bool = True  # continue an unfinished run from its checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use auto, cpu or cuda)")
    return device


def lr_factor(schedule: str, step: int, total: int) -> float:
    r"""The step size of step ``step`` (0-based) of ``total`` as a multiple of ``optimizer.lr``.

    ``constant``: 1.  ``cosine``: :math:`\tfrac12(1 + \cos(\pi t/T))` (Loshchilov & Hutter
    2017, without restarts), a pure function of the step so a resumed run continues exactly.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    raise UserError(f"schedule.lr_schedule={schedule!r} is not one of {', '.join(LR_SCHEDULES)}")


def seed_everything(seed: int, device: torch.device, allow_tf32: bool = False) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def _finite_params(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class _Batches:
    """Mini-batch indices from a seeded generator: slices of per-epoch permutations
    (``sampling="epoch"``), or the first ``batch_size`` entries of a fresh permutation at
    every step (``"iid"``)."""

    def __init__(self, n: int, batch_size: int, seed: int, sampling: str = "epoch"):
        if batch_size > n:
            raise UserError(f"optimizer.batch_size={batch_size} exceeds the {n} training examples")
        self.n, self.b, self.iid = n, batch_size, sampling == "iid"
        self.per_epoch = n // batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm: Tensor | None = None

    def indices(self, step: int) -> Tensor:
        if self.iid:
            self.perm = torch.randperm(self.n, generator=self.gen)
            return self.perm[: self.b]
        i = step % self.per_epoch
        if i == 0 or self.perm is None:
            self.perm = torch.randperm(self.n, generator=self.gen)
        return self.perm[i * self.b : (i + 1) * self.b]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"]


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)


class _Trainer:
    """The training loop of one run.  Its state -- everything a resumed run needs to continue
    bitwise, :meth:`state_dict` -- is what a checkpoint holds (:mod:`eosbench.checkpoint`)."""

    def __init__(self, task, seed, opts, model, loss_fn, optimizer, tensors):
        self.task, self.seed, self.opts = task, seed, opts
        lr_factor(task.schedule.lr_schedule, 0, 1)  # an unknown schedule fails before training
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.x_tr, self.y_tr, self.x_te, self.y_te = tensors
        self.device = self.x_tr.device
        self.objective = Objective(model, loss_fn, opts.physical_batch_size)
        self.measurements = build_measurements(task)
        self.records: list[dict[str, Any]] = []
        self.step = 0
        self.measure_seconds = 0.0
        self.outcome: dict[str, Any] = {"status": "completed"}
        n = self.x_tr.shape[0]
        b = task.optimizer.batch_size
        self.batches = _Batches(n, b, seed + 1_000_003, task.optimizer.sampling) if b else None
        self.ctx = Context(
            task=task,
            step=0,
            model=model,
            loss_fn=loss_fn,
            x_train=self.x_tr,
            y_train=self.y_tr,
            optimizer=optimizer,
            physical_batch_size=opts.physical_batch_size,
            generator=torch.Generator(device=self.device).manual_seed(seed + 2_000_003),
        )
        self.augment_gen = None  # of the random crops and flips, when the data are augmented
        if task.data.augment:
            self.augment_gen = torch.Generator(device=self.device).manual_seed(seed + 3_000_017)

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The step, the model and optimizer states, every random generator the loop uses
        (data order, stochastic measurements, augmentation, and the global Python, NumPy,
        torch and CUDA states), the measurements' cache and the records and costs so far."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "records": self.records,
            "measure_seconds": self.measure_seconds,
            "gradients": (self.objective.gradient_evaluations, self.objective.gradient_examples),
            "cache": self.ctx.cache,
            "measure_generator": self.ctx.generator.get_state(),
            "augment_generator": None if self.augment_gen is None else self.augment_gen.get_state(),
            "batches": None if self.batches is None else self.batches.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``, a :meth:`state_dict` of a trainer of the same task and
        seed (its tensors on this trainer's device)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.records = state["records"]
        self.measure_seconds = state["measure_seconds"]
        self.objective.gradient_evaluations, self.objective.gradient_examples = state["gradients"]
        self.ctx.cache.update(state["cache"])
        self.ctx.generator.set_state(state["measure_generator"])
        if self.augment_gen is not None:
            self.augment_gen.set_state(state["augment_generator"])
        if self.batches is not None:
            self.batches.load_state_dict(state["batches"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def costs(self) -> dict[str, Any]:
        """Measurement time, and the optimizer's cost: gradients of the training loss (not
        the measurements' products, which each record counts as ``<name>_hvps``)."""
        return {
            "measure_seconds": self.measure_seconds,
            "gradient_evaluations": self.objective.gradient_evaluations,
            "gradient_examples": self.objective.gradient_examples,
        }

    # -- the loop -------------------------------------------------------------------------

    def train(self, flush, save=None, term=None) -> None:
        """Train from ``self.step`` to the end, a stop condition or divergence (``outcome``);
        ``flush()`` every ``FLUSH_SECONDS``, ``save()`` (a checkpoint) every
        ``checkpoint_every`` steps and, once ``term.set``, before stopping (``interrupted``)."""
        total = self.task.total_steps(self.x_tr.shape[0])
        last_flush = time.time()
        every, start = self.opts.checkpoint_every, self.step
        with _progress(total, self.task.name, self.opts.progress) as bar:
            bar.update(self.step)
            while self.step < total:
                if (
                    save is not None
                    and self.step > start
                    and ((every and self.step % every == 0) or (term is not None and term.set))
                ):
                    save()  # between two steps: the state is consistent here
                    if term is not None and term.set:
                        self.outcome = {"status": "interrupted"}
                        return
                try:
                    rec, loss = self._step(total)
                except Exception:
                    if not self._diverged():  # a measurement failing on non-finite values
                        raise
                    return
                self.records.append(rec)
                # a non-finite update shows in the next step's loss; parameters are also
                # checked every PARAM_CHECK_EVERY steps and at the end
                if not math.isfinite(loss) or (
                    self.step % PARAM_CHECK_EVERY == 0 and not _finite_params(self.model)
                ):
                    self.outcome = {"status": "diverged", "diverged_at": self.step}
                    return
                reason = self._stop_reason(rec)
                self.step += 1
                if reason:
                    self.outcome["stop_reason"] = reason
                    break
                if self.step % 10 == 0:
                    self._show(bar, loss)
                if time.time() - last_flush > FLUSH_SECONDS:
                    flush()
                    last_flush = time.time()
            if not _finite_params(self.model):
                self.outcome = {"status": "diverged", "diverged_at": self.step}
                return
            try:
                self.records.append(self._observe(final=True))
            except Exception:
                if not self._diverged():
                    raise

    def _diverged(self) -> bool:
        """After a failure in step ``self.step``: whether its parameters or its training
        loss are non-finite; if so the run ends ``diverged`` there, with the loss recorded."""
        loss = self.objective.evaluate(self.x_tr, self.y_tr, train_mode=True)["loss"]
        if math.isfinite(loss) and _finite_params(self.model):
            return False
        self.records.append({"step": self.step, "train_loss": loss})
        self.outcome = {"status": "diverged", "diverged_at": self.step}
        return True

    def _step(self, total: int) -> tuple[dict[str, Any], float]:
        """Step ``self.step`` of ``total``: the measurements and evaluation due at
        :math:`\\theta_k`, then the update; the step's record and its training loss."""
        rec = self._observe(final=False)
        x, y = self._batch()
        closure, stats = self.objective.closure(x, y)
        if self.task.schedule.lr_schedule != "constant":
            lr = self.task.optimizer.lr * lr_factor(
                self.task.schedule.lr_schedule, self.step, total
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            rec["lr"] = lr
        self.optimizer.step(closure)
        report = getattr(self.optimizer, "step_record", None)
        if report is not None:  # what the optimizer says of its step: a tuned step, clipping
            rec.update(report())
        if stats["acc"] is None:
            loss, acc = float(stats["loss"]), None
        else:  # one device sync for both
            loss, acc = torch.stack([stats["loss"], stats["acc"]]).tolist()
        key = "train" if self.batches is None and self.augment_gen is None else "batch"
        rec[f"{key}_loss"] = loss
        if acc is not None:
            rec[f"{key}_acc"] = acc
        return rec, loss

    def _batch(self) -> tuple[Tensor, Tensor]:
        """The examples of this step: all of them (GD) or its mini-batch, augmented if asked."""
        if self.batches is None:
            x, y = self.x_tr, self.y_tr
        else:
            idx = self.batches.indices(self.step).to(self.device)
            x, y = self.x_tr[idx], self.y_tr[idx]
        if self.augment_gen is not None:
            from .data.augment import random_crop_flip

            x = random_crop_flip(x, self.augment_gen)
        return x, y

    def _observe(self, final: bool) -> dict[str, Any]:
        """A record of the step with the measurements and evaluation due (all at the end)."""
        rec: dict[str, Any] = {"step": self.step}
        self._measure(rec, final)
        self._evaluate(rec, final)
        return rec

    def _measure(self, rec: dict[str, Any], final: bool) -> None:
        self.ctx.step = self.step
        for every, name, m in self.measurements:
            if final or (every and self.step % every == 0):
                t0 = time.perf_counter()
                values = m(self.ctx)
                self.measure_seconds += time.perf_counter() - t0
                clash = set(values) & set(rec)
                if clash:
                    raise RuntimeError(f"measurement {name!r} overwrites {sorted(clash)}")
                rec.update(values)

    def _evaluate(self, rec: dict[str, Any], final: bool) -> None:
        every = self.task.schedule.eval_every
        if not (final or (every and self.step % every == 0)):
            return
        if self.batches is not None or final:
            tr = self.objective.evaluate(self.x_tr, self.y_tr, train_mode=True)
            rec["train_loss"], rec["train_acc"] = tr["loss"], tr["acc"]
        if self.x_te.shape[0]:
            te = self.objective.evaluate(self.x_te, self.y_te, train_mode=False)
            rec["test_loss"], rec["test_acc"] = te["loss"], te["acc"]

    def _stop_reason(self, rec: dict[str, Any]) -> str | None:
        s = self.task.schedule
        loss, acc = rec.get("train_loss"), rec.get("train_acc")
        if s.stop_loss is not None and loss is not None and loss < s.stop_loss:
            return f"train_loss < {s.stop_loss}"
        if s.stop_accuracy is not None and acc is not None and acc >= s.stop_accuracy:
            return f"train_acc >= {s.stop_accuracy}"
        return None

    def _show(self, bar, loss: float) -> None:
        bar.update(10)
        post = {"loss": f"{loss:.4g}"}
        last = next((r for r in reversed(self.records[-200:]) if "sharpness" in r), None)
        if last is not None:
            post["sharpness"] = f"{last['sharpness']:.4g}"
        bar.set_postfix(post, refresh=False)


# ---------------------------------------------------------------------------
# one run: its directory, its record, its execution


def run_path(task: Task, seed: int, opts: RunOptions, registered: bool = False) -> Path:
    """The run directory of ``task`` with ``seed``: ``<out>/<slug(name)>/seed-<k>`` if the
    caller says it is ``registered`` (computes what the registered task of its name computes,
    :func:`eosbench.suites.is_registered`; its claims may differ), else the name gets ``@``
    and the start of its computation hash."""
    variant = "" if registered else "@" + computation_hash(task)[:10]
    return store.run_dir(opts.out, slug(task.name) + variant, seed)


def _build_trainer(task: Task, seed: int, opts: RunOptions, data, loss_fn, device) -> _Trainer:
    """The model (initialized from the seeded global generator), its optimizer and the data
    on ``device``, in a trainer at step 0."""
    from .models import build_model
    from .optim import build_optimizer

    model = build_model(task.model, data.input_shape, data.n_classes).to(device)
    model.train()
    optimizer = build_optimizer(task.optimizer, model.parameters())
    tensors = (t.to(device) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    return _Trainer(task, seed, opts, model, loss_fn, optimizer, tuple(tensors))


def _run_record(task: Task, seed: int, opts: RunOptions, previous: dict[str, Any],
                trainer: _Trainer, data, device) -> dict[str, Any]:  # fmt: skip
    """The run's ``run.json`` as training starts (``previous``: the one there before)."""
    chash = computation_hash(task)
    again = store.recorded_computation(previous) == chash and not opts.force
    return {
        "task": to_dict(task),
        "task_hash": content_hash(task),
        "computation_hash": chash,
        "seed": seed,
        "status": "running",
        "step": 0,
        "diverged_at": None,
        "stop_reason": None,
        "error": None,
        # executions started for this task and seed (a resume counts as one more); records
        # from before the count was kept count as one
        "attempts": 1 + (previous.get("attempts", 1) if again else 0),
        "provenance": {
            **provenance.collect(device),
            "physical_batch_size": opts.physical_batch_size,
            "dataset": data.identity,
            "dataset_checksum": data.checksum,
            "n_train": int(trainer.x_tr.shape[0]),
            "n_test": int(trainer.x_te.shape[0]),
            "n_params": sum(p.numel() for p in trainer.model.parameters()),
        },
    }


def _flush(rdir: Path, meta: dict[str, Any], trainer: _Trainer, started: float) -> None:
    meta["step"] = trainer.step
    meta["wall_seconds"] = time.time() - started
    meta.update(trainer.costs())
    store.atomic_write_text(rdir / store.METRICS_FILE, store.dumps_records(trainer.records))
    store.atomic_write_json(rdir / store.RUN_FILE, meta)


def _execute(trainer: _Trainer, rdir: Path, meta: dict[str, Any], device) -> None:
    """Train, checkpointing into ``rdir`` and keeping ``meta`` and the series there up to
    date; a failure is recorded as the run's status before it is raised."""
    started = time.time()
    store.atomic_write_json(rdir / store.RUN_FILE, meta)
    try:
        with checkpoint.TermFlag() as term:
            trainer.train(
                lambda: _flush(rdir, meta, trainer, started),
                lambda: (checkpoint.save(trainer, rdir), _flush(rdir, meta, trainer, started)),
                term,
            )
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        _flush(rdir, meta, trainer, started)
        raise
    except Exception as e:
        meta["status"] = "failed"
        meta["error"] = f"{type(e).__name__}: {e}"
        _flush(rdir, meta, trainer, started)
        if isinstance(e, torch.OutOfMemoryError):
            raise UserError(
                f"{rdir}: out of memory on {device} at step {trainer.step}; try a smaller "
                f"--physical-batch-size (now {trainer.opts.physical_batch_size})"
            ) from None
        raise
    meta.update(trainer.outcome)
    _flush(rdir, meta, trainer, started)
    if meta["status"] == "interrupted":
        raise KeyboardInterrupt(f"{rdir}: interrupted by SIGTERM at step {trainer.step}")
    (rdir / checkpoint.FILE).unlink(missing_ok=True)


def run(
    task: Task, seed: int, opts: RunOptions = RunOptions(), *, registered: bool = False
) -> Path:
    """Run ``task`` with ``seed``; return its run directory (reused if already finished, the
    run continued from its checkpoint if interrupted).  ``registered``: see :func:`run_path`."""
    from .data import load_dataset

    chash = computation_hash(task)
    rdir = run_path(task, seed, opts, registered)
    if not opts.force and store.finished_run(rdir, chash, seed):
        return rdir
    device = resolve_device(opts.device)
    preflight.check_task(task, seed)  # the whole input, before anything is written
    loss_fn = LOSSES.get(task.loss)
    data = load_dataset(task.data, opts.data_root, seed)
    preflight.check_fit(task, data, device)
    with store.locked(rdir, wait=True):
        # another worker may have finished this run while we waited for the lock
        previous = store.read_run_json(rdir)
        if not opts.force and store.finished_run(rdir, chash, seed):
            return rdir
        checkpoint.clean_up(rdir)
        seed_everything(seed, device, opts.allow_tf32)
        trainer = _build_trainer(task, seed, opts, data, loss_fn, device)
        resumed = opts.resume and not opts.force and checkpoint.restore(trainer, rdir)
        if resumed == "rejected":  # set aside; the trainer may be partly loaded: start over
            seed_everything(seed, device, opts.allow_tf32)
            trainer = _build_trainer(task, seed, opts, data, loss_fn, device)
        meta = _run_record(task, seed, opts, previous, trainer, data, device)
        if resumed == "restored":
            meta["resumed_from_step"] = trainer.step
        _execute(trainer, rdir, meta, device)
    return rdir


# ---------------------------------------------------------------------------
# many runs


def _run_job(job: tuple[Task, int, RunOptions, bool]) -> Path:
    task, seed, opts, registered = job
    return run(task, seed, opts, registered=registered)


def run_many(
    jobs: list[tuple[Task, int]], opts: RunOptions, workers: int = 1, registered: bool = False
) -> list[Path]:
    """Run (task, seed) pairs, in this process or in ``workers`` spawned processes; the run
    directories in the order of ``jobs``.  ``registered``: the tasks are the registered ones
    (:func:`run_path`).  Progress goes to standard error."""
    work = [(t, s, opts, registered) for t, s in jobs]
    out: list[Path] = []
    if workers <= 1:
        for i, job in enumerate(work, 1):
            print(f"[{i}/{len(work)}] {job[0].name} seed {job[1]}", file=sys.stderr, flush=True)
            out.append(_run_job(job))
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)  # no oversubscription: it is ruinous
    with ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        for i, (job, rdir) in enumerate(zip(work, pool.map(_run_job, work), strict=True), 1):
            print(
                f"[{i}/{len(work)}] {job[0].name} seed {job[1]}: done", file=sys.stderr, flush=True
            )
            out.append(rdir)
    return out

"""Training-step throughput: eosbench's runner against a plain hand-written torch loop.

What it shows: the overhead of eosbench's training loop (chunked closure, per-step records,
divergence checks) over the simplest possible full-batch GD loop, on the same model, data
and device, in one process.  Target: within 10%.

Hardware: any; on the 2-core CPU of the development machine it takes about a minute.
Command:

    python benchmarks/bench_train_step.py                                # digits, fc-tanh, CPU
    python benchmarks/bench_train_step.py --data cifar10 --n 3000 --device cuda --steps 2000

Prints seconds per step for each, and the ratio eosbench / plain.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from eosbench.data import load_dataset
from eosbench.losses import mse
from eosbench.models import build_model
from eosbench.runner import RunOptions, _Trainer, resolve_device, seed_everything
from eosbench.suites import TASKS
from eosbench.task import DataSpec, ModelSpec, ScheduleSpec


def plain_loop(model, x, y, lr: float, steps: int, device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss = mse(model(x), y)
        loss.backward()
        opt.step()
        float(loss.detach())  # a loop that logs its loss syncs once per step, as eosbench does
    _sync(device)
    return (time.perf_counter() - t0) / steps


def eosbench_loop(task, model, tensors, steps: int, device, out: Path) -> float:
    from eosbench.optim import build_optimizer

    opts = RunOptions(out=out, device=str(device), progress=False, physical_batch_size=None)
    trainer = _Trainer(task, 0, opts, model, mse, build_optimizer(task.optimizer, model.parameters()),
                       tensors)
    _sync(device)
    t0 = time.perf_counter()
    trainer.train(lambda: None)
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    if trainer.step != steps or trainer.outcome["status"] != "completed":
        raise SystemExit(f"eosbench run stopped early: {trainer.outcome} at step {trainer.step}")
    return seconds


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--model", default="fc-tanh")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.01, help="GD step (stable: 2/lr above the "
                   "initial sharpness, ~78 for fc-tanh on CIFAR-10)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    device = resolve_device(a.device)
    base = TASKS.get("digits/fc-tanh/mse/gd/lr=0.1")
    task = replace(base, data=DataSpec(name=a.data, n_train=a.n), model=ModelSpec(name=a.model),
                   optimizer=replace(base.optimizer, lr=a.lr),
                   schedule=ScheduleSpec(steps=a.steps, eval_every=0), measurements=(), claims=())
    data = load_dataset(task.data)
    tensors = tuple(t.to(device) for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    res = {"plain": [], "eosbench": []}
    with TemporaryDirectory() as tmp:
        for r in range(a.repeats + 1):  # round 0 is an untimed warm-up
            for name in ("plain", "eosbench"):
                seed_everything(0, device)
                model = build_model(task.model, data.input_shape, data.n_classes).to(device)
                if name == "plain":
                    sec = plain_loop(model, tensors[0], tensors[1], task.optimizer.lr, a.steps,
                                     device)
                else:
                    sec = eosbench_loop(task, model, tensors, a.steps, device, Path(tmp))
                if r:
                    res[name].append(sec)
    plain, ours = statistics.median(res["plain"]), statistics.median(res["eosbench"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{a.model} on {a.data} n={a.n}, full-batch GD, {a.steps} steps x {a.repeats}, {name}, "
          f"torch {torch.__version__}")
    print(f"plain torch loop : {plain * 1e3:8.3f} ms/step")
    print(f"eosbench runner  : {ours * 1e3:8.3f} ms/step")
    print(f"ratio eosbench/plain: {ours / plain:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()

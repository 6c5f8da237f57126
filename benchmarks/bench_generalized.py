"""Generalized sharpness: Frank-Wolfe (the paper's step 2/(k+2)) against the power step
(gamma = 1), at equal HVP budgets, in one process on the same operator.

fc-tanh on digits (1,000 examples, MSE), at initialization and after ``--steps`` steps of the
norm's steepest descent at its suite step size (at the edge).  For each norm and each setting
(step, iterations, restarts) it prints the estimate (a lower bound: larger is better), its
ratio to the best value any setting found, HVPs and seconds.  The ``auto`` choice of
:mod:`eosbench.curvature.generalized` was made from this output.

    OMP_NUM_THREADS=1 python benchmarks/bench_generalized.py [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import torch

from eosbench.curvature import LossOperator, generalized_sharpness
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.optim import build_optimizer
from eosbench.task import DataSpec, ModelSpec, OptimizerSpec

TRAIN = {"linf": OptimizerSpec(name="linf", lr=8e-6),
         "spectral": OptimizerSpec(name="spectral", lr=0.025),
         "block": OptimizerSpec(name="block_cd", lr=0.4)}  # fmt: skip
SETTINGS = [("fw", 20, 2), ("power", 20, 2), ("fw", 50, 5), ("power", 50, 5)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(DataSpec(name="digits", n_train=1000))
    loss = LOSSES.get("mse")
    print(f"{'norm':9} {'state':9} {'step':6} {'iters':>5} {'restarts':>8} {'estimate':>12} "
          f"{'/ best':>7} {'hvps':>5} {'seconds':>8}")  # fmt: skip
    for norm, spec in TRAIN.items():
        torch.manual_seed(0)
        model = build_model(ModelSpec(name="fc-tanh"), tuple(ds.x_train.shape[1:]), ds.n_classes)
        for state, steps in (("init", 0), (f"step {a.steps}", a.steps)):
            opt = build_optimizer(spec, model.parameters())
            for _ in range(steps):
                opt.zero_grad()
                loss(model(ds.x_train), ds.y_train).backward()
                opt.step()
            op = LossOperator(model, loss, ds.x_train, ds.y_train)
            rows = []
            for step, iters, restarts in SETTINGS:
                t0 = time.perf_counter()
                r = generalized_sharpness(op, op.shapes, norm, iters=iters, restarts=restarts,
                                          step=step, generator=torch.Generator().manual_seed(0))  # fmt: skip
                rows.append((step, iters, restarts, r.value, r.n_products, time.perf_counter() - t0))
            best = max(r[3] for r in rows)
            for step, iters, restarts, value, n, sec in rows:
                print(f"{norm:9} {state:9} {step:6} {iters:5d} {restarts:8d} {value:12.6g} "
                      f"{value / best:7.4f} {n:5d} {sec:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

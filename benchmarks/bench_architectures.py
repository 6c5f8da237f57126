"""Benchmark: the curvature engine at the size of each architecture of the ``architectures`` suite.

What it shows, per model of ``eosbench/suites/architectures.py`` (fc-tanh, the 8-channel CNN
with ReLU, ELU and BatchNorm, the width-32 ViT) on the suite's data (1,000 CIFAR-10 images of 4
classes, MSE, float32, full batch, at initialization, seed 0), in one process: the parameter
count, the wall time of one full-batch gradient and of one Hessian-vector product (HVP), and
their ratio (the HVP's cost in gradient units).  With ``--results FOLDER`` (a published
results folder of the suite, ``runs.parquet``) it also prints, per task, the HVPs and seconds
that each warm-started sharpness measurement took after the first crossing ``t*`` of the
threshold (median and maximum over every seed), and the fraction of the runs' wall time spent
measuring (every measurement, median over seeds).

Hardware and time: a shared 2-core x86 CPU (torch 2.13 CPU), one thread; about a minute.
Results in ``benchmarks/README.md``.

Command::

    EOSBENCH_DATA=../shared/data python benchmarks/bench_architectures.py [--results results/architectures]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from bench_flow import timed  # the same median-of-repeats timer

from eosbench.curvature import LossOperator
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.suites import SUITES, TASKS
from eosbench.suites.flow import CIFAR4


def unit_costs(repeats: int) -> None:
    data = load_dataset(CIFAR4)
    loss = LOSSES.get("mse")
    print(f"{'model':16s} {'params':>8s} {'gradient ms':>12s} {'HVP ms':>8s} {'HVP/gradient':>13s}")
    models = {}  # the suite's models by the name its tasks give them, in suite order
    for t in SUITES.get("architectures").tasks:
        models.setdefault(t.split("/")[1], TASKS.get(t).model)
    for name, spec in models.items():
        torch.manual_seed(0)
        model = build_model(spec, data.input_shape, data.n_classes)
        op = LossOperator(model, loss, data.x_train, data.y_train)
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
        t_grad = timed(op.value_and_gradient, repeats)
        op.matvec(v)  # records the gradient's graph once, as every first product does
        t_hvp = timed(lambda: op.matvec(v), repeats)  # noqa: B023
        print(f"{name:16s} {op.dim:8,d} {t_grad * 1e3:12.1f} {t_hvp * 1e3:8.1f} "
              f"{t_hvp / t_grad:13.2f}")  # fmt: skip


def at_the_edge(folder: Path) -> None:
    """HVPs and seconds per sharpness measurement after t*, from a results artifact."""
    from eosbench.artifact import read_artifact
    from eosbench.claims.eos import claim_window

    print(f"\n{'task':55s} {'HVPs median/max':>16s} {'s median':>9s} {'share of wall':>14s}")
    by_task: dict[str, list] = {}
    for run in read_artifact(folder):
        by_task.setdefault(run.task.name, []).append(run)
    for name, runs in sorted(by_task.items()):
        hvps, secs, share = [], [], []
        for r in runs:
            key = next((q for q in ("sharpness", "preconditioned_sharpness") if q in r.keys), None)
            if key is None:
                continue
            w = claim_window(r, r.task)
            t_star = w[2].t_star if w is not None and w[2] is not None else 0
            s, h = r.values(f"{key}_hvps")
            _, sec = r.values(f"{key}_seconds")
            keep = s >= t_star
            hvps += list(h[keep])
            secs += list(sec[keep])
            wall, measuring = r.cost.get("wall_seconds"), r.cost.get("measure_seconds")
            if wall and measuring is not None:
                share.append(measuring / wall)
        if hvps:
            frac = f"{statistics.median(share):.0%}" if share else "-"
            print(f"{name:55s} {statistics.median(hvps):8.0f}/{max(hvps):<7.0f} "
                  f"{statistics.median(secs):9.2f} {frac:>14s}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    unit_costs(args.repeats)
    if args.results is not None:
        at_the_edge(args.results)


if __name__ == "__main__":
    main()

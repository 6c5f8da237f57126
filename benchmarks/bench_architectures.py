"""Benchmark: the curvature engine at the size of each architecture of the ``architectures`` suite.

What it shows, per model of ``eosbench/suites/architectures.py`` (fc-tanh, the 8-channel CNN
with ReLU, ELU and BatchNorm, the width-32 ViT) and the registered ResNet-20 on the suite's data
(1,000 CIFAR-10 images of 4 classes, MSE, float32, full batch, at initialization, seed 0), in
one process: the parameter count, the wall time of one full-batch gradient and of one
Hessian-vector product (HVP) by each way PyTorch offers to compute one, in gradient units:

* ``recorded``: eosbench's, the gradient's reverse pass recorded once by ``torch.func.vjp``
  and every product one pullback through it (reverse-over-reverse), timed after the
  recording; ``+record``: the first product of a fresh operator, recording included (what
  each measurement pays once); ``block of 3``: three columns in one vmapped pullback;
* ``fwd-over-rev``: ``torch.func.jvp`` of ``torch.func.grad``, the primal recomputed per
  product (eosbench's route when the data are cut into chunks);
* ``double-backward``: ``torch.autograd.grad(create_graph=True)`` and a second
  ``autograd.grad`` rebuilt per product (Cohen et al.'s and PyHessian's route);
* ``linearize``: ``torch.func.linearize`` of the gradient (a recorded forward-mode graph),
  when it can trace the model and loss.  With ``--results FOLDER`` (a published
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
from eosbench.curvature.operators import training_mode
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.suites import SUITES, TASKS
from eosbench.suites.flow import CIFAR4


def _routes(op: LossOperator, v: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds of one HVP by each route (module docstring) at the operator's parameters."""
    from torch.func import jvp, linearize

    w = op._theta
    x, y = op._x, op._y

    def loss(t: torch.Tensor) -> torch.Tensor:
        return op._loss(t, x, y)

    g = op._grad_fn
    out: dict[str, float] = {}

    def fresh() -> None:
        LossOperator(op.model, op.loss_fn, x, y).matvec(v)

    out["+record"] = timed(fresh, repeats)
    op.matvec(v)  # records the gradient's graph once, as every first product does
    out["recorded"] = timed(lambda: op.matvec(v), repeats)
    V = torch.stack([v, v.roll(1), v.roll(2)], 1)
    out["block of 3"] = timed(lambda: op.matmat(V), repeats)
    with training_mode(op.model):
        out["fwd-over-rev"] = timed(lambda: jvp(lambda t: g(t, x, y), (w,), (v,))[1], repeats)

        def double_backward() -> torch.Tensor:
            t = w.clone().requires_grad_(True)
            (gr,) = torch.autograd.grad(loss(t), t, create_graph=True)
            return torch.autograd.grad(gr, t, v)[0]

        out["double-backward"] = timed(double_backward, repeats)
        try:
            fn = linearize(lambda t: g(t, x, y), w)[1]
            out["linearize"] = timed(lambda: fn(v), repeats)
        except RuntimeError as e:  # e.g. a data-dependent one_hot in the loss
            print(f"  ({type(e).__name__} in linearize: {str(e).splitlines()[0][:90]})")
    return out


def unit_costs(repeats: int) -> None:
    data = load_dataset(CIFAR4)
    loss = LOSSES.get("mse")
    cols = ("recorded", "+record", "block of 3", "fwd-over-rev", "double-backward", "linearize")
    print("HVP cost in gradient units (gradient: torch.func.grad_and_value, one full batch)\n")
    print(f"| model | params | gradient ms | {' | '.join(cols)} |")
    print(f"|---|---|---|{'---|' * len(cols)}")
    models = {}  # the suite's models by the name its tasks give them, in suite order
    for t in SUITES.get("architectures").tasks:
        models.setdefault(t.split("/")[1], TASKS.get(t).model)
    models["resnet20"] = TASKS.get("cifar10-3k/resnet20/ce/sgd/noaug").model
    for name, spec in models.items():
        torch.manual_seed(0)
        model = build_model(spec, data.input_shape, data.n_classes)
        op = LossOperator(model, loss, data.x_train, data.y_train)
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
        t_grad = timed(op.value_and_gradient, repeats)
        r = _routes(op, v, repeats)
        cells = " | ".join(f"{r[c] / t_grad:.2f}" if c in r else "-" for c in cols)
        print(f"| {name} | {op.dim:,d} | {t_grad * 1e3:.1f} | {cells} |", flush=True)


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

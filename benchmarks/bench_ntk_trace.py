"""The exact per-example NTK trace (measurement ``ntk_trace``): its cost against one full-batch
gradient evaluation, by chunk size, in one process on the same model and data.

fc-tanh on digits (1,000 examples, 10 outputs) at initialization.  For each chunk budget
(``memory_mb``) it prints the trace (the same at every budget, to rounding), the median wall time
over ``--repeats`` calls, and that time in full-batch gradient evaluations; and the Hutch++
estimate of the Gauss-Newton trace with 30 GGN products, which equals the NTK trace under this
MSE, with its standard error and time (the stochastic alternative).

    OMP_NUM_THREADS=1 python benchmarks/bench_ntk_trace.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eosbench.curvature import LossOperator, hutchinson_trace, per_example_ntk_trace
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.task import DataSpec, ModelSpec


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(DataSpec(name="digits", n_train=1000))
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="fc-tanh"), ds.input_shape, ds.n_classes)
    loss = LOSSES.get("mse")
    op = LossOperator(model, loss, ds.x_train, ds.y_train)
    grad_s, _ = _median_seconds(op.gradient, max(a.repeats, 5))
    print(f"full-batch gradient: {grad_s * 1e3:.1f} ms")
    print(f"{'memory_mb':>9} {'ntk_trace':>12} {'seconds':>8} {'gradients':>10}")
    for mb in (1, 8, 32, 256):
        s, value = _median_seconds(lambda mb=mb: per_example_ntk_trace(model, ds.x_train,
                                                                       memory_mb=mb), a.repeats)  # fmt: skip
        print(f"{mb:>9} {value:>12.4f} {s:>8.2f} {s / grad_s:>10.0f}")
    ggn = LossOperator(model, loss, ds.x_train, ds.y_train, kind="ggn")
    gen = torch.Generator().manual_seed(0)
    s, r = _median_seconds(lambda: hutchinson_trace(ggn, 30, generator=gen), a.repeats)
    print(f"Hutch++ on the GGN (30 products): {r.estimate:.4f} +- {r.stderr:.4f}, {s:.2f} s, "
          f"{s / grad_s:.0f} gradients")


if __name__ == "__main__":
    main()

"""Benchmark: the cost of integrating GD's central flow beside a run, per simulated GD step.

What it shows: on digits / fc-tanh / MSE (the ``central-flow`` suite's task), GD at ``--lr``
is run to the first step at which the sharpness reaches 2/lr, then
:func:`eosbench.flow.advance` integrates the central flow and gradient flow for ``--steps``
steps from there (GD advancing beside them, as in a run).  Printed per simulated step, for the
flows in float32 (the default) and float64, in one process: wall seconds, the counts of
gradients, HVPs and third-order pair products (:meth:`LossOperator.curvature_gradients`), the
critical eigenvalues, and the cost in *gradient equivalents* (seconds / one gradient's
seconds) and *HVP equivalents*.  The unit costs (one full-batch gradient, one HVP, one
third-order pair) are timed first, and the third-order product is compared in the same
process with the two competing orders of differentiation, forward-over-forward-over-reverse
(``jvp`` of the HVP) and reverse-over-forward-over-forward (the gradient of the mixed second
directional derivative, the operator's route until it was found wrong through PyTorch's fused
normalization kernels: :mod:`eosbench.models.norms`), and the ratios printed.

Hardware and time: a shared 2-core x86 CPU (torch 2.13 CPU), one thread; about 3 minutes.
Results in ``benchmarks/README.md``.

Command::

    python benchmarks/bench_flow.py --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.func import grad, jvp

from eosbench import flow
from eosbench.curvature import LossOperator, top_eigenpairs
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.task import DataSpec, ModelSpec


def timed(fn, repeats: int = 5) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench(dtype, model, loss_fn, x, y, vec, step, args, data) -> None:
    """Unit costs and the per-step cost of the flows in ``dtype``."""
    base = LossOperator(model, loss_fn, x, y, dtype=dtype)
    theta = base.params()
    u = torch.nn.functional.normalize(vec[:, 0].to(dtype), dim=0)
    t_grad = timed(lambda: base.at(theta).value_and_gradient())
    rec = base.at(theta)
    rec.matvec(u)  # records the gradient's graph once, as every first product does
    t_hvp = timed(lambda: rec.matvec(u))
    t_third = timed(lambda: base.at(theta).curvature_gradients(u[:, None]), 3)

    def ffr():
        return jvp(lambda t: jvp(lambda s: base._grad_fn(s, base._x, base._y), (t,), (u,))[1],
                   (theta,), (u,))[1]

    def rff():
        def mixed(t):
            return jvp(lambda r: jvp(lambda s: base._loss(s, base._x, base._y), (r,), (u,))[1],
                       (t,), (u,))[1]

        return grad(mixed)(theta)

    t_ffr, t_rff = timed(ffr, 3), timed(rff, 3)
    name = str(dtype).replace("torch.", "")
    print(f"\n[{name}] unit costs: gradient {t_grad * 1e3:.1f} ms, HVP {t_hvp * 1e3:.1f} ms "
          f"({t_hvp / t_grad:.2f} gradients), third-order pair (reverse-over-forward-over-"
          f"reverse) {t_third * 1e3:.1f} ms ({t_third / t_grad:.2f} gradients, "
          f"{t_third / t_hvp:.2f} HVPs); forward-over-forward-over-reverse {t_ffr * 1e3:.1f} ms "
          f"({t_ffr / t_third:.2f}x), reverse-over-forward-over-forward {t_rff * 1e3:.1f} ms "
          f"({t_rff / t_third:.2f}x)")
    o = flow.FlowOptions(lr=args.lr)
    state = flow.start(theta, step)
    gen = torch.Generator().manual_seed(0)
    gd = [p.detach().clone() for p in model.parameters()]
    m2 = build_model(ModelSpec(name="fc-tanh"), data.input_shape, data.n_classes)
    with torch.no_grad():
        for p, q in zip(m2.parameters(), gd, strict=True):
            p.copy_(q)
    opt2 = torch.optim.SGD(m2.parameters(), lr=args.lr)
    rows = []
    for t in range(args.steps):
        w = torch.cat([p.detach().reshape(-1) for p in m2.parameters()])
        t0 = time.perf_counter()
        r = flow.advance(base, state, o, step + t, w, gen)
        rows.append((time.perf_counter() - t0, r))
        opt2.zero_grad()
        loss_fn(m2(x), y).backward()
        opt2.step()
    secs = [s for s, _ in rows]
    mean = statistics.fmean(secs)
    hvps = statistics.fmean(r["cf_hvps"] for _, r in rows)
    third = statistics.fmean(r["cf_third"] for _, r in rows)
    grads = statistics.fmean(r["cf_gradients"] for _, r in rows)
    crit = statistics.fmean(r["cf_critical"] for _, r in rows)
    print(f"[{name}] per simulated step over {args.steps} steps (mean critical "
          f"eigenvalues {crit:.2f}): {mean:.3f} s (median {statistics.median(secs):.3f}); "
          f"{grads:.1f} gradients, {hvps:.1f} HVPs, {third:.1f} third-order pairs; "
          f"= {mean / t_grad:.0f} gradient equivalents = {mean / t_hvp:.0f} HVP equivalents "
          f"(one GD step: 1 gradient)")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = load_dataset(DataSpec(name="digits", n_train=1000))
    model = build_model(ModelSpec(name="fc-tanh"), data.input_shape, data.n_classes)
    loss_fn = LOSSES.get("mse")
    x, y = data.x_train, data.y_train
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    edge, vec, step = 2 / args.lr, None, 0
    while True:  # GD to the edge
        op = LossOperator(model, loss_fn, x, y)
        if step % 10 == 0:
            res = top_eigenpairs(op, k=1, tol=1e-3, init=vec)
            vec = res.eigenvectors
            if float(res.eigenvalues[0]) >= edge:
                break
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        step += 1
    print(f"digits/fc-tanh/mse, GD lr={args.lr}: sharpness {float(res.eigenvalues[0]):.3f} "
          f">= 2/lr at step {step}; {op.dim} parameters, {len(x)} examples")
    for dtype in (torch.float32, torch.float64):
        bench(dtype, model, loss_fn, x, y, vec, step, args, data)


if __name__ == "__main__":
    main()

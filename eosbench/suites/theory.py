"""The ``theory`` suite: solvable models whose predictions are exact or nearly so (CPU,
minutes).

Support learning (Beneventano, Pinto & Poggio, arXiv:2406.11110v1), in the setup of the
authors' code (github andreakiro/sgd-finds-support, the linear-teacher notebook): the
``support`` teacher (15 Gaussian inputs, the first 5 relevant, each input twice with labels
y +- 0.001 N(0,1); 10,000 rows), the bias-free ``deep-linear`` network 15-15-15-15-1 with
Kaiming-normal weights, squared loss, gradients clipped to norm 1 as the code does by default.
eosbench's ``mse`` carries a factor 1/2 that torch's ``MSELoss`` does not, so the code's step
eta and clipping threshold 1.0 are eosbench's ``lr = 2 eta`` and ``clip_norm = 0.5`` (the same
update).  ``lr = 0.1`` here is the code's 0.05, the largest of its steps at which full-batch GD
converges (its 0.1 leaves GD oscillating).  Mini-batch SGD shrinks the first-layer weights of
the 10 irrelevant inputs, more at larger eta/b; GD, which sees noise-free targets, converges
with them frozen (the negative control); GD with weight decay (the code's "GD+wd", 0.1 there,
0.05 here) shrinks them explicitly.  20,000 steps each (the code runs SGD for 200,000).
"""

from __future__ import annotations

from dataclasses import replace

from ..task import (
    ClaimSpec,
    DataSpec,
    MeasurementSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    Task,
    options,
)
from . import Comparison, register, suite

SUPPORT_REF = "Beneventano, Pinto, Poggio 2024 (arXiv:2406.11110v1); setup of the authors' code"
SUPPORT_DATA = DataSpec(name="support", standardize=False)
DEEP_LINEAR = ModelSpec(name="deep-linear")
SUPPORT_STEPS = 20_000
LR, CLIP = 0.1, 0.5

# The band, set from the seed-0 pilot (20,000 steps, lr 0.1) before seeds 1-2 ran: final /
# initial irrelevant norm b=1 0.740, b=4 0.791, b=16 0.883, b=64 0.914, GD 0.927, GD with
# weight decay 0.0002 after 5,000 steps (see
# results/theory/README.md); 0.85 sits between the shrinking runs (b <= 4) and the frozen
# ones (b = 64, GD).  b = 16 is judged by the orderings only.
SHRINKS = ClaimSpec("support_shrinks", options=options(max_ratio=0.85))
FROZEN = ClaimSpec("support_shrinks", expect="FAIL", options=options(max_ratio=0.85))


def support_task(opt: OptimizerSpec, claims, steps: int = SUPPORT_STEPS, description: str = "") -> Task:
    kind = "sgd" if opt.batch_size else "gd"
    params = [f"lr={opt.lr:g}"]
    if opt.batch_size:
        params.append(f"bs={opt.batch_size}")
    if opt.weight_decay:
        params.append(f"wd={opt.weight_decay:g}")
    if opt.clip_norm is not None:
        params.append(f"clip={opt.clip_norm:g}")
    return register(
        Task(
            name=f"support/deep-linear/mse/{kind}/{','.join(params)}",
            data=SUPPORT_DATA,
            model=DEEP_LINEAR,
            loss="mse",
            optimizer=opt,
            schedule=ScheduleSpec(steps=steps, eval_every=1000),
            measurements=(MeasurementSpec("support_norm", every=100),),
            claims=tuple(claims),
            description=description,
            reference=SUPPORT_REF,
        )
    )


def _sgd(b: int | None, **kw) -> OptimizerSpec:
    return OptimizerSpec(name="sgd", lr=LR, batch_size=b, clip_norm=CLIP, **kw)


SGD_TASKS = {
    b: support_task(_sgd(b), claims, description=f"mini-batch SGD, batch {b}: {words}")
    for b, claims, words in (
        (1, (SHRINKS,), "the irrelevant first-layer weights shrink"),
        (4, (SHRINKS,), "the irrelevant first-layer weights shrink"),
        (16, (), "between the two regimes: judged by the eta/b orderings only"),
        (64, (FROZEN,), "eta/b too small to shrink them in 20,000 steps (negative control)"),
    )
}
GD = support_task(_sgd(None), (FROZEN,), description="full-batch GD: converges with the "
                  "irrelevant weights frozen (negative control)")  # fmt: skip
GD_WD = support_task(_sgd(None, weight_decay=0.05), (SHRINKS,), steps=5000,
                     description="full-batch GD with weight decay: the explicit regularizer "
                     "shrinks them (the code's GD+wd)")  # fmt: skip


def _more_shrunk(small: Task, large: Task, note: str, expect: str = "PASS") -> Comparison:
    return Comparison("ordering", better=small.name, worse=large.name, metric="irrelevant_ratio",
                      expect=expect, citation=SUPPORT_REF,
                      note=f"{note} (read: the first task's final irrelevant-weight ratio is higher)")  # fmt: skip


SUPPORT_TASKS = [SGD_TASKS[b] for b in (1, 4, 16, 64)] + [GD, GD_WD]
SUPPORT_COMPARISONS = (
    _more_shrunk(SGD_TASKS[4], SGD_TASKS[1], "eta/b 0.025 -> 0.1 shrinks the support more"),
    _more_shrunk(SGD_TASKS[16], SGD_TASKS[4], "eta/b 0.00625 -> 0.025 shrinks it more"),
    _more_shrunk(SGD_TASKS[64], SGD_TASKS[16], "eta/b 0.0016 -> 0.00625 shrinks it more"),
    _more_shrunk(GD, SGD_TASKS[4], "SGD at batch 4 shrinks it more than GD"),
    _more_shrunk(SGD_TASKS[1], SGD_TASKS[64], "negative control: batch 64 below batch 1",
                 expect="FAIL"),
)  # fmt: skip



# -- streaming least squares: SGD, clipped SGD and signSGD against their risk ODEs ----------
STREAM_REF = ("Marshall, Xiao, Agarwala, Paquette (arXiv:2406.11733v2); Xiao, Marshall, "
              "Agarwala, Paquette (arXiv:2411.12135v3); ODEs derived in claims.streaming")  # fmt: skip
STREAM_LINEAR = ModelSpec(name="linear")


def stream_task(law: str, opt: str, eta: float, claims, c: float | None = None,
                description: str = "") -> Task:  # fmt: skip
    from ..data.synthetic import STREAM_D, STREAM_N

    clip = None if c is None else c * STREAM_D**0.5
    params = f"eta={eta:g}" + ("" if c is None else f",c={c:g}")
    return register(
        Task(
            name=f"stream-{law}/linear/mse/{'clipped-sgd' if c else opt}/{params}",
            data=DataSpec(name=f"stream-{law}", standardize=False),
            model=STREAM_LINEAR,
            loss="mse",
            optimizer=OptimizerSpec(name=opt, lr=eta / STREAM_D, batch_size=1, clip_norm=clip),
            schedule=ScheduleSpec(steps=STREAM_N, eval_every=0),
            measurements=(MeasurementSpec("excess_risk", every=STREAM_D // 20),),
            claims=tuple(claims),
            description=description,
            reference=STREAM_REF,
        )
    )


# Bands, set from pilots before the suite ran.  First pilots (one pool shared by every seed)
# tuned eta and c on the ODEs (final R at t = 8 over eta in 0.05-0.8, c in 0.25-6): Gaussian
# SGD eta 0.2 (R 0.0805), clipped at any finite c no better (c = 2: eta 0.2, R 0.0842), signSGD
# eta 0.25 (0.169); t3 SGD eta 0.15 (0.163), clipped c = 1.5, eta 0.25 (0.115), signSGD eta 0.25
# (0.196).  The band was recalibrated once each seed drew its own stream (data.synthetic), on
# pilot seeds 10-14 (not the suite's 0-2): the largest |R/R_ode - 1| over t >= 0.5 of a run
# against its own ODE was 0.037-0.17 (Gaussian SGD 0.075-0.118, clipped 0.074-0.122, signSGD
# 0.044-0.107; t3 clipped 0.037-0.17, signSGD 0.037-0.095, SGD 0.047-0.109 and 0.251 for seed
# 14: with t3 noise E eps^4 is infinite, so a single SGD trajectory need not concentrate on its
# ODE); the mean final R over the five seeds was within 2.5% of the ODE's for every task.  The
# controls (a run against plain SGD's ODE): signSGD under Gaussian noise 0.89-1.13, clipped SGD
# under t3 noise 0.42-0.52.  tol = 0.2 separates them; a t3-SGD seed above it is recorded as
# the unexpected FAIL it is.
FOLLOWS = ClaimSpec("risk_follows_ode", options=options(tol=0.2))
NOT_SGD_ODE = ClaimSpec("risk_follows_ode", expect="FAIL", options=options(rule="sgd", tol=0.2))

STREAM = {
    "g-sgd": stream_task("gaussian", "sgd", 0.2, (FOLLOWS,), description="SGD, Gaussian noise, "
                         "eta tuned on the ODE: follows the SGD risk ODE"),
    "g-clip": stream_task("gaussian", "sgd", 0.2, (FOLLOWS,), c=2.0, description="clipped SGD "
                          "(c = 2), Gaussian noise: follows the clipped ODE, and is no better "
                          "than SGD"),
    "g-sign": stream_task("gaussian", "signsgd", 0.25, (FOLLOWS, NOT_SGD_ODE),
                          description="signSGD, Gaussian noise: follows the signSGD ODE; "
                          "negative control: not plain SGD's ODE"),
    "t-sgd": stream_task("t3", "sgd", 0.15, (FOLLOWS,), description="SGD, Student-t(3) noise, "
                         "eta tuned on the ODE"),
    "t-clip": stream_task("t3", "sgd", 0.25, (FOLLOWS, NOT_SGD_ODE), c=1.5,
                          description="clipped SGD (c = 1.5, tuned on the ODE), Student-t(3) "
                          "noise: follows the clipped ODE (not plain SGD's) and beats SGD"),
    "t-sign": stream_task("t3", "signsgd", 0.25, (FOLLOWS,), description="signSGD, "
                          "Student-t(3) noise: follows the signSGD ODE"),
}  # fmt: skip


def _lower_risk(high: Task, low: Task, note: str, expect: str = "PASS") -> Comparison:
    return Comparison("ordering", better=high.name, worse=low.name, metric="risk", expect=expect,
                      citation=STREAM_REF,
                      note=f"{note} (read: the first task's final excess risk is higher)")  # fmt: skip


STREAM_TASKS = list(STREAM.values())
STREAM_COMPARISONS = (
    _lower_risk(STREAM["t-sgd"], STREAM["t-clip"],
                "Student-t(3) noise: tuned clipping reaches a lower risk than tuned SGD"),
    _lower_risk(STREAM["g-sgd"], STREAM["g-clip"],
                "Gaussian noise: clipping cannot improve SGD (negative control of the t3 gain)",
                expect="FAIL"),
)  # fmt: skip

# -- second-order regression (Agarwala, Pedregosa & Pennington, arXiv:2210.04860) -----------
# The abstract (all that could be read offline): models quadratic in their parameters show
# progressive sharpening "towards a value that differs slightly from the edge of stability"
# (computed there for 2-D objectives, not recovered here), generically in higher dimensions,
# and the constant-NTK (linear) regime does not.  Here the random rank-P/2 model of
# ``models.theory`` (P = 512, init_scale 0.5) on the first 40 digits (400 residuals), full
# batch, lr 5.  Pilots (10,000 steps, seeds 0-2): lr*sharpness/2 from 0.64, 0.74, 0.76 at step
# 0 up to the edge at steps ~4,000, ~9,000, ~6,000, then median 1.008, ~1.0, 0.998 after it;
# the linearized model stays at 0.481 (never reaches the edge).  Band [0.95, 1.05], rise 0.2
# (q(t*) >= 1.2 q(0)); 15,000 steps so that the slowest seed has points after t*.
SOR_REF = "Agarwala, Pedregosa, Pennington 2023 (arXiv:2210.04860v1, abstract)"
SOR_EOS = ClaimSpec("eos", options=options(band=(0.95, 1.05), rise=0.2, citation=SOR_REF))


def sor_task(model: str, claims, description: str) -> Task:
    return register(
        Task(
            name=f"digits-40/{model}/mse/gd/lr=5",
            data=DataSpec(name="digits", n_train=40),
            model=ModelSpec(name=model, init_scale=0.5),
            loss="mse",
            optimizer=OptimizerSpec(name="sgd", lr=5.0),
            schedule=ScheduleSpec(steps=15_000, eval_every=0),
            measurements=(MeasurementSpec("sharpness", every=50),),
            claims=tuple(claims),
            description=description,
            reference=SOR_REF,
        )
    )


SOR_TASKS = [
    sor_task("quadratic", (SOR_EOS,), "second-order regression model: progressive sharpening "
             "to the edge of stability"),
    sor_task("quadratic-linearized", (replace(SOR_EOS, expect="FAIL"),),
             "the same model without its quadratic term (constant NTK): no sharpening, never "
             "at the edge (negative control)"),
]  # fmt: skip

# -- deep equilibrium networks (Agarwala & Schoenholz, arXiv:2207.09432, abstract) ----------
# Orthogonal or symmetric W "allows for greater stability in training" over "a broader range
# of initial weight scales" than Gaussian.  Here models.deq (direct iteration to relative
# change 1e-4, at most 500 iterations, implicit gradient), digits (1,000, standardized),
# cross-entropy, GD lr 0.1, 500 steps.  deq_trains asks for a converged forward and backward
# solve at the last record as well as the fit; the first suite run had 50 iterations and no
# convergence check, and its trained runs stopped at relative changes of 2e-4 to 3e-3: the
# cap was raised (not the tolerance) when the check was added.
# Pilot (seed 0, before the suite ran; final training loss, or divergence): w_scale 0.5:
# Gaussian 0.010, orthogonal 0.009, symmetric 0.008; w_scale 1.0: Gaussian diverged at step
# ~150, orthogonal 0.009, symmetric 1.03 (the solve never converged, residual 0.63); 1.5:
# Gaussian and symmetric diverged, orthogonal 1.41.  So w_scale 1.0 is where the families
# part; the expectations are the paper's statement (all three train at 0.5; at 1.0 the
# orthogonal and symmetric ones train and the Gaussian one does not, the negative control).
DEQ_REF = "Agarwala & Schoenholz 2022 (arXiv:2207.09432v1, abstract); setup eosbench's"
TRAINS = ClaimSpec("deq_trains", options=options(max_loss=0.1))


def deq_task(family: str, w_scale: float, expect: str) -> Task:
    return register(
        Task(
            name=f"digits/deq-{family}/ce/gd/lr=0.1,w_scale={w_scale:g}",
            data=DataSpec(name="digits", n_train=1000),
            model=ModelSpec(name=f"deq-{family}", options=options(w_scale=w_scale)),
            loss="ce",
            optimizer=OptimizerSpec(name="sgd", lr=0.1),
            schedule=ScheduleSpec(steps=500, eval_every=0),
            measurements=(MeasurementSpec("deq_solver", every=50),),
            claims=(replace(TRAINS, expect=expect),),
            description=f"DEQ, {family} W at entry scale {w_scale:g}/sqrt(n): "
            + ("trains" if expect == "PASS" else "does not train stably (negative control)"),
            reference=DEQ_REF,
        )
    )


DEQ_TASKS = [deq_task(f, w, "FAIL" if (f, w) == ("gaussian", 1.0) else "PASS")
             for w in (0.5, 1.0) for f in ("gaussian", "orthogonal", "symmetric")]  # fmt: skip

suite("theory-support", SUPPORT_TASKS,
      "support learning by mini-batch SGD (Beneventano et al.): the support teacher, a deep "
      "linear network, an eta/b sweep and GD (CPU, minutes)", SUPPORT_COMPARISONS)  # fmt: skip
suite("theory-streaming", STREAM_TASKS,
      "streaming least squares (d = 1000): SGD, clipped SGD and signSGD against their risk "
      "ODEs, Gaussian and Student-t(3) noise (CPU, about 1 min per seed)", STREAM_COMPARISONS)  # fmt: skip
suite("theory-quadratic", SOR_TASKS,
      "second-order regression: a model quadratic in its parameters sharpens to the edge, its "
      "linearization does not (CPU, about 1 min per seed)")  # fmt: skip
suite("theory-deq", DEQ_TASKS,
      "deep equilibrium networks: orthogonal and symmetric initializations against Gaussian "
      "over the weight scale (CPU, about 2 min per seed)")  # fmt: skip
suite("theory", SUPPORT_TASKS + STREAM_TASKS + SOR_TASKS + DEQ_TASKS,
      "the solvable models (CPU, minutes): support learning, streaming least squares, "
      "second-order regression, deep equilibrium initialization",
      SUPPORT_COMPARISONS + STREAM_COMPARISONS)  # fmt: skip

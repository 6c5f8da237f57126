"""The ``regularization`` suites: what explicit regularization and the loss do to the
curvature at the edge of stability (digits, fc-tanh, full-batch GD; CPU, minutes per run).

* Weight decay (Saether, Kolic, Poggio & Beneventano, arXiv:2605.16622v1; only the abstract
  could be read offline): "weight decay robustly slows progressive sharpening", and "in MLPs,
  increasing weight decay causes a phase transition in which the sharpness stabilizes at a
  threshold significantly below the theoretical 2/eta boundary".  With a coupled L2
  coefficient :math:`\\omega` the GD edge on the unregularized loss's :math:`\\lambda_{\\max}`
  is :math:`2/\\eta - \\omega` (:mod:`eosbench.optim.thresholds`).
* The Hessian's two parts (Dauphin, Agarwala & Mobahi, arXiv:2401.10809v2):
  :math:`H = G + N`, the Gauss-Newton matrix and the "nonlinear modeling error", which
  "vanishes at interpolation" under MSE (the ``sharpness`` measurement with ``split``).
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
from . import Comparison, register, sharp, suite

SAETHER2026 = ("Saether, Kolic, Poggio & Beneventano 2026, Does Weight Decay Enhance Training "
               "Stability? (arXiv:2605.16622v1, abstract)")  # fmt: skip
DAUPHIN2024 = ("Dauphin, Agarwala & Mobahi 2024, Neglected Hessian component explains "
               "mysteries in sharpness regularization (arXiv:2401.10809v2)")  # fmt: skip
AGARWALA2024 = ("Agarwala & Pennington 2024, High dimensional analysis reveals conservative "
                "sharpening and a stochastic edge of stability (arXiv:2404.19261v2, abstract)")  # fmt: skip
BENEVENTANO2023 = ("Beneventano 2023, On the Trajectories of SGD Without Replacement "
                   "(arXiv:2312.16143v2, abstract)")  # fmt: skip
DIGITS = DataSpec(name="digits", n_train=1000)
FC_TANH = ModelSpec(name="fc-tanh")
STEPS, EVERY = 2000, 20


def gd_task(loss: str, lr: float, wd: float = 0.0, claims=(), split: bool = False,
            steps: int = STEPS, tag: str = "", description: str = "",
            reference: str = SAETHER2026, batch_size: int | None = None,
            sampling: str = "epoch", extra: tuple[MeasurementSpec, ...] = ()) -> Task:  # fmt: skip
    wd_part = f",wd={wd:g}" if wd else ""
    method = "gd" if batch_size is None else "sgd"
    batch = "" if batch_size is None else f",bs={batch_size}"
    if sampling != "epoch":
        batch += f",{sampling}"
    return register(
        Task(
            name=f"digits/fc-tanh/{loss}/{method}/lr={lr:g}{batch}{wd_part}{tag}",
            data=DIGITS,
            model=FC_TANH,
            loss=loss,
            optimizer=OptimizerSpec(name="sgd", lr=lr, weight_decay=wd, batch_size=batch_size,
                                    sampling=sampling),  # fmt: skip
            schedule=ScheduleSpec(steps=steps, eval_every=0),
            measurements=(sharp(EVERY, split=True) if split else sharp(EVERY), *extra),
            claims=tuple(claims),
            seeds=(0, 1, 2),
            description=description,
            reference=reference,
        )
    )


# Seed-0 pilots (2,000 steps, lambda_max every 20; 2/lr = 10): without weight decay GD crosses
# at ~340 and hovers at 1.02-1.05 x 2/lr; with wd=0.003 it reaches 9.6 at step 400 (10.7
# without) and hovers at 1.02-1.04 x (2/lr - wd); with wd=0.01 it dips to 3.1 and settles at
# 5.2-5.3 (0.53 x 2/lr - wd) from step ~1,400 while the loss keeps falling (0.078 at the end);
# with wd=0.03 it settles at 1.46 with the loss stuck at 0.16 (left out: the network no longer
# trains).  The NME share |v^T N v| / lambda_max under MSE: 0.080 at step 0, 3e-4 by step 40,
# 3e-4 to 4e-3 at the edge, 6e-4 at the end; under cross-entropy (lr=0.2, far below its edge:
# lambda_max 0.96 -> 0.11) 0.81 at step 0, 0.015 at step 160, then rising to 0.021 at the end.
# Bands: see results/regularization-digits/README.md for the calibration over seeds 0-2.
BAND = (0.95, 1.1)
EOS = ClaimSpec("eos", options=options(band=BAND, citation=SAETHER2026))
BELOW = ClaimSpec("settles_below_edge", options=options(margin=0.2, settle=0.1))
NME = ClaimSpec("nme_vanishes", options=options(max_share=0.01, shrink=0.5))

gd = gd_task("mse", 0.2, split=True,
             claims=(EOS, replace(BELOW, expect="FAIL"), NME),
             description="GD at lr=0.2 without weight decay sharpens to 2/lr=10 and hovers; "
             "the NME part of the sharpness vanishes as the MSE loss falls")  # fmt: skip
wd_small = gd_task("mse", 0.2, 0.003, claims=(EOS, replace(BELOW, expect="FAIL")),
                   description="GD at lr=0.2 with coupled L2 0.003 sharpens to its edge "
                   "2/lr - wd and hovers there")  # fmt: skip
wd_large = gd_task("mse", 0.2, 0.01, claims=(replace(EOS, expect="FAIL"), BELOW),
                   description="GD at lr=0.2 with coupled L2 0.01: the sharpness settles well "
                   "below 2/lr - wd while the loss keeps falling (the MLP phase transition)")  # fmt: skip
ce = gd_task("ce", 0.2, split=True, claims=(replace(NME, expect="FAIL"),), reference=DAUPHIN2024,
             description="negative control: under cross-entropy the NME part does not vanish "
             "as the loss falls")  # fmt: skip


def slower(sharper: Task, slower: Task, expect: str = "PASS") -> Comparison:
    return Comparison("ordering", better=sharper.name, worse=slower.name,
                      metric=f"sharpness@{SHARPENING_STEP}", expect=expect, citation=SAETHER2026,
                      note="weight decay slows progressive sharpening: lambda_max at step "
                      f"{SHARPENING_STEP}")  # fmt: skip


# Step 300: without weight decay GD has just reached the edge there (t* = 280-300 on seeds 0-2),
# with weight decay it is still sharpening (7.5-7.7 at wd=0.003, 3.3 at wd=0.01).
SHARPENING_STEP = 300
WD_TASKS = [gd, wd_small, wd_large, ce]
WD_COMPARISONS = (slower(gd, wd_small), slower(wd_small, wd_large),
                  slower(wd_large, gd, expect="FAIL"))  # fmt: skip
suite("regularization-digits", WD_TASKS,
      "weight decay and the Hessian's two parts at the edge of stability (digits, fc-tanh, GD; "
      "CPU, about 1-2 min per run)", comparisons=WD_COMPARISONS)  # fmt: skip

# -- mini-batch noise: conservative sharpening and sampling without replacement ---------------------
# Agarwala & Pennington (arXiv:2404.19261v2, abstract): "in the stochastic setting, the
# eigenvalues increase more slowly - a phenomenon we call conservative sharpening"; their
# stochastic edge "sensitive to the trace of the Neural Tangent Kernel" could not be stated from
# the abstract, so it is measured (``ntk_trace``) but not claimed.  Beneventano
# (arXiv:2312.16143v2, abstract): SGD without replacement follows SGD with replacement along
# the high-curvature directions and "regulariz[es] the trace of the noise covariance along the
# flat ones", penalizing "a weighted trace of the Fisher Matrix"; under MSE near interpolation
# the Fisher is the Gauss-Newton matrix, whose trace is ``ntk_trace`` here, so the check is an
# ordering of the NTK and Hessian traces over the second half of the run.  GD at lr=0.1
# crosses 2/lr=20 at step 1,620-1,840 (the smoke suite), so step 1,000 is mid-sharpening.
NOISE_LR, NOISE_STEPS, NOISE_AT = 0.1, 3000, 1000
TRACES = (MeasurementSpec("ntk_trace", every=500),
          MeasurementSpec("trace", every=250, options=options(n_samples=60)))  # fmt: skip
NOISE = {
    name: gd_task("mse", NOISE_LR, steps=NOISE_STEPS, batch_size=b, sampling=sampling, tag="/traces",
                  extra=TRACES, reference=AGARWALA2024 if sampling == "epoch" else BENEVENTANO2023,
                  description=what)
    for name, b, sampling, what in (
        ("gd", None, "epoch", "full-batch GD: the reference for conservative sharpening"),
        ("b128", 128, "epoch", "SGD, batch 128, per-epoch permutations"),
        ("b32", 32, "epoch", "SGD, batch 32, per-epoch permutations (without replacement)"),
        ("b32-iid", 32, "iid", "SGD, batch 32, i.i.d. batches (with replacement)"),
    )
}  # fmt: skip


def noise_ordering(higher: str, lower: str, metric: str, note: str, cite: str,
                   expect: str = "PASS") -> Comparison:  # fmt: skip
    return Comparison("ordering", better=NOISE[higher].name, worse=NOISE[lower].name,
                      metric=metric, expect=expect, citation=cite, note=note)  # fmt: skip


CONSERVATIVE = f"conservative sharpening: lambda_max at step {NOISE_AT}"
REPLACEMENT = "without replacement, a lower trace over the second half"
NOISE_COMPARISONS = (
    noise_ordering("gd", "b128", f"sharpness@{NOISE_AT}", CONSERVATIVE, AGARWALA2024),
    noise_ordering("b128", "b32", f"sharpness@{NOISE_AT}", CONSERVATIVE, AGARWALA2024),
    noise_ordering("b32", "gd", f"sharpness@{NOISE_AT}", CONSERVATIVE, AGARWALA2024, "FAIL"),
    noise_ordering("b32-iid", "b32", "ntk_trace@median", REPLACEMENT, BENEVENTANO2023),
    noise_ordering("b32-iid", "b32", "trace@median", REPLACEMENT, BENEVENTANO2023),
    noise_ordering("b32", "b32-iid", "ntk_trace@median", REPLACEMENT, BENEVENTANO2023, "FAIL"),
)  # fmt: skip
suite("noise-digits", list(NOISE.values()),
      "mini-batch noise at the edge of stability: conservative sharpening and sampling without "
      "replacement (digits, fc-tanh, MSE; CPU, about 1-2 min per run)",
      comparisons=NOISE_COMPARISONS)  # fmt: skip
suite("regularization", [*WD_TASKS, *NOISE.values()],
      "weight decay, the Hessian's two parts and mini-batch noise at the edge of stability "
      "(digits so far)", comparisons=WD_COMPARISONS + NOISE_COMPARISONS)  # fmt: skip

"""The ``tuners`` suites: step-size tuners at the edge of stability.

``tuners-digits`` (CPU, minutes): scikit-learn's ``digits`` (1,000 training examples,
standardized), the fc-tanh network of Cohen et al., MSE, full batch, one fixed step budget
for every optimizer: Armijo backtracking, the capped Polyak step, the quadratically greedy
step (CDAT sigma = 1), CDAT sigma = 2 ("on edge") and a tuned constant step (GD).
``tuners-cifar10-1k``: the same on ``cifar10-1k`` (its bands are the digits ones, uncalibrated
there; seed 0 ran on the CPU in about 2 hours, ``results/tuners-cifar10-1k``).  ``tuners`` is both.

References: Roulet, Agarwala & Pedregosa (2023), arXiv:2312.00209v3 (Armijo, Polyak);
Roulet, Agarwala, Grill, Swirszcz, Blondel & Pedregosa (2024), arXiv:2407.06183v1 (CDAT).
Every step records ``lr`` (the step taken) and the sharpness is measured every ``EVERY``
steps; the claims judge the normalized sharpness ``lr * sharpness / 2`` at the measured steps.
"""

from __future__ import annotations

from ..task import ClaimSpec, DataSpec, ModelSpec, OptimizerSpec, ScheduleSpec, Task, options
from . import Comparison, register, sharp, suite

ROULET23 = "Roulet, Agarwala, Pedregosa 2023 (arXiv:2312.00209v3)"
ROULET24 = "Roulet et al. 2024, Stepping on the Edge (arXiv:2407.06183v1)"
BOTH = f"{ROULET23}; {ROULET24}"

DIGITS = DataSpec(name="digits", n_train=1000)
CIFAR1K = DataSpec(name="cifar10", n_train=1000, n_test=1000)
FC_TANH = ModelSpec(name="fc-tanh")

STEPS = 1500  # the step budget of every digits task (each run <= ~2 min on one core)
EVERY = 20  # steps between sharpness measurements
CAP = 10.0  # eta_max of every tuner; on digits only Polyak reaches it (seed-0 pilot)


def tuner_task(name: str, opt: OptimizerSpec, claims=(), *, data=DIGITS, steps=STEPS,
               every=EVERY, description="", reference=BOTH) -> Task:  # fmt: skip
    return register(
        Task(
            name=name,
            data=data,
            model=FC_TANH,
            loss="mse",
            optimizer=opt,
            schedule=ScheduleSpec(steps=steps, eval_every=250),
            measurements=(sharp(every),),
            claims=tuple(claims),
            description=description,
            reference=reference,
        )
    )


# The claims (eosbench.claims.tuners) judge e_t = mean step (over the 20 steps from t) x
# sharpness / 2 over the second half of the run.  "Clearly below the edge": median e <= 0.8
# with the sharpness still rising by >= 10% across that half; "at the edge": median e in
# [0.9, 1.1] (the band of the GD edge claims); Polyak "at the edge or slightly beyond":
# [0.9, 1.5].  The bands were set from what the papers state, before any seed ran.
# Calibration on digits, seeds 0, 1, 2 (1,500 steps; median e, sharpness rise over the half):
#   Armijo           e 0.998, 0.997, 0.998; rise x1.195, x1.187, x1.206
#   greedy sigma=1   e 1.813, 1.239, 1.711 (its step alternates long/short: at the measured
#                    step alone 3.04, 0.694, 2.82); rise x1.133, x1.178, x1.146
#   greedy, EMA 0.9  e 0.997, 0.997, 0.997; rise x1.159, x1.168, x1.182
#   Polyak           e 3.67, 3.57, 3.49 (at the measured step alone 1.20, 0.717, 0.813);
#                    rise x1.167, x1.126, x1.167 (not claimed)
#   CDAT sigma=2     e 1.044, 1.045, 1.054; rise x1.010, x1.013, x0.986
# so "below the edge" (<= 0.8) FAILs for every greedy rule on every seed (they sit at the edge,
# or above it, while sharpening), Polyak's [0.9, 1.5] FAILs (far beyond it), CDAT's [0.9, 1.1]
# PASSes with margin 0.05; the sharpening (>= x1.1) holds for every greedy rule and fails for
# CDAT sigma=2 (its negative control).  These FAILs are findings, recorded as such.  The
# claim tuner_sharpening (the rise part of tuner_below_edge alone, with the x1.1 set before any
# seed ran) was split out after seeds 0-2 ran.  Final training losses (seeds 0-2): Armijo
# 0.0182, 0.0191, 0.0191; greedy 0.0119, 0.0185, 0.0138; greedy EMA 0.0195, 0.0209, 0.0211;
# Polyak 0.0028, 0.0033, 0.0075; CDAT sigma=2 0.0125, 0.0131, 0.0141; constant 0.0114, 0.0145,
# 0.0132.
BELOW = ClaimSpec("tuner_below_edge", options=options(hi=0.8, rise=0.1))
SHARPENING = ClaimSpec("tuner_sharpening", options=options(rise=0.1))
NOT_SHARPENING = ClaimSpec("tuner_sharpening", expect="FAIL", options=options(rise=0.1))
AT_EDGE = ClaimSpec("tuner_at_edge", options=options(band=(0.9, 1.1)))
POLYAK_EDGE = ClaimSpec("tuner_at_edge", options=options(band=(0.9, 1.5)))
NOT_BELOW = ClaimSpec("tuner_below_edge", expect="FAIL", options=options(hi=0.8, rise=0.1))
NOT_AT_EDGE = ClaimSpec("tuner_at_edge", expect="FAIL", options=options(band=(0.9, 1.1)))


def tuner_family(prefix: str, gd_lr: float, gd_note: str, data=DIGITS, steps=STEPS, every=EVERY,
                 note=""):  # fmt: skip
    """The tuners, a constant step and their comparisons on one data set."""

    def t(name, opt, claims, description):
        return tuner_task(prefix + name, opt, claims, data=data, steps=steps, every=every,
                          description=description + note)  # fmt: skip

    armijo = t("armijo", OptimizerSpec(name="armijo", lr=CAP), (BELOW, SHARPENING),
               "Armijo backtracking (c=0.1, backtracking x0.9, first trial 2x the previous "
               "step): its step falls while the sharpness keeps rising, below the edge")
    polyak = t("polyak", OptimizerSpec(name="polyak", lr=CAP), (POLYAK_EDGE,),
               "capped Polyak step (L*=0): at the edge or slightly beyond")
    greedy = t("cdat/sigma=1", OptimizerSpec(name="cdat", lr=CAP, cdat_sigma=1.0),
               (BELOW, SHARPENING, NOT_AT_EDGE),
               "quadratically greedy step (CDAT sigma=1, GD direction): below the edge with the "
               "sharpness rising; negative control: not at the edge")
    greedy_ema = t("cdat/sigma=1,ema=0.9",
                   OptimizerSpec(name="cdat", lr=CAP, cdat_sigma=1.0, cdat_ema=0.9),
                   (BELOW, SHARPENING),
                   "quadratically greedy step with EMA 0.9 of numerator and denominator")
    cdat = t("cdat/sigma=2", OptimizerSpec(name="cdat", lr=CAP, cdat_sigma=2.0),
             (AT_EDGE, NOT_BELOW, NOT_SHARPENING),
             "CDAT on edge (sigma=2, GD direction): eta*lambda/2 hovers at 1; negative "
             "controls: not below the edge, no sharpening")
    gd = t(f"gd-tuned/lr={gd_lr:g}", OptimizerSpec(name="sgd", lr=gd_lr), (), gd_note)
    tasks = [armijo, polyak, greedy, greedy_ema, cdat, gd]

    def lower_loss(high, low, note, expect="PASS", cite=ROULET24):
        return Comparison("ordering", better=high.name, worse=low.name, metric="train_loss",
                          expect=expect, citation=cite,
                          note=f"{note} (read: the first task's final training loss is higher)")  # fmt: skip

    comparisons = (
        lower_loss(greedy, cdat, "CDAT sigma=2 reaches a lower training loss than the greedy step"),
        lower_loss(armijo, cdat, "CDAT sigma=2 reaches a lower training loss than Armijo"),
        lower_loss(greedy, gd, "the constant step reaches a lower training loss than the greedy step"),
        lower_loss(armijo, gd, "the constant step reaches a lower training loss than Armijo"),
        lower_loss(armijo, polyak, "Polyak reaches a lower training loss than Armijo", cite=ROULET23),
        lower_loss(gd, polyak, "Polyak reaches a lower training loss than the constant step",
                   cite=ROULET23),
        lower_loss(cdat, armijo, "negative control: Armijo's loss below CDAT sigma=2's",
                   expect="FAIL"),
    )  # fmt: skip
    return tasks, comparisons


# The constant step, tuned on seed 0 (the pilot, 1,500 steps) by the final training loss over
# lr = 0.2, 0.4, 0.6, 0.8, 1.2, 1.6: 0.0174, 0.0131, 0.0137, 0.0114, 0.0138, diverged.
DIGITS_TASKS, DIGITS_COMPARISONS = tuner_family(
    "digits/fc-tanh/mse/", gd_lr=0.8,
    gd_note="constant step (GD) tuned over lr in {0.2, 0.4, 0.6, 0.8, 1.2, 1.6} on seed 0 by "
    "the final training loss: the reference of the tuners")  # fmt: skip
suite("tuners-digits", DIGITS_TASKS,
      "step-size tuners at the edge on digits (fc-tanh, MSE, full batch, 1,500 steps; CPU, "
      "about 10 min per seed)", DIGITS_COMPARISONS)  # fmt: skip

# cifar10-1k: seed 0 on the 2-core CPU (2 h, Armijo 49 min of it; results/tuners-cifar10-1k):
# the digits verdicts again (Armijo and greedy e = 1.00 with a x1.07 rise, Polyak e 9.24, CDAT
# sigma=2 1.037), and CDAT sigma=2 ends with the highest training loss (2.4e-3).  Uncalibrated: the bands and orderings are
# the digits ones; the constant step is Cohen et al.'s 2/150 (not tuned on this data set).
CIFAR_TASKS, CIFAR_COMPARISONS = tuner_family(
    "cifar10-1k/fc-tanh/mse/", gd_lr=0.01333, data=CIFAR1K, steps=10000, every=50,
    gd_note="constant step (GD) at Cohen et al.'s 2/150, not tuned on this data set",
    note=" [cifar10-1k: bands uncalibrated, registered for a GPU]")  # fmt: skip
suite("tuners-cifar10-1k", CIFAR_TASKS,
      "step-size tuners at the edge on cifar10-1k (fc-tanh, MSE, full batch, 10,000 steps; "
      "GPU; bands uncalibrated)", CIFAR_COMPARISONS)  # fmt: skip
suite("tuners", DIGITS_TASKS + CIFAR_TASKS, "step-size tuners at the edge: digits and cifar10-1k",
      DIGITS_COMPARISONS + CIFAR_COMPARISONS)  # fmt: skip

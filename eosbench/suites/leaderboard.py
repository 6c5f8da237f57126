"""The tasks of the leaderboard's tracks (:mod:`eosbench.leaderboard.tracks`).

Each task fixes data, model, loss, schedule, measurements, claims and seeds; a leaderboard
entry runs it with its own optimizer (``--set optimizer.name=... --set optimizer.lr=...``),
everything but the optimizer staying as registered.  The optimizer registered here is the
reference baseline, so ``eosbench reproduce --suite leaderboard`` runs the baselines'
reference configurations.  Small enough for a 2-core CPU: digits, fc-tanh, 600 full-batch
steps (stability) and 1,000 mini-batch steps (generalization), 10-20 s per run.

Calibration (seeds 0-2 on this project's 2-core CPU): GD at lr=0.2 crosses 2/lr=10 at
step ~290 and hovers at 1.04 x 2/lr; heavy ball (lr=0.3, beta=0.5) crosses at ~110 and
hovers at 1.02 x; USAM (lr=0.2, rho=0.02) crosses its edge 8.54 at ~250 and hovers at
1.06 x; full-batch Adam (lr=2e-3, eps=1e-7) crosses 38/lr at ~110 and hovers at 1.01 x.

The generalized-sharpness tasks (Islamov et al., arXiv:2603.05002v1; the ``steepest`` suite's
measurement), seed-0 pilots of 600 steps unless noted: l_inf descent at lr=1.6e-5 starts at
0.65 x 2/lr (too close for the claim's rise of 1.5 x), crosses at ~150 and hovers at
1.01-1.05 x, so lr=1.2e-5 (0.49 x at the start); spectral descent at lr=0.015 starts at 0.50 x,
crosses at ~100 and hovers at 0.996-1.008 x; sign descent (lr=1e-3) and Muon without momentum
(lr=0.02) cross their normalized edge at ~100 and hover at 1.01-1.05 x (2,000-step pilots of
the steepest suite); block coordinate descent at lr=0.6 starts at 0.47 x, crosses at ~250 and
keeps rising (1.6 x at step 450) until it diverges at step ~470.
"""

from __future__ import annotations

from ..optim.steepest import quantity
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
from . import generalized, register, suite

COHEN2021 = "Cohen et al. 2021 (arXiv:2103.00065v3)"
COHEN2022 = (
    "Cohen et al. 2022, Adaptive Gradient Methods at the Edge of Stability (arXiv:2207.14484)"
)
DIGITS = DataSpec(name="digits", n_train=1000)
FC_TANH = ModelSpec(name="fc-tanh")


def _stability(quantity: str, optimizer: OptimizerSpec, reference: str,
               measurement: MeasurementSpec | None = None) -> Task:  # fmt: skip
    return register(
        Task(
            name=f"digits/fc-tanh/mse/leaderboard-stability/{quantity}",
            data=DIGITS,
            model=FC_TANH,
            loss="mse",
            optimizer=optimizer,
            schedule=ScheduleSpec(steps=600, eval_every=300),
            measurements=(measurement or MeasurementSpec(quantity, every=10),),
            claims=(ClaimSpec("eos", options=options(quantity=quantity, band=(0.9, 1.1))),),
            seeds=(0, 1, 2),
            description=f"leaderboard stability track, methods with a threshold on the "
            f"{quantity.replace('_', ' ')}: full batch, 600 steps; the entry's optimizer",
            reference=reference,
        )
    )


lb_sharpness = _stability("sharpness", OptimizerSpec(name="sgd", lr=0.2), COHEN2021)
lb_preconditioned = _stability(
    "preconditioned_sharpness", OptimizerSpec(name="adam", lr=0.002, eps=1e-7), COHEN2022
)
ISLAMOV2026 = "Islamov, Crawshaw, Cohen & Gower 2026 (arXiv:2603.05002v1)"
lb_generalized = [
    _stability(quantity(name), OptimizerSpec(name=name, lr=lr), ISLAMOV2026,
               generalized(name, every=10))
    for name, lr in (("linf", 1.2e-5), ("signsgd", 1e-3), ("spectral", 0.015), ("muon", 0.02),
                     ("block_cd", 0.6))
]  # fmt: skip
lb_generalization = register(
    Task(
        name="digits/fc-tanh/ce/leaderboard-generalization/bs=32",
        data=DIGITS,
        model=FC_TANH,
        loss="ce",
        optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=32),
        schedule=ScheduleSpec(steps=1000, eval_every=250),
        measurements=(MeasurementSpec("sharpness", every=0),),  # at the last step only
        seeds=(0, 1, 2, 3, 4),
        description="leaderboard generalization track: test accuracy after 1,000 steps of "
        "batch 32 (32 epochs); the entry's optimizer",
    )
)

LEADERBOARD = suite(
    "leaderboard",
    [lb_sharpness, lb_preconditioned, *lb_generalized, lb_generalization],
    "the leaderboard's track tasks with the reference baselines (GD, Adam, SGD)",
)

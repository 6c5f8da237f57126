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

from ..task import (
    ClaimSpec,
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    Task,
    options,
)
from . import register, sharp, suite

SAETHER2026 = ("Saether, Kolic, Poggio & Beneventano 2026, Does Weight Decay Enhance Training "
               "Stability? (arXiv:2605.16622v1, abstract)")  # fmt: skip
DAUPHIN2024 = ("Dauphin, Agarwala & Mobahi 2024, Neglected Hessian component explains "
               "mysteries in sharpness regularization (arXiv:2401.10809v2)")  # fmt: skip
DIGITS = DataSpec(name="digits", n_train=1000)
FC_TANH = ModelSpec(name="fc-tanh")
STEPS, EVERY = 2000, 20


def gd_task(loss: str, lr: float, wd: float = 0.0, claims=(), split: bool = False,
            steps: int = STEPS, tag: str = "", description: str = "",
            reference: str = SAETHER2026) -> Task:  # fmt: skip
    wd_part = f",wd={wd:g}" if wd else ""
    return register(
        Task(
            name=f"digits/fc-tanh/{loss}/gd/lr={lr:g}{wd_part}{tag}",
            data=DIGITS,
            model=FC_TANH,
            loss=loss,
            optimizer=OptimizerSpec(name="sgd", lr=lr, weight_decay=wd),
            schedule=ScheduleSpec(steps=steps, eval_every=0),
            measurements=(sharp(EVERY, split=True) if split else sharp(EVERY),),
            claims=tuple(claims),
            seeds=(0, 1, 2),
            description=description,
            reference=reference,
        )
    )


WD = [gd_task("mse", 0.2, wd, description=f"GD at lr=0.2 with coupled L2 {wd:g}")
      for wd in (0.0, 0.003, 0.01, 0.03)]  # fmt: skip
PARTS = [gd_task("mse", 0.2, split=True, tag="/split", reference=DAUPHIN2024,
                 description="GD, MSE: the Hessian's Gauss-Newton and NME parts"),
         gd_task("ce", 0.2, split=True, tag="/split", reference=DAUPHIN2024,
                 description="GD, cross-entropy: the Hessian's Gauss-Newton and NME parts")]  # fmt: skip

suite("regularization-digits", WD + PARTS,
      "weight decay and the Hessian's two parts at the edge of stability (digits, fc-tanh, GD; "
      "CPU, about 1-2 min per run)")  # fmt: skip

"""The ``central-flow`` suites: the theory of the edge, checked run by run.

GD's central flow and gradient flow are integrated beside each GD run from the GD iterate at
which the sharpness first reaches 0.9 x 2/lr (the ``central_flow`` measurement,
:mod:`eosbench.flow`), and the claims of :mod:`eosbench.claims.flow` compare them with GD:
each claim against the central flow, and the same claim against gradient flow as its
negative control (expected FAIL) on the same run.

``central-flow`` (CPU, minutes per run): scikit-learn's ``digits`` (1,000 examples), the
fully-connected tanh network, MSE, GD at lr = 0.2 (2/lr = 10; the sharpness starts near 4
and reaches 10 near step 290), 1,000 steps.  ``central-flow-cifar`` (GPU scale, not run on
the CPU): Cohen et al. 2025's setting, 1,000 CIFAR-10 training images of the first 4 classes,
MSE, GD at their code's lr = 0.02, an MLP and a CNN, 1,000 steps.
"""

from __future__ import annotations

from .. import task as T
from . import register, suite

CF2025 = ("Cohen, Damian, Talwalkar, Kolter & Lee 2025, Understanding Optimization in Deep "
          "Learning with Central Flows (arXiv:2410.24206v2)")
SS2023 = ("Damian, Nichani & Lee 2023, Self-Stabilization (arXiv:2209.15594v2)")

CENTRAL_FLOW = T.MeasurementSpec("central_flow", every=1)


def _claims(osc: dict, loss: dict, track: dict, pin: dict) -> tuple[T.ClaimSpec, ...]:
    """Each claim on the central flow (PASS) and on gradient flow (its control, FAIL)."""
    out = [T.ClaimSpec("eos", options=T.options(band=(0.95, 1.1)))]
    for name, kw in (("cf_tracks", track), ("cf_predicts_loss", loss),
                     ("cf_pins_sharpness", pin)):
        out.append(T.ClaimSpec(name, options=T.options(**kw)))
        out.append(T.ClaimSpec(name, expect="FAIL", options=T.options(flow="gradient", **kw)))
    out.append(T.ClaimSpec("cf_oscillation", options=T.options(**osc)))
    out.append(T.ClaimSpec("cf_oscillation", expect="FAIL",
                         options=T.options(reference="gradient", **osc)))
    return tuple(out)


def flow_task(name: str, data: T.DataSpec, model: T.ModelSpec, lr: float, steps: int, claims,
              description: str) -> T.Task:  # fmt: skip
    return register(T.Task(
        name=name, data=data, model=model, loss="mse",
        optimizer=T.OptimizerSpec(name="sgd", lr=lr),
        schedule=T.ScheduleSpec(steps=steps, eval_every=0),
        measurements=(CENTRAL_FLOW,),
        claims=claims, description=description, reference=f"{CF2025}; {SS2023}",
    ))


# Bands, set from the papers' statements before any seed ran; calibration below.
DIGITS_CLAIMS = _claims(
    track=dict(close=0.5, grow=2.0, window=(0.2, 1.0)),
    loss=dict(band=0.05, average=20, window=(0.2, 1.0)),
    pin=dict(band=0.01),
    osc=dict(band=(0.5, 2.0), alternate=0.9, window=(0.2, 1.0)),
)
digits = flow_task(
    "digits/fc-tanh/mse/gd/lr=0.2/central-flow", T.DataSpec(name="digits", n_train=1000),
    T.ModelSpec(name="fc-tanh"), 0.2, 1000, DIGITS_CLAIMS,
    "GD at the edge follows its central flow: distance, time-averaged loss, pinned sharpness "
    "and the period-2 oscillation predicted; gradient flow as the control")

CIFAR4 = T.DataSpec(name="cifar10", n_train=1000, classes=4)
cifar = [
    flow_task(f"cifar10-4class-1k/{m}/mse/gd/lr=0.02/central-flow", CIFAR4, T.ModelSpec(name=m),
              0.02, 1000, DIGITS_CLAIMS,
              f"Cohen et al. 2025's setting with {m}: GD follows its central flow (GPU scale; "
              "bands of the digits task, uncalibrated here)")
    for m in ("fc-tanh", "cnn-relu")
]

suite("central-flow", [digits], "the central flow and self-stabilization predict GD at the "
      "edge (digits, fc-tanh, MSE; CPU, minutes per run)")
suite("central-flow-cifar", cifar, "the central flow on 1,000 CIFAR-10 images of 4 classes "
      "(MLP, CNN; GPU scale)")

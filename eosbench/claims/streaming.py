r"""Streaming least squares: the deterministic risk curves of SGD, clipped SGD and signSGD,
and the claim that a run follows its curve.

Setting (``stream-*`` data, ``linear`` model, batch 1, one pass): :math:`x \sim N(0, I_d)`,
:math:`y = \langle x,\theta^*\rangle + \epsilon`, the step :math:`\eta/d` (``optimizer.lr``
:math:`= \eta/d`), time :math:`t = k/d`, the excess risk :math:`R = \tfrac12\lVert\theta -
\theta^*\rVert^2` (measurement ``excess_risk``).  Papers: Marshall, Xiao, Agarwala & Paquette,
"To Clip or not to Clip" (arXiv:2406.11733v2): "with Gaussian noise clipping cannot improve SGD
performance", while "in other noisy settings, clipping can provide benefits with tuning of the
clipping threshold"; Xiao, Marshall, Agarwala & Paquette (arXiv:2411.12135v3): signSGD's risk
follows a limiting ODE, with an effective learning rate, noise compression and diagonal
preconditioning.  Only the abstracts and introductions of both papers could be read offline,
so the ODEs below are **derived here** for :math:`K = I` (Stein's lemma on the Gaussian
:math:`\langle x, r\rangle \sim N(0, 2R)`, :math:`r = \theta - \theta^*`, :math:`w = \langle
x, r\rangle - \epsilon`), not quoted; they are the papers' setting, not their equations:

* SGD: :math:`\dot R = -2\eta R + \tfrac{\eta^2}{2}(2R + E\epsilon^2)`;
* clipped SGD, gradient clipped to norm :math:`C` (``clip_norm``), i.e. :math:`w` clamped at
  :math:`c = C/\sqrt d` (:math:`\lVert x\rVert \approx \sqrt d`): :math:`\dot R = -2\eta
  H_c R + \tfrac{\eta^2}{2} E\min(w^2, c^2)`, :math:`H_c = P(|w| \le c)`;
* signSGD: :math:`\dot R = -2\eta\cdot 2\sqrt{2/\pi}\, p_w(0)\cdot R + \tfrac{\eta^2}{2}`, with
  :math:`p_w(0)` the density of :math:`w` at 0 (the noise enters only there: "noise
  compression"; Gaussian noise: :math:`2\sqrt{2/\pi}\,p_w(0) = 2/(\pi\sqrt{2R + \sigma^2})`).

Expectations over the noise are midpoint quadratures on its quantiles, conditional on
:math:`\epsilon` in closed form; the curves are integrated by ``scipy.integrate.solve_ivp``.
Nothing here runs or imports the simulation: the only shared facts are the data set's
definition (:math:`d`, the noise law) and the task's hyperparameters.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

CITATION = ("Marshall, Xiao, Agarwala, Paquette (arXiv:2406.11733v2); Xiao, Marshall, Agarwala, "
            "Paquette (arXiv:2411.12135v3); risk ODEs derived in eosbench.claims.streaming")  # fmt: skip
RULES = ("sgd", "clipped", "sign")
NODES = 4000  # quantile nodes of the noise law


@lru_cache(maxsize=8)
def noise_nodes(law: str, n: int = NODES) -> np.ndarray:
    """Midpoint quantiles :math:`F^{-1}((j + 1/2)/n)` of the noise law."""
    from scipy import stats

    q = (np.arange(n) + 0.5) / n
    if law == "gaussian":
        return stats.norm.ppf(q)
    if law == "t3":
        return stats.t.ppf(q, 3)
    raise ValueError(f"unknown noise law {law!r}")


NOISE_VARIANCE = {"gaussian": 1.0, "t3": 3.0}  # E eps^2, exact


def clip_moments(R: float, c: float, eps: np.ndarray) -> tuple[float, float]:
    r""":math:`H_c = P(|w| \le c)` and :math:`E\min(w^2, c^2)` for :math:`w = z - \epsilon`,
    :math:`z \sim N(0, 2R)`, averaged over the noise nodes ``eps``."""
    from scipy.special import ndtr

    tau = math.sqrt(max(2 * R, 1e-300))
    m = -eps
    a, b = (-c - m) / tau, (c - m) / tau
    pa, pb = np.exp(-a * a / 2) / math.sqrt(2 * math.pi), np.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    p = ndtr(b) - ndtr(a)
    inside = m * m * p + 2 * m * tau * (pa - pb) + tau * tau * (p + a * pa - b * pb)
    return float(p.mean()), float((inside + c * c * (1 - p)).mean())


def density_at_zero(R: float, eps: np.ndarray) -> float:
    """:math:`p_w(0) = E_\\epsilon\\, \\phi_\\tau(\\epsilon)`, :math:`\\tau^2 = 2R`."""
    tau = math.sqrt(max(2 * R, 1e-300))
    return float((np.exp(-((eps / tau) ** 2) / 2) / (tau * math.sqrt(2 * math.pi))).mean())


def risk_rate(rule: str, R: float, eta: float, law: str, c: float | None = None) -> float:
    """:math:`dR/dt` of ``rule`` (module docstring)."""
    if rule == "sgd":
        return -2 * eta * R + eta * eta / 2 * (2 * R + NOISE_VARIANCE[law])
    eps = noise_nodes(law)
    if rule == "clipped":
        h, g = clip_moments(R, c, eps)
        return -2 * eta * h * R + eta * eta / 2 * g
    if rule == "sign":
        return -2 * eta * 2 * math.sqrt(2 / math.pi) * density_at_zero(R, eps) * R + eta * eta / 2
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def risk_curve(rule: str, R0: float, times: np.ndarray, eta: float, law: str,
               c: float | None = None) -> np.ndarray:  # fmt: skip
    """:math:`R(t)` at ``times`` from :math:`R(0) = R_0` (relative tolerance 1e-8)."""
    from scipy.integrate import solve_ivp

    times = np.asarray(times, dtype=float)
    sol = solve_ivp(lambda t, y: [risk_rate(rule, y[0], eta, law, c)], (0.0, float(times[-1])),
                    [R0], t_eval=times, rtol=1e-8, atol=1e-12)  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"risk ODE ({rule}): {sol.message}")
    return sol.y[0]


def task_setting(task: Task) -> tuple[str, float, float | None, int, str]:
    """(rule, eta, c, d, law) of a streaming task: ``eta = lr d``, ``c = clip_norm / sqrt d``.
    ``ValueError`` for a task the ODEs are not about: other data or batch size, standardized
    inputs, more steps than examples (the ODEs are one pass), or anything beyond the plain
    update of SGD, clipped SGD or signSGD (:func:`eosbench.optim.departures`)."""
    from ..data.synthetic import STREAM_D, STREAM_N, STREAM_NOISES
    from ..optim import departures

    law = task.data.name.removeprefix("stream-")
    if law not in STREAM_NOISES or task.optimizer.batch_size != 1:
        raise ValueError(f"{task.name}: not a streaming task (stream-* data, batch 1)")
    if task.data.standardize:
        raise ValueError(f"{task.name}: the risk ODEs are for x ~ N(0, I): set "
                         "data.standardize=false")  # fmt: skip
    n, steps = task.data.n_train or STREAM_N, task.schedule.steps
    if steps is None or steps > n:
        raise ValueError(f"{task.name}: the risk ODEs are one pass: schedule.steps={steps} must "
                         f"be at most the {n} training examples")  # fmt: skip
    o, d = task.optimizer, STREAM_D
    rule = {"signsgd": "sign", "sgd": "sgd" if o.clip_norm is None else "clipped"}.get(o.name)
    extra = departures(task, allow=("clip_norm",) if o.name == "sgd" else ())
    if rule is None or extra:
        why = f"optimizer {o.name!r}" if rule is None else ", ".join(extra)
        raise ValueError(f"{task.name}: no risk ODE for {why}")
    c = None if o.clip_norm is None else o.clip_norm / math.sqrt(d)
    return rule, o.lr * d, c, d, law


def _setting(task: Task, rule: str | None, tol: float, start: float):
    """:func:`task_setting`, with the claim's options checked (``ValueError``)."""
    setting = task_setting(task)
    if rule is not None and rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if (rule or setting[0]) == "clipped" and setting[2] is None:
        raise ValueError("rule='clipped' needs a task with optimizer.clip_norm")
    for key, v in (("tol", tol), ("start", start)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
            raise ValueError(f"{key}={v!r}: expected a finite number >= 0")
    return setting


@CLAIMS.register("risk_follows_ode")
def risk_follows_ode(run: Run, task: Task, rule: str | None = None, tol: float = 0.1,
                     start: float = 0.5) -> Verdict:  # fmt: skip
    """The measured risk stays within ``tol`` (relative) of the ODE's over :math:`t \\ge`
    ``start``; ``rule`` replaces the task's own ODE (a control: plain SGD's ODE for a signSGD
    run must FAIL)."""
    name = "risk_follows_ode" + (f"[{rule} ODE]" if rule else "")
    own, eta, c, d, law = _setting(task, rule, tol, start)
    rule = rule or own
    if run.status == "diverged":
        return fail(name, f"diverged at step {run.diverged_at}", "diverged", citation=CITATION)
    steps, risk = run.values("risk")
    if len(risk) < 3 or steps[0] != 0:
        return fail(name, f"{len(risk)} measurements of risk from step {steps[:1]}",
                    "too_few_points", citation=CITATION)  # fmt: skip
    t = steps / d
    ode = risk_curve(rule, float(risk[0]), t, eta, law, c)
    keep = t >= start
    if keep.sum() < 3:
        return fail(name, f"{int(keep.sum())} measurements of risk at t >= {start:g} (< 3)",
                    "too_few_points", citation=CITATION)  # fmt: skip
    rel = np.abs(risk[keep] / ode[keep] - 1)
    worst = float(rel.max())
    i = int(np.argmax(rel))
    ok = worst <= tol
    detail = (
        f"{rule} ODE (eta = lr d = {eta:.4g}{'' if c is None else f', c = {c:.4g}'}, {law} "
        f"noise): largest |R/R_ode - 1| = {worst:.3g} at t = {t[keep][i]:.3g} (R {risk[keep][i]:.4g}"
        f" vs {ode[keep][i]:.4g}); median {float(np.median(rel)):.3g} over {int(keep.sum())} "
        f"measurements with t >= {start:g}; final R {risk[-1]:.4g} vs {ode[-1]:.4g}"
    )
    return Verdict(
        name, "PASS" if ok else "FAIL", worst, tol, f"|R/R_ode - 1| <= {tol:g} for t >= {start:g}",
        detail, citation=CITATION,
        parts={"evaluable": True, "follows": ok, "worst": worst, "median": float(np.median(rel)),
               "final_risk": float(risk[-1]), "final_ode": float(ode[-1])},
    )  # fmt: skip


risk_follows_ode.check = _setting

r"""Suite-level claims: comparisons of a metric across tasks and seeds.

A :class:`~eosbench.suites.Comparison` names two tasks of a suite; its verdict is
computed from the finished runs of both, one value per seed:

``ordering``
    "``better`` beats ``worse``": a one-sided Welch t-test (unequal variances) of
    :math:`H_0: \mu_\text{better} \le \mu_\text{worse}` at level ``alpha``.  ``PASS`` when
    :math:`p < \alpha`; ``FAIL`` when the opposite one-sided test rejects (the data show
    the reverse ordering); ``INCONCLUSIVE`` otherwise, and when fewer than two finished
    seeds per task exist.  Reported with both means and standard errors, the difference
    of means with its Welch 95% confidence interval, :math:`t`, the Welch-Satterthwaite
    degrees of freedom, :math:`p` and Hedges' :math:`g` (bias-corrected standardized
    difference).  ``INCONCLUSIVE`` is never as expected, so a negative control cannot
    pass for lack of data.

A metric is the last finite value of a recorded key (``test_acc``: the accuracy at the
end of training) or, with the suffix ``@first``, its first (``test_acc@first``: the
untrained network's, recorded at step 0), or with ``@median`` the median of its values
over the second half of the run (``sharpness@median``: the window of the EoS claims,
robust to the oscillation at the edge), or with ``@<step>`` its value at the last measurement
at or before that step (``sharpness@300``: how far progressive sharpening has got by step 300).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from scipy import stats

from ..record import Run
from . import Verdict

INCONCLUSIVE = "INCONCLUSIVE"


def metric_value(run: Run, metric: str) -> float | None:
    """``metric`` of one run: ``key`` or ``key@last`` (last finite value), ``key@first``,
    ``key@median`` (median over the second half) or ``key@<step>`` (the last value at or before
    that step); None when nothing finite is recorded there."""
    key, _, which = metric.partition("@")
    if which not in ("", "first", "last", "median") and not which.isdigit():
        raise ValueError(f"metric {metric!r}: the suffix must be @first, @last, @median or "
                         "@<step>")  # fmt: skip
    steps, values = run.values(key)
    if which.isdigit():
        values = values[steps <= int(which)]
    if values.size == 0:
        return None
    if which == "median":
        second = values[steps >= run.last_step / 2]
        return float(np.median(second)) if second.size else None
    return float(values[0] if which == "first" else values[-1])


def runs_by_task(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Finished runs grouped by task name, sorted by seed; a task whose runs are all
    unfinished maps to an empty list (its comparisons are INCONCLUSIVE).  A run kept without
    its time series (a GPU session's records) is left out: its task's comparisons are not
    re-evaluated."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        if not r.has_series:
            continue
        group = out.setdefault(r.task.name, [])
        if r.finished:
            group.append(r)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in out.items()}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Standardized mean difference with the small-sample correction (Hedges 1981)."""
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return math.copysign(math.inf, a.mean() - b.mean()) if a.mean() != b.mean() else 0.0
    j = 1 - 3 / (4 * (na + nb) - 9)
    return j * (a.mean() - b.mean()) / pooled


def welch(better: Sequence[float], worse: Sequence[float]) -> dict[str, float]:
    """Welch's two-sample statistics of ``better - worse`` (needs >= 2 values each)."""
    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        p_greater = 0.0 if diff > 0 else (1.0 if diff < 0 else 0.5)
        t = math.copysign(math.inf, diff) if diff else 0.0
        df, half = math.nan, 0.0
    else:
        t = diff / se
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        p_greater = float(stats.t.sf(t, df))
        half = float(stats.t.ppf(0.975, df)) * se
    return {
        "mean_better": float(a.mean()), "se_better": math.sqrt(va), "n_better": len(a),
        "mean_worse": float(b.mean()), "se_worse": math.sqrt(vb), "n_worse": len(b),
        "difference": diff, "ci_low": diff - half, "ci_high": diff + half,
        "t": float(t), "df": float(df), "p_greater": p_greater, "p_less": 1.0 - p_greater,
        "hedges_g": hedges_g(a, b),
    }  # fmt: skip


def ordering(
    better: Sequence[float],
    worse: Sequence[float],
    alpha: float = 0.05,
    *,
    claim: str = "ordering",
    expected: str = "PASS",
    citation: str = "",
) -> Verdict:
    """The ``ordering`` verdict for two samples (one value per seed); module docstring."""
    tol = f"one-sided Welch t-test, alpha={alpha:g}"
    if len(better) < 2 or len(worse) < 2:
        return Verdict(
            claim, INCONCLUSIVE, None, 0.0, tol,
            f"not evaluable: needs >= 2 finished seeds per task, got {len(better)} and {len(worse)}",
            expected, citation,
        )  # fmt: skip
    w = welch(better, worse)
    if w["p_greater"] < alpha:
        verdict = "PASS"
    elif w["p_less"] < alpha:
        verdict = "FAIL"
    else:
        verdict = INCONCLUSIVE
    detail = (
        f"means {w['mean_better']:.4g} (se {w['se_better']:.2g}, n={w['n_better']}) vs "
        f"{w['mean_worse']:.4g} (se {w['se_worse']:.2g}, n={w['n_worse']}); difference "
        f"{w['difference']:.4g}, 95% CI [{w['ci_low']:.4g}, {w['ci_high']:.4g}]; "
        f"t={w['t']:.3g}, df={w['df']:.3g}, p(better>worse)={w['p_greater']:.3g}, "
        f"p(reverse)={w['p_less']:.3g}; Hedges g={w['hedges_g']:.3g}"
    )
    return Verdict(claim, verdict, w["difference"], 0.0, tol, detail, expected, citation)


def describe(c) -> str:
    """A one-line name for a comparison."""
    against = c.against or c.metric
    lhs = f"{c.better} [{c.metric}]"
    rhs = f"{c.worse} [{against}]"
    return f"{c.name}: {lhs} > {rhs}"


def evaluate_comparison(c, by_task: dict[str, list[Run]]) -> Verdict:
    """The verdict of one :class:`~eosbench.suites.Comparison` on grouped runs."""
    if c.name != "ordering":
        raise ValueError(f"unknown comparison {c.name!r} (known: ordering)")

    def sample(task: str, metric: str) -> list[float]:
        vals = (metric_value(r, metric) for r in by_task.get(task, []))
        return [v for v in vals if v is not None and math.isfinite(v)]

    v = ordering(
        sample(c.better, c.metric),
        sample(c.worse, c.against or c.metric),
        c.alpha,
        claim=describe(c),
        expected=c.expect,
        citation=c.citation,
    )
    if c.note:
        v = replace(v, detail=f"{c.note}; {v.detail}")
    return v


def comparisons_for(runs: Sequence[Run]) -> list[Verdict]:
    """Every registered suite comparison whose two tasks both have runs among ``runs`` (runs
    without their time series are left out: :func:`runs_by_task`)."""
    from ..suites import SUITES

    by_task = runs_by_task(runs)  # every task with runs, finished or not
    seen, out = set(), []
    for name in SUITES.list():
        for c in SUITES.get(name).comparisons:
            if c in seen or c.better not in by_task or c.worse not in by_task:
                continue
            seen.add(c)
            out.append(evaluate_comparison(c, by_task))
    return out

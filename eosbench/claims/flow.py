r"""The theory of the edge as claims: the central flow and self-stabilization predict GD.

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with
Central Flows", ICLR 2025 (arXiv:2410.24206v2); Damian, Nichani & Lee, "Self-Stabilization:
The Implicit Bias of Gradient Descent at the Edge of Stability", ICLR 2023
(arXiv:2209.15594v2).  Every claim reads the series of the ``central_flow`` measurement
(:mod:`eosbench.flow`).

The *edge phase* is the part ``window`` = (lo, hi) of the steps from :math:`t^*` -- GD's first
step with sharpness :math:`\ge 2/\eta` -- to the end of the run.  Its start leaves out the
transient in which GD's oscillation grows from nothing to its balanced size, which the
central flow does not describe (it puts the flow at the balance at once).

Each claim has a ``flow`` (or ``reference``) option: ``"central"`` is the claim, and
``"gradient"`` evaluates the same predicate with gradient flow from the same start in place
of the central flow -- its negative control, which must FAIL.

- ``cf_tracks``: over the edge phase the distance of the smoothed GD iterate
  :math:`(w_{t-1} + 2w_t + w_{t+1})/4` to the flow stays at most ``close`` times its distance
  to the other flow at the phase's end, and that other distance grows by at least ``grow``
  across the phase.
- ``cf_predicts_loss``: the centered moving average of GD's training loss over ``average``
  steps matches the flow's predicted time-averaged loss :math:`L(w) + \tfrac12\langle\Sigma,
  H\rangle` (gradient flow: its loss) within a relative ``band`` at every step of the phase.
- ``cf_pins_sharpness``: from the first step at which the flow's sharpness comes within
  ``band`` of :math:`2/\eta`, it stays within ``band`` (relative) of it to the end.
- ``cf_oscillation``: the mean of :math:`x_t^2` over the phase, :math:`x_t = u\cdot(w_t -
  w(t))` the displacement of GD from the flow along the flow's top eigenvector, is within
  ``band`` (a ratio) of the mean of :math:`\sigma^2 = u^\top\Sigma u`, and :math:`x_t`
  changes sign on at least ``alternate`` of the consecutive steps (period 2).  With
  ``reference="gradient"`` the displacement is taken from gradient flow.

Without the flow integrated (it costs a third-order product per substep), one prediction can
still be read from GD alone:

- ``cf_smoothed_edge``: from GD's :math:`t^*` on, the median of the sharpness at the smoothed
  iterate :math:`(w_t + 2w_{t+1} + w_{t+2})/4` (the ``smoothed_sharpness`` measurement, the
  authors' estimate of the flow's point) over :math:`2/\eta` lies in ``band``: the flow's
  sharpness is pinned at :math:`2/\eta` even where the iterates' own sharpness, lifted by
  their oscillation, sits above it.  Its negative control is the small-step task that never
  reaches the edge.
"""

from __future__ import annotations

import numpy as np

from ..record import Run
from ..task import Task
from . import CLAIMS, Verdict, fail

CITATION = "Cohen et al. 2025 (arXiv:2410.24206v2); Damian et al. 2023 (arXiv:2209.15594v2)"
FLOWS = ("central", "gradient")


def _name(claim: str, flow: str) -> str:
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    return claim if flow == "central" else f"{claim}[gradient flow]"


def _gd_t_star(run: Run, task: Task) -> int | str:
    """GD's t*, its first measured step with sharpness >= 2/lr, or why there is none."""
    if run.status == "diverged":
        return f"the run diverged at step {run.diverged_at}"
    T = 2.0 / task.optimizer.lr
    steps, q = run.values("sharpness")
    reached = steps[q >= T]
    if len(reached) == 0:
        top = f"max {q.max():.4g}" if len(q) else "never measured"
        return f"GD's sharpness never reached 2/lr={T:.4g} ({top})"
    return int(reached[0])


def _phase(run: Run, task: Task, window: tuple[float, float]
           ) -> tuple[int, float, float] | str:  # fmt: skip
    """(t*, lo, hi) of the edge phase, or why there is none."""
    lo_f, hi_f = window
    if not 0 <= lo_f < hi_f <= 1:
        raise ValueError(f"window must satisfy 0 <= lo < hi <= 1, got {window}")
    t_star = _gd_t_star(run, task)
    if isinstance(t_star, str):
        return t_star
    if run.values("cf_loss")[0].size == 0:
        return "the central flow was never started (no central_flow series)"
    end = run.last_step
    return t_star, t_star + lo_f * (end - t_star), t_star + hi_f * (end - t_star)


def _in(run: Run, key: str, lo: float, hi: float, shift: int = 0
        ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(steps, values) of ``key`` with step (shifted by ``shift``) in [lo, hi]."""
    s, v = run.values(key)
    s = s + shift
    sel = (s >= lo) & (s <= hi)
    return s[sel], v[sel]


def _span(t_star: int, lo: float, hi: float) -> str:
    return f"edge phase steps {lo:.0f}-{hi:.0f} (t*={t_star})"


@CLAIMS.register("cf_tracks")
def cf_tracks(run: Run, task: Task, flow: str = "central", close: float = 0.5,
              grow: float = 2.0, window: tuple[float, float] = (0.2, 1.0),
              min_points: int = 20) -> Verdict:  # fmt: skip
    """GD tracks the flow and leaves the other one (module docstring)."""
    name = _name("cf_tracks", flow)
    near, far = ("cf_dist", "gf_dist") if flow == "central" else ("gf_dist", "cf_dist")
    tol = f"max d(flow) <= {close} d(other)(end); d(other) grows >= {grow}x"
    kw = dict(tolerance=tol, citation=CITATION)
    phase = _phase(run, task, window)
    if isinstance(phase, str):
        return fail(name, phase, "never_reached", **kw)
    t_star, lo, hi = phase
    # the smoothed distances are recorded one step late: row t holds step t-1's
    s, d = _in(run, near, lo, hi, shift=-1)
    s2, d2 = _in(run, far, lo, hi, shift=-1)
    if len(d) < min_points or len(d2) < min_points:
        return fail(name, f"{len(d)} distances in the edge phase (need {min_points})",
                    "too_few_points", **kw)
    worst, other_end, other_start = float(d.max()), float(d2[-1]), float(d2[0])
    ratio = worst / other_end if other_end > 0 else float("inf")
    growth = other_end / other_start if other_start > 0 else float("inf")
    is_close, apart = ratio <= close, growth >= grow
    detail = (f"{_span(t_star, lo, hi)}: max ||w_GD - w_{flow[0].upper()}F|| = {worst:.4g} "
              f"(at step {int(s[d.argmax()])}) = {ratio:.3g} x the distance to the other flow at "
              f"the end, {other_end:.4g} (close {'ok' if is_close else 'NO'}); that distance "
              f"grew {growth:.3g}x from {other_start:.4g} (apart {'ok' if apart else 'NO'})")
    return Verdict(name, "PASS" if is_close and apart else "FAIL", measured=ratio,
                   target=close, detail=detail,
                   parts={"close": is_close, "apart": apart, "ratio": ratio, "growth": growth,
                          "t_star": t_star, "n_points": len(d)}, **kw)


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centered moving average over ``width`` consecutive values (NaN where the window does
    not fit); an even width averages a period-2 oscillation exactly."""
    out = np.full(len(values), np.nan)
    if width < 1 or len(values) < width:
        return out
    c = np.concatenate([[0.0], np.cumsum(values, dtype=float)])
    means = (c[width:] - c[:-width]) / width
    half = width // 2
    out[half:half + len(means)] = means
    return out


@CLAIMS.register("cf_predicts_loss")
def cf_predicts_loss(run: Run, task: Task, flow: str = "central", band: float = 0.05,
                     average: int = 20, window: tuple[float, float] = (0.2, 1.0),
                     min_points: int = 20) -> Verdict:  # fmt: skip
    """GD's time-averaged loss is the flow's prediction (module docstring)."""
    name = _name("cf_predicts_loss", flow)
    key = "cf_pred_loss" if flow == "central" else "gf_loss"
    tol = f"max |MA{average}(loss) - prediction| / prediction <= {band}"
    kw = dict(target=band, tolerance=tol, citation=CITATION)
    phase = _phase(run, task, window)
    if isinstance(phase, str):
        return fail(name, phase, "never_reached", **kw)
    t_star, lo, hi = phase
    ls, lv = run.values("train_loss")
    ma = moving_average(lv, average)
    ps, pv = _in(run, key, lo, hi)
    idx = np.searchsorted(ls, ps)
    ok_idx = (idx < len(ls)) & (ls[np.minimum(idx, len(ls) - 1)] == ps)
    ps, pv, idx = ps[ok_idx], pv[ok_idx], idx[ok_idx]
    m = ma[idx]
    fin = np.isfinite(m)
    if fin.sum() < min_points:
        return fail(name, f"{int(fin.sum())} averaged losses in the edge phase (need "
                    f"{min_points})", "too_few_points", **kw)
    rel = np.abs(m[fin] - pv[fin]) / pv[fin]
    worst, med = float(rel.max()), float(np.median(rel))
    i = int(rel.argmax())
    detail = (f"{_span(t_star, lo, hi)}: relative error of the predicted loss: max {worst:.3g} "
              f"(step {int(ps[fin][i])}: MA loss {m[fin][i]:.4g} vs {pv[fin][i]:.4g}), median "
              f"{med:.3g}, over {int(fin.sum())} steps")
    return Verdict(name, "PASS" if worst <= band else "FAIL", measured=worst, detail=detail,
                   parts={"within": worst <= band, "max": worst, "median": med,
                          "t_star": t_star, "n_points": int(fin.sum())}, **kw)


@CLAIMS.register("cf_pins_sharpness")
def cf_pins_sharpness(run: Run, task: Task, flow: str = "central", band: float = 0.01,
                      min_points: int = 5) -> Verdict:  # fmt: skip
    """The flow's sharpness stays at 2/lr once it gets there (module docstring)."""
    name = _name("cf_pins_sharpness", flow)
    T = 2.0 / task.optimizer.lr
    tol = f"|S_flow / (2/lr) - 1| <= {band} after onset"
    kw = dict(target=T, tolerance=tol, citation=CITATION)
    if run.status == "diverged":
        return fail(name, f"the run diverged at step {run.diverged_at}", "diverged", **kw)
    s, q = run.values("cf_sharpness" if flow == "central" else "gf_sharpness")
    on = np.nonzero(q >= (1 - band) * T)[0]
    if len(on) == 0:
        top = f"max {q.max():.4g}" if len(q) else "no series"
        return fail(name, f"the flow's sharpness never came within {band} of 2/lr={T:.4g} "
                    f"({top})", "never_reached", **kw)
    after = q[on[0]:] / T - 1
    if len(after) < min_points:
        return fail(name, f"{len(after)} points after onset (need {min_points})",
                    "too_few_points", **kw)
    worst = float(np.abs(after).max())
    i = int(np.abs(after).argmax())
    detail = (f"onset at step {int(s[on[0]])}; over {len(after)} points after it S/(2/lr) in "
              f"[{1 + after.min():.5f}, {1 + after.max():.5f}] (worst at step "
              f"{int(s[on[0] + i])})")
    return Verdict(name, "PASS" if worst <= band else "FAIL", measured=float(1 + after[i]) * T,
                   detail=detail, parts={"pinned": worst <= band, "max_deviation": worst,
                                         "onset": int(s[on[0]]), "n_points": len(after)}, **kw)


@CLAIMS.register("cf_oscillation")
def cf_oscillation(run: Run, task: Task, reference: str = "central",
                   band: tuple[float, float] = (0.5, 2.0), alternate: float = 0.9,
                   window: tuple[float, float] = (0.2, 1.0), min_points: int = 20
                   ) -> Verdict:  # fmt: skip
    """GD oscillates about the flow along its top eigenvector with variance sigma^2, period 2
    (module docstring)."""
    name = _name("cf_oscillation", reference)
    key = "ss_x" if reference == "central" else "ss_x_gf"
    tol = f"mean x^2 / mean sigma^2 in [{band[0]}, {band[1]}]; sign flips >= {alternate}"
    kw = dict(target=1.0, tolerance=tol, citation=CITATION)
    phase = _phase(run, task, window)
    if isinstance(phase, str):
        return fail(name, phase, "never_reached", **kw)
    t_star, lo, hi = phase
    xs, x = _in(run, key, lo, hi)
    _, sig = _in(run, "cf_sigma2", lo, hi)
    _, d2 = _in(run, "cf_delta2", lo, hi)
    if len(x) < min_points or len(sig) != len(x):
        return fail(name, f"{len(x)} displacements in the edge phase (need {min_points})",
                    "too_few_points", **kw)
    mean_sig = float(sig.mean())
    ratio = float(np.mean(x * x)) / mean_sig if mean_sig > 0 else float("inf")
    consecutive = np.diff(xs) == 1
    flips = float(np.mean((np.sign(x[1:]) != np.sign(x[:-1]))[consecutive]))
    d2_ratio = float(np.mean(x * x) / np.nanmean(d2)) if len(d2) and np.nanmean(d2) > 0 else None
    matches, period2 = band[0] <= ratio <= band[1], flips >= alternate
    detail = (f"{_span(t_star, lo, hi)}: mean x^2 = {np.mean(x * x):.4g}, mean sigma^2 = "
              f"{mean_sig:.4g}, ratio {ratio:.3g} (match {'ok' if matches else 'NO'})"
              + (f"; vs delta^2 = 2 alpha/beta: {d2_ratio:.3g}" if d2_ratio is not None else "")
              + f"; sign flips on {flips:.1%} of {int(consecutive.sum())} step pairs "
              f"(period 2 {'ok' if period2 else 'NO'})")
    return Verdict(name, "PASS" if matches and period2 else "FAIL", measured=ratio,
                   detail=detail, parts={"matches": matches, "period2": period2,
                                         "ratio": ratio, "flips": flips, "delta2_ratio": d2_ratio,
                                         "t_star": t_star, "n_points": len(x)}, **kw)


@CLAIMS.register("cf_smoothed_edge")
def cf_smoothed_edge(run: Run, task: Task, band: tuple[float, float] = (0.9, 1.1),
                     min_points: int = 5) -> Verdict:  # fmt: skip
    """The sharpness at the smoothed GD iterate hovers at 2/lr after t* (module docstring)."""
    name = "cf_smoothed_edge"
    T = 2.0 / task.optimizer.lr
    tol = f"median smoothed_sharpness/T in [{band[0]}, {band[1]}] from GD's t*"
    kw = dict(target=T, tolerance=tol, citation=CITATION)
    t_star = _gd_t_star(run, task)
    if isinstance(t_star, str):
        why = "diverged" if run.status == "diverged" else "never_reached"
        return fail(name, t_star, why, **kw)
    steps, q = run.values("sharpness")
    iterate = float(np.median(q[steps >= t_star] / T))
    s, v = run.values("smoothed_sharpness")
    after = v[s >= t_star] / T
    if len(after) < min_points:
        return fail(name, f"{len(after)} smoothed-iterate measurements after t*={t_star} "
                    f"(need {min_points})", "too_few_points", **kw)
    ratio = float(np.median(after))
    hovers = band[0] <= ratio <= band[1]
    detail = (f"t*={t_star}; median S(smoothed iterate)/T = {ratio:.4f} over {len(after)} "
              f"points (hover {'ok' if hovers else 'NO'}), range [{after.min():.3f}, "
              f"{after.max():.3f}]; the iterates' own median S/T over the same span "
              f"{iterate:.4f}")
    return Verdict(name, "PASS" if hovers else "FAIL", measured=ratio * T, detail=detail,
                   parts={"hovers": hovers, "ratio": ratio, "iterate_ratio": iterate,
                          "t_star": t_star, "n_points": len(after)}, **kw)

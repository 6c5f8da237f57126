"""The ``central_flow`` figure: GD against its central flow and gradient flow.

``central_flow.{png,pdf}``, written only when the runs carry the ``central_flow``
measurement (:mod:`eosbench.flow`): one row per task, three columns against the step --
(1) GD's training loss (thin), its centered moving average over 20 steps (the
``cf_predicts_loss`` claim's), the central flow's predicted time-averaged loss
:math:`L(w) + \\tfrac12\\langle\\Sigma, H\\rangle` and gradient flow's loss; (2) the
sharpness of GD and of the central flow with :math:`2/\\eta` (gradient flow's where probed);
(3) the distance of the smoothed GD iterate to each flow.  The first seed of each task is
drawn, the others' curves of column 1 thin and faint.  Deterministic like the other figures
(:mod:`.figures`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..record import Run
from .figures import _load, _save, _style

AVERAGE = 20  # steps of the moving average (the claim's default)


def write_flow_figures(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write ``central_flow.{png,pdf}`` into ``out`` when a run has a central-flow series;
    return the files written (none otherwise)."""
    import matplotlib.pyplot as plt

    from ..claims.flow import moving_average

    by_task: dict[str, list[Run]] = defaultdict(list)
    for r in _load(runs):
        if r.task.measurement("central_flow") is not None and r.values("cf_loss")[0].size:
            by_task[r.task.name].append(r)
    if not by_task:
        return []
    tasks = sorted(by_task)
    with _style():
        fig, axes = plt.subplots(len(tasks), 3, figsize=(13, 3.4 * len(tasks)), squeeze=False)
        for row, name in zip(axes, tasks, strict=True):
            rs = sorted(by_task[name], key=lambda r: r.seed)
            r = rs[0]
            edge = 2.0 / r.task.optimizer.lr
            ls, lv = r.values("train_loss")
            row[0].plot(ls, lv, color="0.6", lw=0.4, label="GD loss")
            row[0].plot(ls, moving_average(lv, AVERAGE), color="C0", lw=1.2,
                        label=f"GD loss, moving average ({AVERAGE} steps)")
            row[0].plot(*r.values("cf_pred_loss"), color="C3", lw=1.2, ls="--",
                        label="central flow: predicted average loss")
            row[0].plot(*r.values("gf_loss"), color="C2", lw=1.0, ls=":",
                        label="gradient flow loss")
            for other in rs[1:]:
                s, v = other.values("train_loss")
                row[0].plot(s, moving_average(v, AVERAGE), color="C0", lw=0.5, alpha=0.4)
                row[0].plot(*other.values("cf_pred_loss"), color="C3", lw=0.5, alpha=0.4,
                            ls="--")
            row[0].set_yscale("log")
            row[0].set_ylabel("training loss")
            row[1].plot(*r.values("sharpness"), color="C0", lw=0.6, label="GD sharpness")
            row[1].plot(*r.values("cf_sharpness"), color="C3", lw=1.2, ls="--",
                        label="central flow sharpness")
            row[1].plot(*r.values("gf_sharpness"), color="C2", lw=1.0, ls=":",
                        label="gradient flow sharpness")
            row[1].axhline(edge, color="black", lw=0.8, ls="-.", label=r"$2/\eta$")
            row[1].set_ylabel("sharpness")
            s, d = r.values("cf_dist")
            row[2].plot(s - 1, d, color="C3", lw=1.0, label="to the central flow")
            s, d = r.values("gf_dist")
            row[2].plot(s - 1, d, color="C2", lw=1.0, label="to gradient flow")
            row[2].set_ylabel(r"$\|\bar w_t - w(t)\|$, $\bar w_t$ smoothed GD")
            for ax in row:
                ax.set_xlabel("step")
                ax.legend(fontsize=6, loc="best")
            row[1].set_title(f"{name}, seed {r.seed}" + (f" (+{len(rs) - 1} seeds in col. 1)"
                             if len(rs) > 1 else ""), fontsize=8)  # fmt: skip
        fig.tight_layout()
        return _save(fig, Path(out), "central_flow")

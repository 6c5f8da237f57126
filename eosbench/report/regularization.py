"""The ``hessian_parts`` figure: the Hessian's two parts along training.

``hessian_parts.{png,pdf}``, written only when the runs measured the sharpness with ``split``
(``sharpness_nme_share``): the share of the sharpness that the nonlinear modeling error
carries, :math:`|v^\\top N v|/\\lambda_{\\max}` along the top Hessian eigenvector (log scale),
and the training loss, against the step, one colour per task, its first seed solid and the
others thin (the ``nme_vanishes`` claim, :mod:`eosbench.claims.regularization`).
Deterministic like the other figures (:mod:`.figures`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..record import Run
from .figures import _load, _palette, _save, _style

KEY = "sharpness_nme_share"


def write_regularization_figures(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write ``hessian_parts.{png,pdf}`` into ``out`` when a run measured the split; return
    the files written (none otherwise)."""
    import matplotlib.pyplot as plt
    import numpy as np

    by_task: dict[str, list[Run]] = defaultdict(list)
    for r in _load(runs):
        if r.values(KEY)[1].size:
            by_task[r.task.name].append(r)
    if not by_task:
        return []
    tasks = sorted(by_task)
    colours = dict(zip(tasks, _palette(len(tasks)), strict=True))
    with _style():
        fig, (share_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
        for name in tasks:
            for i, r in enumerate(sorted(by_task[name], key=lambda r: r.seed)):
                style = {"color": colours[name], "lw": 1.0 if i == 0 else 0.5,
                         "alpha": 1.0 if i == 0 else 0.5,
                         "label": f"{r.task.loss}: {name}" if i == 0 else None}  # fmt: skip
                s, share = r.values(KEY)
                share_ax.plot(s, np.maximum(np.abs(share), 1e-6), **style)
                ls, lv = r.values("train_loss")
                loss_ax.plot(ls, lv, **style)
        share_ax.set_yscale("log")
        share_ax.set_ylabel(r"NME share $|v^\top N v|/\lambda_{\max}$")
        loss_ax.set_yscale("log")
        loss_ax.set_ylabel("train loss")
        for ax in (share_ax, loss_ax):
            ax.set_xlabel("step")
        loss_ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return _save(fig, Path(out), "hessian_parts")

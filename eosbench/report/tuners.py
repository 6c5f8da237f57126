"""The ``tuners`` figure: step size, sharpness and normalized sharpness of step-size tuners.

``tuners.{png,pdf}``, written only when the runs include a tuned optimizer
(:data:`TUNED`: ``armijo``, ``polyak``, ``cdat``): one row per data set, three columns --
the step taken (``lr``, log scale; its mean over each measurement interval, as the
claims take it: a per-step curve of an alternating step is a solid band), the sharpness :math:`\\lambda_{\\max}`
and :math:`\\eta_t\\lambda_{\\max}/2` (:func:`eosbench.claims.tuners.normalized_sharpness`)
with the edge at 1 drawn -- against the step, every task of that data set in the panel (the
tuners and any constant-step task beside them), one colour per task, its first seed solid
and the others thin.  Deterministic like the other figures (:mod:`.figures`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..record import Run
from .figures import _load, _palette, _save, _style

TUNED = ("armijo", "polyak", "cdat")
NORMALIZED_YMAX = 3.0  # e above this is clipped (one wild step must not flatten the rest)


def _label(run: Run) -> str:
    from ..optim import label

    o = run.task.optimizer
    text = label(o)
    if o.name in TUNED:  # label() ends with the cap, which is not the step taken
        text = text.rsplit(", $\\eta$=", 1)[0]
    return text


def write_tuner_figures(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write ``tuners.{png,pdf}`` into ``out`` when a run of a tuned optimizer is present;
    return the files written (none otherwise)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..claims.tuners import normalized_sharpness

    loaded = _load(runs)
    datasets = sorted({r.task.data.name for r in loaded if r.task.optimizer.name in TUNED})
    if not datasets:
        return []
    by_data: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in loaded:
        if r.task.data.name in datasets:
            by_data[r.task.data.name][r.task.name].append(r)
    with _style():
        fig, axes = plt.subplots(len(datasets), 3, figsize=(12, 3.2 * len(datasets)),
                                 squeeze=False)  # fmt: skip
        for row, ds in zip(axes, datasets, strict=True):
            tasks = sorted(by_data[ds])
            colours = dict(zip(tasks, _palette(len(tasks)), strict=True))
            for name in tasks:
                for i, r in enumerate(by_data[ds][name]):
                    style = {"color": colours[name], "lw": 1.0 if i == 0 else 0.5,
                             "alpha": 1.0 if i == 0 else 0.5,
                             "label": _label(r) if i == 0 else None}  # fmt: skip
                    es, e, q = normalized_sharpness(r, r.task)
                    row[0].plot(es, 2 * e / q, **style)  # the mean step the claims use
                    qs, q = r.values("sharpness")
                    row[1].plot(qs, q, **style)
                    row[2].plot(es, np.minimum(e, NORMALIZED_YMAX), **style)
            row[0].set_yscale("log")
            row[0].set_ylabel(r"step size $\bar\eta_t$ (mean over the interval)")
            row[1].set_ylabel(r"sharpness $\lambda_{\max}$")
            row[2].axhline(1.0, color="black", ls="--", lw=0.9)
            row[2].set_ylabel(r"$\eta_t\lambda_{\max}/2$ (edge: 1)")
            row[2].set_ylim(0, None)
            for ax in row:
                ax.set_xlabel("step")
                ax.set_title(ds, fontsize=8)
            row[2].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        return _save(fig, Path(out), "tuners")

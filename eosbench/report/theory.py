"""The ``theory`` figure: the solvable models against their predictions.

``theory.{png,pdf}``, written only when the runs include support-learning runs (an
``irrelevant_ratio`` series) or streaming least-squares runs (a ``risk`` series): one panel
for support learning (the irrelevant first-layer weights' norm over its initial value,
against the step, one colour per task) and one per streaming noise law (the excess risk
against :math:`t = k/d`, each run thin, and each task's risk ODE of
:mod:`eosbench.claims.streaming` dashed in the same colour, where it has one: a streaming run
of another optimizer is drawn without).  Deterministic like the other
figures (:mod:`.figures`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..record import Run
from .figures import _load, _palette, _save, _style


def _label(run: Run) -> str:
    o = run.task.optimizer
    if run.task.data.name.startswith("stream-"):
        return "/".join(run.task.name.split("/")[-2:])  # e.g. clipped-sgd/eta=0.25,c=1.5
    text = "GD" if o.batch_size is None else f"SGD, b={o.batch_size}"
    return text + (f", wd={o.weight_decay:g}" if o.weight_decay else "")


def write_theory_figures(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write ``theory.{png,pdf}`` into ``out`` when support or streaming runs are present;
    return the files written (none otherwise)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..claims.streaming import risk_curve, task_setting
    from ..data.synthetic import STREAM_D

    loaded = _load(runs)
    panels: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in loaded:
        if "irrelevant_ratio" in r.keys:
            panels["support"][r.task.name].append(r)
        elif "risk" in r.keys and r.task.data.name.startswith("stream-"):
            panels[r.task.data.name][r.task.name].append(r)
    if not panels:
        return []
    names = sorted(panels, key=lambda p: (p != "support", p))
    with _style():
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, panel in zip(axes[0], names, strict=True):
            tasks = sorted(panels[panel])
            colours = dict(zip(tasks, _palette(len(tasks)), strict=True))
            for name in tasks:
                group = panels[panel][name]
                for i, r in enumerate(group):
                    key = "irrelevant_ratio" if panel == "support" else "risk"
                    s, v = r.values(key)
                    x = s if panel == "support" else s / STREAM_D
                    ax.plot(x, v, color=colours[name], lw=0.8, alpha=1.0 if i == 0 else 0.5,
                            label=_label(r) if i == 0 else None)  # fmt: skip
                if panel != "support":
                    try:
                        rule, eta, c, d, law = task_setting(group[0].task)
                    except ValueError:  # no ODE for this optimizer or setting
                        continue
                    s, v = group[0].values("risk")
                    t = np.linspace(0, s[-1] / d, 200)
                    ax.plot(t, risk_curve(rule, float(v[0]), t, eta, law, c), color=colours[name],
                            ls="--", lw=1.2)  # fmt: skip
            if panel == "support":
                ax.set_xlabel("step")
                ax.set_ylabel(r"$\|W_1[:, \mathrm{irrelevant}]\|_F$ / initial")
                ax.set_title("support learning (arXiv:2406.11110)", fontsize=8)
            else:
                ax.set_xlabel(r"$t = k/d$")
                ax.set_ylabel(r"excess risk $R$ (dashed: ODE)")
                ax.set_yscale("log")
                ax.set_title(f"streaming least squares, {panel}", fontsize=8)
            ax.legend(fontsize=6, loc="upper right")
        fig.tight_layout()
        return _save(fig, Path(out), "theory")

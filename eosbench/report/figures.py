"""Figures (seaborn/matplotlib, PNG and PDF) of recorded runs.

``sharpness.{png,pdf}``: one column per task; top row the curvature quantities
recorded (sharpness, batch sharpness, preconditioned sharpness) against the
step with the optimizer's threshold drawn as a dashed line; bottom row the
training loss on a log scale.  One line per seed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import store  # noqa: E402
from ..claims import Trajectory  # noqa: E402
from ..task import from_dict  # noqa: E402

QUANTITIES = ("sharpness", "batch_sharpness", "preconditioned_sharpness")
MAX_COLUMNS = 4


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(
        paths[1],
        bbox_inches="tight",
        metadata={"CreationDate": None, "Creator": None, "Producer": None},
    )
    plt.close(fig)
    return paths


def write_figures(runs, out: Path) -> list[Path]:
    from .tables import _threshold

    by_task: dict[str, list[tuple[int, Trajectory]]] = defaultdict(list)
    tasks = {}
    for r in runs:
        meta = store.read_json(Path(r) / store.RUN_FILE)
        task = from_dict(meta["task"])
        tasks[task.name] = task
        by_task[task.name].append((meta["seed"], Trajectory.from_run(Path(r))))
    names = sorted(by_task)
    if not names:
        return []
    sns.set_theme(style="whitegrid", context="paper")
    ncol = min(MAX_COLUMNS, len(names))
    nblocks = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(
        2 * nblocks, ncol, figsize=(3.6 * ncol, 4.6 * nblocks), squeeze=False
    )
    palette = sns.color_palette("colorblind")
    for i, name in enumerate(names):
        ax_q, ax_l = axes[2 * (i // ncol), i % ncol], axes[2 * (i // ncol) + 1, i % ncol]
        ax_l.sharex(ax_q)
        thr = _threshold(tasks[name])
        for j, q in enumerate(QUANTITIES):
            for k, (_, traj) in enumerate(sorted(by_task[name], key=lambda st: st[0])):
                s, v = traj.values(q)
                if len(v):
                    ax_q.plot(
                        s,
                        v,
                        color=palette[j],
                        alpha=0.9 - 0.2 * min(k, 3),
                        lw=1,
                        label=f"{q.replace('_', ' ')}" if k == 0 else None,
                    )
        levels = []
        if thr is not None:
            ax_q.axhline(thr[1], ls="--", color="k", lw=0.8, label=f"threshold {thr[1]:.3g}")
            levels.append(thr[1])
        opt = tasks[name].optimizer
        if opt.batch_size and opt.momentum > 0:  # momentum EoSS levels (Andreyev et al. 2026)
            for level, ls, text in ((2 * (1 - opt.momentum) / opt.lr, ":", "2(1-b)/lr"),
                                    (2 * (1 + opt.momentum) / opt.lr, "-.", "2(1+b)/lr")):
                ax_q.axhline(level, ls=ls, color="grey", lw=0.8, label=f"{text} {level:.3g}")
                levels.append(level)
        data_max = max((v.max() for _, t in by_task[name] for q in QUANTITIES
                        if len(v := t.values(q)[1])), default=None)
        if levels and data_max is not None:  # a far-away level must not flatten the curves
            ax_q.set_ylim(bottom=min(0.0, ax_q.get_ylim()[0]) if data_max < 0 else 0.0,
                          top=1.15 * max(data_max, min(levels)))
        for k, (seed, traj) in enumerate(sorted(by_task[name], key=lambda st: st[0])):
            s, v = traj.values("train_loss")  # full-batch loss (every step for GD, on eval for SGD)
            keep = v > 0
            sparse = len(v) < 200
            ax_l.plot(s[keep], v[keep], lw=0.8, color=palette[k % len(palette)],
                      marker="o" if sparse else None, ms=2.5, label=f"seed {seed}")
        if any(len(t.values("train_loss")[1]) for _, t in by_task[name]):
            ax_l.set_yscale("log")
        ax_q.set_title(name, fontsize=7)
        ax_q.legend(fontsize=6, loc="lower right")
        ax_l.set_xlabel("step")
        if i % ncol == 0:
            ax_q.set_ylabel("curvature")
            ax_l.set_ylabel("train loss")
    for i in range(len(names), nblocks * ncol):
        axes[2 * (i // ncol), i % ncol].axis("off")
        axes[2 * (i // ncol) + 1, i % ncol].axis("off")
    fig.tight_layout()
    return _save(fig, out, "sharpness")

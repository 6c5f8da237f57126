"""Figures (seaborn/matplotlib, PNG and PDF) of recorded runs.

Each figure is written as ``<stem>.png`` and ``<stem>.pdf`` when the runs hold the data
it needs, and not at all (no empty file) otherwise:

``sharpness``
    One column per task; top row the curvature quantities recorded (sharpness, batch
    sharpness, preconditioned sharpness) against the step with the optimizer's threshold
    drawn as a dashed line; bottom row the training loss on a log scale.  One line per
    seed.
``normalized``
    The quantity each run's stability threshold bounds (the sharpness
    :math:`\\lambda_{\\max}(H)`, or :math:`\\lambda_{\\max}(P^{-1}H)` for adaptive
    methods) divided by that threshold :math:`T` (``2/lr`` for GD), against the time
    :math:`\\eta t` (step times the optimizer's base step size), one colour per task and
    one line per seed; for stochastic runs also the batch sharpness over the same
    :math:`T` (dashed).  Runs at the edge of stability collapse onto :math:`q/T = 1`.
    Needs a run with a threshold and the quantity it bounds recorded
    (:func:`normalized_data`).
``final_vs_batch_size``
    For completed runs of stochastic methods (``optimizer.batch_size`` set): the final
    batch sharpness and sharpness (mean over the last 20% of the run's steps) against the
    batch size on a log axis; one series per task family (the task up to its batch size,
    labelled by optimizer and step size), mean and standard error over seeds, each
    series' threshold as a dashed horizontal line (:func:`final_vs_batch_size_data`,
    :func:`final_vs_batch_size_summary`).
``spectrum``
    Where a sharpness measurement recorded its top ``k > 1`` eigenvalues
    (``sharpness_eig2``, ...): each eigenvalue against the step, one panel per task and
    quantity, the task's first seed, with the threshold (:func:`spectrum_data`).

Rendering is deterministic: a fixed style independent of the caller's ``rcParams``,
TrueType fonts embedded in the PDF (``pdf.fonttype`` 42), no creation date or software
version in the metadata; the same runs give byte-identical files.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from .. import store  # noqa: E402
from ..claims.eos import constant_threshold as _threshold  # noqa: E402
from ..optim import label  # noqa: E402
from ..optim.thresholds import BATCH_TARGETS, MOMENTUM_BATCH_TARGETS  # noqa: E402
from ..record import Run  # noqa: E402
from ..task import Task, canonical_json, to_dict  # noqa: E402

QUANTITIES = ("sharpness", "batch_sharpness", "preconditioned_sharpness")
TOP_K_QUANTITIES = ("sharpness", "preconditioned_sharpness")
MAX_COLUMNS = 4
FINAL_WINDOW = 0.2  # fraction of a run's steps over which "final" values are averaged
NORMALIZED_YMAX = 3.0  # q/T above this is clipped (a diverging run must not flatten the rest)
RC = {"pdf.fonttype": 42, "ps.fonttype": 42}  # embedded TrueType fonts, editable text

MATRIX = {"sharpness": "$H$", "preconditioned_sharpness": "$P^{-1}H$"}


def _load(runs: Iterable[Run]) -> list[Run]:
    """The runs with their series, sorted by task name and seed."""
    return sorted(
        (r for r in runs if r.has_series), key=lambda x: (x.task.name, x.seed, str(x.id))
    )


@contextmanager
def _style():
    """matplotlib's defaults, the seaborn paper theme and :data:`RC`, whatever the
    caller's ``rcParams``; restored on exit."""
    with plt.style.context("default"):
        sns.set_theme(style="whitegrid", context="paper")
        plt.rcParams.update(RC)
        yield


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path, kw in (
        (paths[0], {"format": "png", "dpi": 130, "metadata": {"Software": None}}),
        (
            paths[1],
            {
                "format": "pdf",
                "metadata": {"CreationDate": None, "Creator": None, "Producer": None},
            },
        ),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, bbox_inches="tight", **kw)
        store.atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return paths


def _palette(n: int) -> list:
    return sns.color_palette("colorblind" if n <= 10 else "husl", max(n, 1))


def write_figures(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write every figure the runs have data for into ``out``; return the files written."""
    loaded = _load(runs)
    if not loaded:
        return []
    out = Path(out)
    written: list[Path] = []
    with _style():
        written += _plot_sharpness(loaded, out)
        written += plot_normalized(normalized_data(loaded), out)
        written += plot_final_vs_batch_size(
            final_vs_batch_size_summary(final_vs_batch_size_data(loaded)), out
        )
        written += plot_spectrum(spectrum_data(loaded), out)
    return written


# --- sharpness.{png,pdf} -------------------------------------------------------------------------


def _plotted(task: Task) -> tuple[str, ...]:
    r"""The curvature quantities of ``task``'s panel: :data:`QUANTITIES`, or only the quantity
    its optimizer's threshold bounds where that is another one (a generalized sharpness,
    whose scale is not that of :math:`\lambda_{\max}`)."""
    thr = _threshold(task)
    return (thr[0],) if thr is not None and thr[0] not in QUANTITIES else QUANTITIES


def _plot_sharpness(loaded: Sequence[Run], out: Path) -> list[Path]:
    """One panel pair per task that measured a curvature quantity (:func:`_plotted`)."""
    by_task: dict[str, list[tuple[int, Run]]] = defaultdict(list)
    tasks = {}
    for r in loaded:
        if not any(q in r.keys for q in _plotted(r.task)):  # e.g. a solvable model's series
            continue
        tasks[r.task.name] = r.task
        by_task[r.task.name].append((r.seed, r))
    names = sorted(by_task)
    if not names:
        return []
    ncol = min(MAX_COLUMNS, len(names))
    nblocks = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(2 * nblocks, ncol, figsize=(3.6 * ncol, 4.6 * nblocks), squeeze=False)
    palette = sns.color_palette("colorblind")
    for i, name in enumerate(names):
        ax_q, ax_l = axes[2 * (i // ncol), i % ncol], axes[2 * (i // ncol) + 1, i % ncol]
        ax_l.sharex(ax_q)
        thr = _threshold(tasks[name])
        plotted = _plotted(tasks[name])
        for j, q in enumerate(plotted):
            for k, (_, run) in enumerate(sorted(by_task[name], key=lambda st: st[0])):
                s, v = run.values(q)
                if len(v):
                    ax_q.plot(
                        s,
                        v,
                        color=palette[j],
                        alpha=0.9 - 0.2 * min(k, 3),
                        lw=1,
                        marker="o" if len(v) < 5 else None,  # e.g. measured at the end only
                        ms=3,
                        label=f"{q.replace('_', ' ')}" if k == 0 else None,
                    )
        levels = []
        if thr is not None:
            ax_q.axhline(thr[1], ls="--", color="k", lw=0.8, label=f"threshold {thr[1]:.3g}")
            levels.append(thr[1])
        opt = tasks[name].optimizer
        constant_lr = tasks[name].schedule.lr_schedule == "constant"
        if (
            constant_lr and opt.batch_size and opt.momentum > 0
        ):  # momentum EoSS levels (Andreyev et al. 2026)
            for name_, ls in zip(MOMENTUM_BATCH_TARGETS, (":", "-."), strict=True):
                t = BATCH_TARGETS[name_]
                level = t.level(opt.lr, opt.momentum)
                ax_q.axhline(level, ls=ls, color="grey", lw=0.8, label=f"{t.formula} {level:.3g}")
                levels.append(level)
        data_max = max(
            (v.max() for _, t in by_task[name] for q in plotted if len(v := t.values(q)[1])),
            default=None,
        )
        if levels and data_max is not None:  # a far-away level must not flatten the curves
            ax_q.set_ylim(
                bottom=min(0.0, ax_q.get_ylim()[0]) if data_max < 0 else 0.0,
                top=1.15 * max(data_max, min(levels)),
            )
        for k, (seed, run) in enumerate(sorted(by_task[name], key=lambda st: st[0])):
            s, v = run.values("train_loss")  # full-batch loss (every step for GD, on eval for SGD)
            keep = v > 0
            sparse = len(v) < 200
            ax_l.plot(
                s[keep],
                v[keep],
                lw=0.8,
                color=palette[k % len(palette)],
                marker="o" if sparse else None,
                ms=2.5,
                label=f"seed {seed}",
            )
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


# --- normalized.{png,pdf} ------------------------------------------------------------------------

NORMALIZED_COLUMNS = [
    "task",
    "seed",
    "quantity",
    "step",
    "time",
    "value",
    "threshold",
    "normalized",
]


def normalized_data(runs) -> pd.DataFrame:
    """One row per recorded value of the quantity each run's threshold bounds (and, for
    runs with ``optimizer.batch_size``, of ``batch_sharpness``): ``value`` over the
    declared ``threshold`` :math:`T` as ``normalized``, at ``time`` = step x ``optimizer.lr``
    (the base step size: a learning-rate schedule is not integrated).  Runs without a
    closed-form threshold are left out."""
    rows = []
    for r in _load(runs):
        thr = _threshold(r.task)
        if thr is None or not thr[1] > 0:
            continue
        quantities = [thr[0]]
        if r.task.optimizer.batch_size and thr[0] != "batch_sharpness":
            quantities.append("batch_sharpness")
        for q in quantities:
            steps, vals = r.values(q)
            for s, v in zip(steps, vals, strict=True):
                rows.append(
                    {
                        "task": r.task.name,
                        "seed": r.seed,
                        "quantity": q,
                        "step": int(s),
                        "time": float(s) * r.task.optimizer.lr,
                        "value": float(v),
                        "threshold": thr[1],
                        "normalized": float(v) / thr[1],
                    }
                )
    df = pd.DataFrame(rows, columns=NORMALIZED_COLUMNS)
    return df.sort_values(["task", "seed", "quantity", "step"], kind="stable").reset_index(
        drop=True
    )


def plot_normalized(df: pd.DataFrame, out: Path) -> list[Path]:
    """``normalized.{png,pdf}`` from :func:`normalized_data`; nothing for an empty frame."""
    if df.empty:
        return []
    names = sorted(df["task"].unique())
    colors = dict(zip(names, _palette(len(names)), strict=False))
    horizon = df.groupby("task")["time"].max()
    log_x = horizon.min() > 0 and horizon.max() / horizon.min() > 10  # very different horizons
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for (name, seed, q), g in df.groupby(["task", "seed", "quantity"], sort=True):
        if log_x:
            g = g[g["time"] > 0]
        first_seed = seed == df.loc[df["task"] == name, "seed"].min()
        ax.plot(
            g["time"],
            g["normalized"],
            color=colors[name],
            ls="--" if q == "batch_sharpness" else "-",
            lw=0.9,
            alpha=0.9 if first_seed else 0.5,
            label=name if first_seed and q != "batch_sharpness" else None,
        )
    ax.axhline(1.0, color="k", ls=":", lw=1.0, label="$q/T = 1$")
    if log_x:
        ax.set_xscale("log")
    top = min(max(float(df["normalized"].max()), 1.0), NORMALIZED_YMAX)
    ax.set_ylim(bottom=min(0.0, 1.1 * float(df["normalized"].min())), top=1.1 * top)
    ax.set_xlabel(r"time $\eta t$ (step $\times$ step size)")
    ax.set_ylabel(r"sharpness / threshold  $q/T$")
    handles, labels = ax.get_legend_handles_labels()
    if (df["quantity"] == "batch_sharpness").any():
        handles += [
            Line2D([], [], color="grey", ls="-", lw=0.9),
            Line2D([], [], color="grey", ls="--", lw=0.9),
        ]
        labels += ["full-batch " + r"$\lambda_{\max}$", "batch sharpness"]
    ax.legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save(fig, out, "normalized")


# --- final_vs_batch_size.{png,pdf} ---------------------------------------------------------------

FINAL_COLUMNS = [
    "task",
    "seed",
    "series",
    "batch_size",
    "lr",
    "threshold",
    "quantity",
    "final",
    "n_values",
]
FINAL_QUANTITIES = ("batch_sharpness", "sharpness")


def _series_key(task: Task) -> str:
    """The task up to its batch size (and prose, claims, seeds, measurements, length)."""
    t = replace(
        task,
        name="",
        description="",
        reference="",
        claims=(),
        seeds=(),
        measurements=(),
        optimizer=replace(task.optimizer, batch_size=None),
        schedule=replace(task.schedule, steps=None, epochs=None),
    )
    return canonical_json(to_dict(t))


def _series_labels(tasks: Sequence[Task]) -> dict[str, str]:
    """A readable, unique label per series key: the optimizer family and step size, with
    the data/model/loss part of the task name where that alone is ambiguous."""
    first: dict[str, Task] = {}
    for t in sorted(tasks, key=lambda t: t.name):
        first.setdefault(_series_key(t), t)
    family = {k: label(t.optimizer) for k, t in first.items()}
    count = defaultdict(int)
    for v in family.values():
        count[v] += 1
    labels = {
        k: ("/".join(t.name.split("/")[:3]) + ": " if count[family[k]] > 1 else "") + family[k]
        for k, t in first.items()
    }
    seen: dict[str, int] = defaultdict(int)
    for k in sorted(labels):
        seen[labels[k]] += 1
        if seen[labels[k]] > 1:
            labels[k] += f" ({seen[labels[k]]})"
    return labels


def final_value(run: Run, quantity: str, window: float = FINAL_WINDOW):
    """(mean, count) of ``quantity`` over the recorded steps in the last ``window`` of the
    run (steps >= (1 - window) x last step), or None if none was recorded there."""
    if not 0 < window <= 1:
        raise ValueError(f"window={window!r}: expected a fraction in (0, 1]")
    steps, vals = run.values(quantity)
    keep = steps >= (1.0 - window) * run.last_step
    if not keep.any():
        return None
    return float(vals[keep].mean()), int(keep.sum())


def final_vs_batch_size_data(runs, window: float = FINAL_WINDOW) -> pd.DataFrame:
    """One row per completed stochastic run (``optimizer.batch_size`` set) and quantity
    (``batch_sharpness``, ``sharpness``) recorded: its final value, the mean over the last
    ``window`` of the run's steps (:func:`final_value`).  ``series`` groups the tasks that
    differ only in batch size (and run length); ``threshold`` is the declared one (NaN
    where none exists)."""
    loaded = [r for r in _load(runs) if r.task.optimizer.batch_size and r.status == "completed"]
    labels = _series_labels([r.task for r in loaded])
    rows = []
    for r in loaded:
        thr = _threshold(r.task)
        for q in FINAL_QUANTITIES:
            fv = final_value(r, q, window)
            if fv is None:
                continue
            rows.append(
                {
                    "task": r.task.name,
                    "seed": r.seed,
                    "series": labels[_series_key(r.task)],
                    "batch_size": int(r.task.optimizer.batch_size),
                    "lr": r.task.optimizer.lr,
                    "threshold": thr[1] if thr is not None else math.nan,
                    "quantity": q,
                    "final": fv[0],
                    "n_values": fv[1],
                }
            )
    df = pd.DataFrame(rows, columns=FINAL_COLUMNS)
    return df.sort_values(["series", "quantity", "batch_size", "seed"], kind="stable").reset_index(
        drop=True
    )


def final_vs_batch_size_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error (ddof 1; 0 for one seed) and number of seeds of ``final`` per
    series, quantity and batch size."""
    cols = ["series", "quantity", "batch_size", "threshold", "mean", "sem", "n_seeds"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(["series", "quantity", "batch_size"], sort=True)
    out = g.agg(
        threshold=("threshold", "first"),
        mean=("final", "mean"),
        std=("final", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0),
        n_seeds=("final", "size"),
    ).reset_index()
    out["sem"] = out["std"] / np.sqrt(out["n_seeds"])
    return out[cols]


def plot_final_vs_batch_size(summary: pd.DataFrame, out: Path) -> list[Path]:
    """``final_vs_batch_size.{png,pdf}`` from :func:`final_vs_batch_size_summary`."""
    if summary.empty:
        return []
    quantities = [q for q in FINAL_QUANTITIES if (summary["quantity"] == q).any()]
    series = sorted(summary["series"].unique())
    colors = dict(zip(series, _palette(len(series)), strict=False))
    sizes = sorted(int(b) for b in summary["batch_size"].unique())
    fig, axes = plt.subplots(
        1, len(quantities), figsize=(3.4 * len(quantities), 3.0), sharey=True, squeeze=False
    )
    ylabel = {
        "batch_sharpness": "final batch sharpness",
        "sharpness": r"final sharpness $\lambda_{\max}(H)$",
    }
    for ax, q in zip(axes[0], quantities, strict=True):
        for s in series:
            g = summary[(summary["series"] == s) & (summary["quantity"] == q)]
            if g.empty:
                continue
            ax.errorbar(
                g["batch_size"],
                g["mean"],
                yerr=g["sem"],
                color=colors[s],
                marker="o",
                ms=3.5,
                lw=1.0,
                capsize=2.5,
                label=s,
            )
        for s in series:
            thr = summary.loc[summary["series"] == s, "threshold"].dropna()
            if len(thr):
                ax.axhline(float(thr.iloc[0]), color=colors[s], ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(b) for b in sizes])
        ax.set_xlabel("batch size $b$")
        ax.set_ylabel(ylabel[q])
        ax.set_ylim(bottom=0.0)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if summary["threshold"].notna().any():
        handles.append(Line2D([], [], color="grey", ls="--", lw=0.8))
        labels.append(r"threshold $T$ (2/$\eta$ for SGD)")
    axes[0, -1].legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return _save(fig, out, "final_vs_batch_size")


# --- spectrum.{png,pdf} --------------------------------------------------------------------------

SPECTRUM_COLUMNS = ["task", "seed", "quantity", "rank", "step", "value", "threshold"]


def spectrum_data(runs) -> pd.DataFrame:
    """One row per recorded eigenvalue (``rank`` 1 = ``<quantity>``, 2 = ``<quantity>_eig2``,
    ...) of every quantity recorded with ``k > 1`` eigenvalues, for each task's first
    (lowest) seed; ``threshold`` where it bounds that quantity, else NaN."""
    rows = []
    done: set[str] = set()
    for r in _load(runs):  # sorted by task and seed: the first seed comes first
        if r.task.name in done:
            continue
        keys = set(r.keys)
        found = False
        for q in TOP_K_QUANTITIES:
            k = 1
            while f"{q}_eig{k + 1}" in keys:
                k += 1
            if k < 2:
                continue
            found = True
            thr = _threshold(r.task)
            t = thr[1] if thr is not None and thr[0] == q else math.nan
            for rank in range(1, k + 1):
                steps, vals = r.values(q if rank == 1 else f"{q}_eig{rank}")
                for s, v in zip(steps, vals, strict=True):
                    rows.append(
                        {
                            "task": r.task.name,
                            "seed": r.seed,
                            "quantity": q,
                            "rank": rank,
                            "step": int(s),
                            "value": float(v),
                            "threshold": t,
                        }
                    )
        if found:
            done.add(r.task.name)
    df = pd.DataFrame(rows, columns=SPECTRUM_COLUMNS)
    return df.sort_values(["task", "quantity", "rank", "step"], kind="stable").reset_index(
        drop=True
    )


def plot_spectrum(df: pd.DataFrame, out: Path) -> list[Path]:
    """``spectrum.{png,pdf}`` from :func:`spectrum_data`; nothing for an empty frame."""
    if df.empty:
        return []
    panels = list(df.groupby(["task", "quantity"], sort=True))
    ncol = min(MAX_COLUMNS, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), squeeze=False)
    for i, ((task, q), g) in enumerate(panels):
        ax = axes[i // ncol, i % ncol]
        k = int(g["rank"].max())
        colors = sns.color_palette("viridis", k)
        for rank, gr in g.groupby("rank", sort=True):
            ax.plot(
                gr["step"], gr["value"], color=colors[rank - 1], lw=1.0, label=rf"$\lambda_{rank}$"
            )
        thr = g["threshold"].dropna()
        if len(thr):
            t = float(thr.iloc[0])
            ax.axhline(t, color="k", ls="--", lw=0.8, label=f"$T$ = {t:.3g}")
        ax.set_title(f"{task} (seed {int(g['seed'].iloc[0])})", fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel(f"top eigenvalues of {MATRIX[q]}")
        ax.legend(fontsize=6, loc="best", ncol=2 if k > 4 else 1)
    for i in range(len(panels), nrow * ncol):
        axes[i // ncol, i % ncol].axis("off")
    fig.tight_layout()
    return _save(fig, out, "spectrum")

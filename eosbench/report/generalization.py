"""The generalization table (test accuracy per method and setting, mean (standard error)
over seeds, best in bold, the paper's numbers alongside) and the suite comparisons table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import store
from ..claims import Verdict
from ..latex import tex_escape
from ..record import Run

METHOD_ORDER = ("sgd", "sam", "sgd-tracer", "adam", "adam-sam", "adam-tracer")


CELL = ("dataset", "model", "setting", "method")


def cell(run: Run) -> dict[str, str] | None:
    """The generalization-table cell of a run (its task's ``meta``, as registered now), or
    None for a run of another kind of task."""
    meta = dict(run.judge().meta)
    return {k: meta[k] for k in CELL} if all(k in meta for k in CELL) else None


def generalization_frame(summary: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per finished run of a generalization task: its cell and final numbers."""
    cells = {r.id: cell(r) for r in runs}
    rows = []
    for r in summary.itertuples(index=False):
        c = cells.get(r.run)
        if c is None or r.status not in store.FINISHED:
            continue
        rows.append(
            {
                **c,
                "seed": r.seed,
                "test_acc": 100 * r.final_test_acc if r.final_test_acc is not None else None,
                "sharpness": getattr(r, "final_sharpness", None),
                "trace": getattr(r, "final_trace", None),
            }
        )
    return pd.DataFrame(rows)


def _mean_se(v: pd.Series) -> tuple[float, float, int]:
    v = v.dropna().astype(float)
    if not len(v):
        return math.nan, math.nan, 0
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(se), len(v)


def _cell_text(mean: float, se: float, bold: bool, digits: int = 2) -> str:
    if math.isnan(mean):
        return "--"
    body = f"{mean:.{digits}f}" + ("" if math.isnan(se) else f" ({se:.{digits}f})")
    return f"\\textbf{{{body}}}" if bold else body


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: (dataset, model, setting); columns: each method's mean (se) test accuracy in %,
    best mean in bold, n seeds, then the paper's numbers."""
    from ..suites.generalization import METHODS, PAPER, SETTINGS

    out = []
    for (ds, model, setting), g in frame.groupby(["dataset", "model", "setting"], sort=True):
        methods = [m for m in METHOD_ORDER if m in set(g["method"])]
        stats = {m: _mean_se(g.loc[g["method"] == m, "test_acc"]) for m in methods}
        best = max((s[0] for s in stats.values() if not math.isnan(s[0])), default=math.nan)
        row = {"Setting": f"{ds}, {model}, {SETTINGS[setting][0]}"}
        for m in methods:
            mean, se, _ = stats[m]
            row[METHODS[m][0]] = _cell_text(mean, se, mean == best, 1)
        ns = sorted({n for _, _, n in stats.values()})
        row["$n$"] = "/".join(map(str, ns))
        for m in methods:
            paper = PAPER.get((model, setting, m))
            row[f"{METHODS[m][0]} [p]"] = "--" if paper is None else f"{paper:.2f}"
        out.append(row)
    return pd.DataFrame(out)


def curvature_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Final sharpness and Hessian trace per method (mean (se) over seeds)."""
    from ..suites.generalization import METHODS, SETTINGS

    out = []
    for (ds, model, setting, method), g in frame.groupby(
        ["dataset", "model", "setting", "method"], sort=True
    ):
        s_mean, s_se, n = _mean_se(g["sharpness"])
        t_mean, t_se, _ = _mean_se(g["trace"])
        out.append(
            {
                "Data": ds,
                "Model": model,
                "Setting": SETTINGS[setting][0],
                "Method": METHODS[method][0],
                "$n$": str(n),
                "$\\lambda_{\\max}$": _cell_text(s_mean, s_se, False, 1),
                "$\\operatorname{tr} H$": _cell_text(t_mean, t_se, False, 0),
            }
        )
    return pd.DataFrame(out)


def _data_caption(runs: Sequence[Run]) -> str:
    """What data the runs used, from their recorded task definitions."""
    parts = set()
    for r in runs:
        if cell(r) is None:
            continue
        d = r.task.data
        n_tr = "all" if d.n_train is None else f"the first {d.n_train:,}"
        n_te = "all" if d.n_test is None else f"the first {d.n_test:,}"
        parts.add(f"{d.name}: {n_tr} training and {n_te} test images")
    return "; ".join(sorted(parts))


def comparisons_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([v.to_dict() for v in verdicts])


def write_generalization(
    frame_runs: pd.DataFrame,
    runs: Sequence[Run],
    comparisons: list[Verdict],
    out: Path,
    title: str,
) -> list[Path]:
    """``generalization.tex``/``.csv``, ``generalization_curvature.tex`` and
    ``comparisons.tex``/``.csv`` when the runs hold generalization tasks / comparisons."""
    from ..suites.generalization import WR2023
    from .tables import _fmt, _latex

    written: list[Path] = []
    frame = generalization_frame(frame_runs, runs)
    if len(frame):
        store.atomic_write_text(
            out / "generalization.csv", frame.to_csv(index=False, float_format="%.6g")
        )
        acc = accuracy_table(frame)
        reduced = any(not str(ds).startswith("cifar100") for ds in frame["dataset"])
        caption = (
            f"Test accuracy (\\%) at the end of training, {title}: mean (standard error) over "
            f"$n$ seeds, best mean of each row in bold. Data: {_data_caption(runs)}. "
            f"Columns marked [p] are the single numbers reported by {tex_escape(WR2023)} on the "
            "full CIFAR-100 training set"
            + (
                "; this table is a reduced version on other data, so its columns are not "
                "directly comparable with them."
                if reduced
                else "."
            )
            + " SGD-TRACER here is eosbench's discretization of the G-TRACER penalty."
        )
        math_cols = tuple(c for c in acc.columns if c != "Setting")
        fmt = "p{3.0cm}" + "l" * (len(acc.columns) - 1)
        store.atomic_write_text(
            out / "generalization.tex",
            _latex(acc, caption, "tab:generalization", math_cols, column_format=fmt, small=True),
        )
        cur = curvature_table(frame)
        store.atomic_write_text(
            out / "generalization_curvature.tex",
            _latex(
                cur,
                f"Curvature at the end of training, {title}: top Hessian eigenvalue and "
                "Hessian trace (Hutch++) of the training loss on the first 256 training "
                "examples; mean (standard error) over $n$ seeds.",
                "tab:generalization-curvature",
                tuple(c for c in cur.columns if c.startswith("$")),
            ),
        )
        written += [
            out / "generalization.csv",
            out / "generalization.tex",
            out / "generalization_curvature.tex",
        ]
    if comparisons:
        cf = comparisons_frame(comparisons)
        store.atomic_write_text(
            out / "comparisons.csv", cf.to_csv(index=False, float_format="%.6g")
        )
        table = pd.DataFrame(
            {
                "Comparison": cf["claim"],
                "Difference": cf["measured"].map(_fmt),
                "Verdict": cf["verdict"],
                "Expected": cf["expected"],
                "Statistics": cf["detail"],
            }
        )
        store.atomic_write_text(
            out / "comparisons.tex",
            _latex(
                table,
                f"Comparisons of {title}: one-sided Welch t-tests at 5\\% over seeds "
                "(PASS: the first task's metric is higher; FAIL: significantly lower; "
                "INCONCLUSIVE: neither), with means, standard errors, the difference's 95\\% "
                "confidence interval and Hedges' $g$.",
                "tab:comparisons",
                column_format="p{4.3cm}lllp{5.1cm}",
                small=True,
            ),
        )
        written += [out / "comparisons.csv", out / "comparisons.tex"]
    return written


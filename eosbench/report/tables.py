"""LaTeX tables (pandas ``Styler.to_latex``, booktabs) and the CSV/JSON summary."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import store
from ..claims import Verdict
from ..latex import tex_escape
from ..record import Run


def _run_row(run: Run, verdicts: Sequence[Verdict]) -> tuple[dict[str, Any], list[dict]]:
    """The summary row of one run and its claims rows.  ``t_star`` and
    ``post_median_over_T`` are those of the window its ``eos`` claim judges
    (:func:`~eosbench.claims.eos.claim_window`): a table never disagrees with a verdict."""
    from ..claims.eos import claim_window

    row: dict[str, Any] = {
        "task": run.task.name,
        "seed": run.seed,
        "status": run.status,
        "steps": run.step,
        "run": run.id,
        "task_hash": run.record.get("task_hash", "")[:12],
        "device": run.provenance.get("device_name"),
        "wall_seconds": run.cost.get("wall_seconds"),
        "measure_seconds": run.cost.get("measure_seconds"),
    }
    cw = claim_window(run, run.judge()) if run.has_series else None
    if cw is not None:
        q, T, w = cw
        row["threshold_quantity"], row["threshold"] = q, T
        row["t_star"] = w.t_star if w is not None else None
        row["post_median_over_T"] = w.ratio if w is not None else None
        _, vals = run.values(q)
        row["final_" + q] = float(vals[-1]) if len(vals) else None
    if run.has_series:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "batch_sharpness"):
            _, v = run.values(key)
            row["final_" + key] = float(v[-1]) if len(v) else None
        for key in ("sharpness", "trace"):  # recorded by runs without a threshold too
            _, v = run.values(key)
            if len(v):
                row["final_" + key] = float(v[-1])
    claims = [{"task": run.task.name, "seed": run.seed, **v.to_dict()} for v in verdicts]
    return row, claims


def load_runs(runs: Sequence[Run], verdicts: Mapping[str, Sequence[Verdict]]) -> dict:
    """The summary frame (one row per run) and the claims frame (one row per verdict;
    ``verdicts`` maps each run's id to its verdicts)."""
    rows, claims = [], []
    for r in runs:
        row, cl = _run_row(r, verdicts.get(r.id, ()))
        rows.append(row)
        claims.extend(cl)
    runs_df = pd.DataFrame(rows).sort_values(["task", "seed"], kind="stable").reset_index(drop=True)
    claims_df = pd.DataFrame(claims)
    if len(claims_df):
        # stable: a run's claims stay in the order its task states them
        claims_df = claims_df.sort_values(["task", "seed"], kind="stable").reset_index(drop=True)
    return {"runs": runs_df, "claims": claims_df}


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _mean_pm(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if not len(v):
        return "--"
    if len(v) == 1:
        return f"${v.iloc[0]:.3g}$"
    return f"${v.mean():.3g} \\pm {v.std(ddof=1) / math.sqrt(len(v)):.2g}$"


LONG_ROWS = 12  # more rows than fit a page in small type (wrapped cells): a longtable


def _latex(
    df: pd.DataFrame,
    caption: str,
    label: str,
    math_cols: tuple[str, ...] = (),
    column_format: str | None = None,
    small: bool = False,
) -> str:
    esc = [c for c in df.columns if c not in math_cols]
    # tex_escape, not pandas' escape="latex": that leaves < > | as they are, which pdflatex's
    # default font encoding prints as inverted punctuation
    sty = df.style.hide(axis="index").format(tex_escape, subset=esc)
    long = len(df) > LONG_ROWS
    fmt = column_format or "l" * len(df.columns)
    # a float taller than a page would run off it: a long table breaks across pages instead
    where = (
        {"environment": "longtable"} if long else {"position": "htbp", "position_float": "centering"}
    )
    tex = sty.to_latex(hrules=True, caption=caption, label=label, column_format=fmt, **where)
    if long:
        tex = (
            f"% {len(df)} rows: a longtable, which breaks across pages "
            "(needs \\usepackage{longtable})\n\\begingroup\n"
            + ("\\small\\setlength{\\tabcolsep}{4pt}\n" if small else "")
            + tex
            + "\\endgroup\n"
        )
    if small:  # wide tables: smaller type, narrower column gaps; wrapped cells may break
        # after the slashes (and, below the header, commas, underscores and brackets) of task
        # and claim names
        head, sep, body = tex.partition("\\begin{longtable}" if long else "\\begin{tabular}")
        head = head.replace(
            "\\centering\n", "\\centering\n\\small\\setlength{\\tabcolsep}{4pt}\n", 1
        )
        top, mid, rows = body.partition("\\endlastfoot" if long else "\\midrule")
        # break points in the header rows only, never inside a caption's or label's argument
        top = re.sub(
            r"(?s)(\\toprule)(.*?)(\\midrule|$)",
            lambda m: m[1] + m[2].replace("/", "/\\allowbreak{}") + m[3],
            top,
        )
        for c in ("/", ",", "\\_", "["):
            rows = rows.replace(c, c + "\\allowbreak{}")
        tex = head + sep + top + mid + rows
    return tex


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Task": claims["task"],
            "Seed": claims["seed"].astype(str),
            "Claim": claims["claim"],
            "Measured": claims["measured"].map(_fmt),
            "Target": claims["target"].map(_fmt),
            "Tolerance": claims["tolerance"],
            "Verdict": claims["verdict"],
            "Expected": claims["expected"],
        }
    )


def curvature_table(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for task, g in runs.groupby("task", sort=True):
        out.append(
            {
                "Task": task,
                "n": str(len(g)),
                "$t^*$ (step)": _mean_pm(g.get("t_star", pd.Series(dtype=float))),
                "median $q/T$ after $t^*$": _mean_pm(
                    g.get("post_median_over_T", pd.Series(dtype=float))
                ),
                "final loss": _mean_pm(g["final_train_loss"]),
                "final train acc.": _mean_pm(g["final_train_acc"]),
            }
        )
    return pd.DataFrame(out)


def write_tables(frames: dict[str, pd.DataFrame], out: Path, title: str) -> list[Path]:
    runs, claims = frames["runs"], frames["claims"]
    written = []
    store.atomic_write_text(out / "summary.csv", runs.to_csv(index=False, float_format="%.6g"))
    written.append(out / "summary.csv")
    if len(claims):
        store.atomic_write_text(out / "claims.csv", claims.to_csv(index=False, float_format="%.6g"))
        tex = _latex(
            claims_table(claims),
            f"Claims of {title}: verdict per seed, with the measured statistic, "
            "its target and tolerance.",
            "tab:claims",
            column_format="p{3.0cm}lp{2.6cm}llp{3.0cm}ll",
            small=True,
        )
        store.atomic_write_text(out / "claims.tex", tex)
        written += [out / "claims.csv", out / "claims.tex"]
    cur = curvature_table(runs)
    math_cols = tuple(c for c in cur.columns if c not in ("Task", "n"))
    tex = _latex(
        cur,
        f"Curvature summary of {title}: first step $t^*$ at which the sharpness "
        "quantity $q$ reaches the optimizer's threshold $T$, the median of $q/T$ over the "
        "window the task's edge-of-stability claim judges (from $t^*$ to the end of the run, "
        "or to where the claim's loss drop ends it; the claims table's measured value over "
        "$T$), final training loss and accuracy; mean $\\pm$ standard error over $n$ seeds.",
        "tab:curvature",
        math_cols,
        column_format="p{4.2cm}" + "l" * (len(cur.columns) - 1),
        small=True,
    )
    store.atomic_write_text(out / "curvature.tex", tex)
    written.append(out / "curvature.tex")
    store.atomic_write_text(
        out / "summary.json",
        json.dumps(
            {
                "runs": json.loads(runs.to_json(orient="records")),
                "claims": json.loads(claims.to_json(orient="records")) if len(claims) else [],
            },
            indent=1,
            sort_keys=True,
        )
        + "\n",
    )
    written.append(out / "summary.json")
    return written

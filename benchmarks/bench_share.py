"""Benchmark: the share of each committed suite's wall time spent measuring, from its series.

What it shows: for every folder of ``results/`` (or the folders named), from the runs'
recorded cost alone (``runs.parquet``: ``wall_seconds`` and ``measure_seconds`` per run, and the
``<measurement>_seconds`` series that the runner records at each measured step): the runs,
their wall time, the time measuring and its share, the measurement that takes most of it, and
the arithmetic of issue 21's target (at most 20% of the wall time measuring).  With ``M`` the
time measuring and ``T`` the rest (training, evaluation, writing), the share is ``M / (M + T)``;
at the same cost per measurement it is at most 20% when ``M' <= T / 4``, that is when the
measurements are ``4 M / T`` times rarer (the column "cadence x"; 1 or less: met as it is).
Nothing is trained or measured: the figures are those the committed runs recorded, on the
machine each folder's README names.

Command::

    python benchmarks/bench_share.py [results/tuners-digits ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from eosbench.artifact import read_artifact

TARGET = 0.2  # issue 21: at most this share of the wall time measuring


def folder_share(folder: Path) -> dict:
    """The cost figures of one results folder (module docstring)."""
    runs = read_artifact(folder)
    wall = sum(float(r.cost.get("wall_seconds") or 0.0) for r in runs)
    measuring = sum(float(r.cost.get("measure_seconds") or 0.0) for r in runs)
    per: dict[str, float] = {}
    for r in runs:
        if r.series is None:
            continue
        for key in r.keys:
            if key.endswith("_seconds"):
                _, v = r.values(key)
                per[key[: -len("_seconds")]] = per.get(key[: -len("_seconds")], 0.0) + float(v.sum())
    top = max(per, key=per.__getitem__) if per else None
    rest = wall - measuring
    return {
        "folder": folder.name,
        "runs": len(runs),
        "wall": wall,
        "measuring": measuring,
        "share": measuring / wall if wall > 0 else math.nan,
        "top": top,
        "top_share": per[top] / measuring if top and measuring > 0 else math.nan,
        "cadence": measuring / (rest * TARGET / (1 - TARGET)) if rest > 0 else math.inf,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", type=Path, help="results folders (default: every one)")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parent.parent / "results"
    folders = args.folders or sorted(d for d in root.iterdir() if (d / "runs.parquet").exists())
    print(f"# bench_share: measuring / wall time of the committed runs (target <= {TARGET:.0%})")
    print("| folder | runs | wall s | measuring s | share | most of it | cadence x for 20% |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        f = folder_share(folder)
        top = f"{f['top']} ({f['top_share']:.0%})" if f["top"] else "-"
        print(f"| {f['folder']} | {f['runs']} | {f['wall']:.0f} | {f['measuring']:.0f} | "
              f"{f['share']:.0%} | {top} | {f['cadence']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()

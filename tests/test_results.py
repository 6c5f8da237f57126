"""The committed results: each folder's artifact regenerates its tables and figures byte for
byte, and every table agrees with the verdicts about the same run."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from eosbench.artifact import ARTIFACT_FILE, is_artifact, read_artifact
from eosbench.claims import check
from eosbench.claims.eos import claim_window
from eosbench.report import write_report

RESULTS = Path(__file__).resolve().parent.parent / "results"
FOLDERS = sorted(p.parent for p in RESULTS.rglob(ARTIFACT_FILE))
WITH_SERIES = [f for f in FOLDERS if all(r.has_series for r in read_artifact(f))]


def _id(p: Path) -> str:
    return p.relative_to(RESULTS).as_posix()


def _same(a, b) -> bool:
    """Equal, floats to 1e-12 relative: a recomputed verdict may differ from the recorded one
    in its last bit where numpy or scipy changed their kernels since (seen: numpy 2.4.6's
    0.06489116426134 for a recorded 0.0648911642613399); every printed digit is the same."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_every_results_folder_is_an_artifact_and_small():
    assert FOLDERS, "no results artifacts found"
    for f in FOLDERS:
        assert is_artifact(f)
        assert not (f / "runs").exists(), f"{f}: run copies beside the artifact"
    sizes = {p: p.stat().st_size for p in RESULTS.rglob("*") if p.is_file()}
    assert max(sizes.values()) <= 10 * 2**20, max(sizes, key=sizes.get)
    assert sum(sizes.values()) <= 50 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("folder", WITH_SERIES, ids=_id)
def test_the_artifact_alone_regenerates_every_committed_file(folder, tmp_path):
    write_report(read_artifact(folder), tmp_path)
    committed = {p.name for p in folder.iterdir() if p.name not in (ARTIFACT_FILE, "README.md")}
    assert committed == {p.name for p in tmp_path.iterdir()}
    for name in sorted(committed):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name


@pytest.mark.parametrize("folder", WITH_SERIES, ids=_id)
def test_tables_and_verdicts_agree_on_every_run(folder):
    """The summary's median q/T after t* is the eos verdict's measured ratio; the recorded
    verdicts are those the claims give on the published series."""
    runs = read_artifact(folder)
    summary = pd.read_csv(folder / "summary.csv")
    judged = any(r.verdicts for r in runs)  # no claims table where no run has claims
    assert (folder / "claims.csv").exists() == judged
    claims = pd.read_csv(folder / "claims.csv") if judged else None
    assert len(summary) == len(runs)
    for r in runs:
        verdicts = check(r)
        assert _same([v.to_dict() for v in verdicts], [v.to_dict() for v in r.verdicts]), r.id
        row = summary[summary["run"] == r.id].iloc[0]
        cw = claim_window(r, r.judge())
        eos = [v for v in verdicts if v.claim == f"eos[{cw[0]}]"] if cw else []
        if eos and eos[0].measured is not None:
            assert math.isclose(row["post_median_over_T"], eos[0].measured / eos[0].target,
                                rel_tol=1e-5)  # fmt: skip  (the CSV keeps 6 digits)
            mine = claims[(claims["task"] == r.task.name) & (claims["seed"] == r.seed)]
            assert math.isclose(mine[mine["claim"] == eos[0].claim]["measured"].iloc[0],
                                eos[0].measured, rel_tol=1e-5)  # fmt: skip


@pytest.mark.slow
def _this_cpu(run) -> bool:
    """Whether ``run`` was recorded on this kind of CPU (model and torch's CPU capability; a
    run recorded before provenance named them is taken to be from another)."""
    import torch

    from eosbench.provenance import cpu_model

    p = run.provenance or {}
    here = (cpu_model(), torch.backends.cpu.get_cpu_capability())
    return (p.get("cpu_model"), p.get("cpu_capability")) == here


def test_the_smoke_suite_regenerates_its_committed_series(tmp_path):
    """Golden: seed 0 of every smoke task, re-run here, gives the committed series bitwise
    (every recorded key but the timings) and the committed verdicts, on the kind of CPU that
    recorded them.  On another kind a float32 sum's last bits differ and the edge's
    oscillation amplifies them (seen: the smoke measurements move by up to 1.3%), so there the
    test asks what does not hang on them: the same keys and steps, the first record (the
    untrained network) to 1e-3 relative (the eigensolver's tolerance), and every verdict."""
    from eosbench.runner import RunOptions, run_many
    from eosbench.store import load_run
    from eosbench.suites import SUITES, TASKS

    committed = {(r.task.name, r.seed): r for r in read_artifact(RESULTS / "smoke")}
    jobs = [(TASKS.get(n), 0) for n in SUITES.get("smoke").tasks]
    opts = RunOptions(out=tmp_path, device="cpu", progress=False, checkpoint_every=0)
    for rdir in run_many(jobs, opts, workers=2):
        new = load_run(rdir)
        old = committed[(new.task.name, 0)]
        keys = [k for k in old.keys if not k.endswith("_seconds")]
        assert [k for k in new.keys if not k.endswith("_seconds")] == keys
        assert (new.series.steps == old.series.steps).all()
        if _this_cpu(old):
            for k in keys:
                a, b = new.series.columns[k], old.series.columns[k]
                assert ((a == b) | (pd.isna(a) & pd.isna(b))).all(), (new.task.name, k)
            assert _same([v.to_dict() for v in check(new)], [v.to_dict() for v in old.verdicts])
            continue
        for k in keys:
            if k.endswith(("_hvps", "_residual")):
                continue  # counts and residuals of a solve that stopped at its tolerance
            a, b = new.series.columns[k][0], old.series.columns[k][0]
            assert (pd.isna(a) and pd.isna(b)) or math.isclose(a, b, rel_tol=1e-3), (k, a, b)
        assert [(v.claim, v.verdict) for v in check(new)] == [
            (v.claim, v.verdict) for v in old.verdicts], new.task.name

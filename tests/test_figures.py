"""Report figures: the data behind each figure against hand-computed values, figures written
only when the runs hold their data, byte-identical re-rendering, embedded TrueType fonts.

Oracles: hand-made run directories with known time series (q/T, window means, standard
errors computed by hand), and one tiny real run for the recorded key names.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import matplotlib.pyplot as plt
import pytest

from eosbench import store
from eosbench.record import Run
from eosbench.report import write_report
from eosbench.report.figures import (
    final_value,
    final_vs_batch_size_data,
    final_vs_batch_size_summary,
    normalized_data,
    spectrum_data,
    write_figures,
)
from eosbench.task import (
    DataSpec,
    MeasurementSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    Task,
    options,
    to_dict,
)

FIGURES = ("sharpness", "normalized", "final_vs_batch_size", "spectrum")

GD = Task(
    name="toy/fc/mse/gd/lr=0.1",
    data=DataSpec(n_train=100),
    optimizer=OptimizerSpec(name="sgd", lr=0.1),  # T = 2/lr = 20
    measurements=(MeasurementSpec("sharpness", every=10),),
)
HB = replace(
    GD,
    name="toy/fc/mse/hb/lr=0.15,beta=0.5",
    optimizer=OptimizerSpec(name="sgd", lr=0.15, momentum=0.5),  # T = 3/0.15 = 20
)
ADAM = replace(
    GD,
    name="toy/fc/mse/adam/lr=0.001",
    optimizer=OptimizerSpec(name="adam", lr=0.001),  # T on P^-1 H: 3.8/0.1/0.001 = 38000
)
TRACER = replace(GD, name="toy/fc/mse/tracer", optimizer=OptimizerSpec(name="tracer", lr=0.1))


def sgd(lr: float, bs: int) -> Task:
    return replace(
        GD,
        name=f"toy/fc/mse/sgd/lr={lr},bs={bs}",
        optimizer=OptimizerSpec(name="sgd", lr=lr, batch_size=bs),
        measurements=(
            MeasurementSpec("sharpness", every=10),
            MeasurementSpec("batch_sharpness", every=10),
        ),
    )


def make_run(root, task: Task, seed: int, records, status="completed"):
    d = store.run_dir(root, task.name, seed)
    store.atomic_write_json(
        d / store.RUN_FILE,
        {"task": to_dict(task), "task_hash": "h", "seed": seed, "status": status,
         "step": max(r["step"] for r in records), "provenance": {}},
    )  # fmt: skip
    store.atomic_write_text(d / store.METRICS_FILE, store.dumps_records(records))
    return store.load_run(d)


def series(key: str, values, every: int = 10, **extra):
    return [{"step": every * i, key: v, **extra} for i, v in enumerate(values)]


def merge(*lists):
    by_step: dict[int, dict] = {}
    for recs in lists:
        for r in recs:
            by_step.setdefault(r["step"], {"step": r["step"]}).update(r)
    return [by_step[s] for s in sorted(by_step)]


# --- normalized -----------------------------------------------------------------------------------


def test_normalized_is_the_threshold_quantity_over_the_threshold(tmp_path):
    runs = [
        make_run(tmp_path, GD, 0, series("sharpness", [10.0, 20.0, 22.0])),
        make_run(tmp_path, HB, 0, series("sharpness", [5.0, 19.0])),
        make_run(tmp_path, ADAM, 0, series("preconditioned_sharpness", [3800.0, 38000.0])),
        make_run(tmp_path, TRACER, 0, series("sharpness", [1.0, 2.0])),  # no threshold: left out
    ]
    df = normalized_data(runs)
    assert set(df["task"]) == {GD.name, HB.name, ADAM.name}
    gd = df[df["task"] == GD.name]
    assert list(gd["quantity"]) == ["sharpness"] * 3
    assert list(gd["threshold"]) == pytest.approx([20.0] * 3)
    assert list(gd["normalized"]) == pytest.approx([0.5, 1.0, 1.1])
    assert list(gd["step"]) == [0, 10, 20]
    assert list(gd["time"]) == pytest.approx([0.0, 1.0, 2.0])  # step x lr
    hb = df[df["task"] == HB.name]
    assert list(hb["normalized"]) == pytest.approx([5 / 20, 19 / 20])  # (2+2b)/lr = 20
    assert list(hb["time"]) == pytest.approx([0.0, 1.5])
    adam = df[df["task"] == ADAM.name]
    assert set(adam["quantity"]) == {"preconditioned_sharpness"}
    t = (2 + 2 * 0.9) / ((1 - 0.9) * 0.001)
    assert list(adam["normalized"]) == pytest.approx([3800 / t, 38000 / t])


def test_normalized_adds_batch_sharpness_for_stochastic_runs_only(tmp_path):
    recs = merge(series("sharpness", [4.0, 8.0]), series("batch_sharpness", [6.0, 10.0]))
    runs = [
        make_run(tmp_path, sgd(0.5, 8), 0, recs),  # T = 4
        make_run(tmp_path, GD, 0, recs),  # full batch: its batch sharpness is not normalized
    ]
    df = normalized_data(runs)
    s = df[df["task"] == sgd(0.5, 8).name]
    assert list(s["quantity"]) == ["batch_sharpness"] * 2 + ["sharpness"] * 2
    assert list(s["normalized"]) == pytest.approx([1.5, 2.5, 1.0, 2.0])
    assert set(df.loc[df["task"] == GD.name, "quantity"]) == {"sharpness"}


# --- final vs batch size --------------------------------------------------------------------------


def test_final_value_is_the_mean_over_the_last_window():
    traj = Run.synthetic(
        merge(series("batch_sharpness", [float(i) for i in range(11)]), [{"step": 100}])
    )
    # steps 0..100; the last 20% are steps >= 80: values 8, 9, 10
    assert final_value(traj, "batch_sharpness") == (pytest.approx(9.0), 3)
    assert final_value(traj, "batch_sharpness", window=0.5) == (pytest.approx(7.5), 6)
    assert final_value(traj, "batch_sharpness", window=1.0) == (pytest.approx(5.0), 11)
    assert final_value(traj, "sharpness") is None
    # a quantity measured rarely: nothing in the window -> None, not an older value
    sparse = Run.synthetic([{"step": 0, "sharpness": 1.0}, {"step": 100}])
    assert final_value(sparse, "sharpness") is None
    with pytest.raises(ValueError, match="window"):
        final_value(traj, "batch_sharpness", window=0.0)


def _sweep(tmp_path):
    """SGD lr=0.1 at batch sizes 8 and 32 (2 seeds), lr=0.05 at 8 (1 seed), and runs that
    must be left out: full-batch heavy ball and an unfinished SGD run."""
    runs = []
    for bs, seeds in ((8, {0: 10.0, 1: 12.0}), (32, {0: 14.0, 1: 17.0})):
        for seed, level in seeds.items():
            bsh = [0.0] * 8 + [level - 1, level, level + 1]  # window mean = level
            sh = [0.0] * 8 + [level / 2] * 3
            recs = merge(series("batch_sharpness", bsh), series("sharpness", sh))
            runs.append(make_run(tmp_path, sgd(0.1, bs), seed, recs))
    runs.append(
        make_run(
            tmp_path, sgd(0.05, 8), 0, merge(series("batch_sharpness", [1.0] * 8 + [30.0] * 3))
        )
    )
    runs.append(make_run(tmp_path, HB, 0, series("batch_sharpness", [50.0] * 11)))
    runs.append(
        make_run(tmp_path, sgd(0.1, 64), 0, series("batch_sharpness", [99.0] * 11), "running")
    )
    return runs


def test_final_vs_batch_size_data_and_summary(tmp_path):
    df = final_vs_batch_size_data(_sweep(tmp_path))
    assert set(df["task"]) == {sgd(0.1, 8).name, sgd(0.1, 32).name, sgd(0.05, 8).name}
    assert set(df["series"]) == {"SGD, $\\eta$=0.1", "SGD, $\\eta$=0.05"}
    one = df[(df["task"] == sgd(0.1, 32).name) & (df["seed"] == 1)]
    assert dict(zip(one["quantity"], one["final"], strict=True)) == pytest.approx(
        {"batch_sharpness": 17.0, "sharpness": 8.5}
    )
    assert set(one["n_values"]) == {3}
    assert list(df.loc[df["lr"] == 0.1, "threshold"]) == pytest.approx([20.0] * 8)
    summary = final_vs_batch_size_summary(df)
    bs = summary[summary["quantity"] == "batch_sharpness"].set_index(["series", "batch_size"])
    row = bs.loc[("SGD, $\\eta$=0.1", 32)]
    assert row["mean"] == pytest.approx(15.5)
    assert row["sem"] == pytest.approx(math.sqrt(1.5**2 + 1.5**2) / math.sqrt(2))  # std / sqrt(n)
    assert row["n_seeds"] == 2 and row["threshold"] == pytest.approx(20.0)
    assert bs.loc[("SGD, $\\eta$=0.1", 8), "mean"] == pytest.approx(11.0)
    single = bs.loc[("SGD, $\\eta$=0.05", 8)]
    assert single["mean"] == pytest.approx(30.0) and single["sem"] == 0.0
    assert single["threshold"] == pytest.approx(40.0)
    # the lr=0.05 run recorded no sharpness: no row for it
    sh = summary[summary["quantity"] == "sharpness"]
    assert set(sh["series"]) == {"SGD, $\\eta$=0.1"}


def test_series_labels_are_unique_when_only_the_data_differs(tmp_path):
    other = replace(sgd(0.1, 8), name="toy2/fc/mse/sgd/lr=0.1,bs=8", data=DataSpec(n_train=50))
    recs = series("batch_sharpness", [1.0] * 3)
    df = final_vs_batch_size_data(
        [make_run(tmp_path, sgd(0.1, 8), 0, recs), make_run(tmp_path, other, 0, recs)]
    )
    assert df["series"].nunique() == 2
    assert all(s.startswith(("toy/fc/mse: ", "toy2/fc/mse: ")) for s in df["series"])


# --- spectrum -------------------------------------------------------------------------------------


def test_spectrum_data_takes_every_eigenvalue_of_the_first_seed(tmp_path):
    def recs(shift):
        return [
            {"step": 0, "sharpness": 3.0 + shift, "sharpness_eig2": 2.0, "sharpness_eig3": 1.0},
            {"step": 10, "train_loss": 0.5},
            {"step": 20, "sharpness": 5.0 + shift, "sharpness_eig2": 4.0, "sharpness_eig3": 3.0},
        ]

    runs = [make_run(tmp_path, GD, 1, recs(0.0)), make_run(tmp_path, GD, 2, recs(100.0))]
    runs.append(make_run(tmp_path, HB, 0, series("sharpness", [1.0, 2.0])))  # k = 1: left out
    df = spectrum_data(runs)
    assert set(df["task"]) == {GD.name} and set(df["seed"]) == {1}
    assert list(df["rank"]) == [1, 1, 2, 2, 3, 3]
    assert list(df["step"]) == [0, 20] * 3
    assert list(df["value"]) == pytest.approx([3.0, 5.0, 2.0, 4.0, 1.0, 3.0])
    assert list(df["threshold"]) == pytest.approx([20.0] * 6)


# --- files ----------------------------------------------------------------------------------------


def _all_data_runs(root):
    gd = [
        {"step": 0, "sharpness": 3.0, "sharpness_eig2": 2.0, "train_loss": 1.0},
        {"step": 10, "sharpness": 19.0, "sharpness_eig2": 9.0, "train_loss": 0.5},
        {"step": 20, "sharpness": 20.5, "sharpness_eig2": 11.0, "train_loss": 0.2},
    ]
    return [make_run(root, GD, 0, gd), *_sweep(root)]


def _files(out):
    return {p.name for p in out.iterdir()}


def test_every_figure_written_when_the_runs_have_its_data(tmp_path):
    out = tmp_path / "fig"
    written = write_figures(_all_data_runs(tmp_path / "runs"), out)
    expected = {f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")}
    assert {p.name for p in written} == expected == _files(out)
    for p in written:
        assert p.stat().st_size > 1000, p


def test_figures_without_data_are_skipped_without_files(tmp_path):
    # full-batch GD with k = 1: no stochastic runs, no spectrum
    runs = [make_run(tmp_path / "gd", GD, 0, series("sharpness", [3.0, 19.0]))]
    written = write_figures(runs, tmp_path / "a")
    assert {p.name for p in written} == _files(tmp_path / "a")
    assert _files(tmp_path / "a") == {
        "sharpness.png",
        "sharpness.pdf",
        "normalized.png",
        "normalized.pdf",
    }
    # no threshold (TRACER): no normalized figure either
    runs = [make_run(tmp_path / "tr", TRACER, 0, series("sharpness", [3.0, 19.0]))]
    write_figures(runs, tmp_path / "b")
    assert _files(tmp_path / "b") == {"sharpness.png", "sharpness.pdf"}
    # stochastic but unfinished: no final_vs_batch_size
    runs = [make_run(tmp_path / "s", sgd(0.1, 8), 0, series("batch_sharpness", [3.0]), "running")]
    write_figures(runs, tmp_path / "c")
    assert "final_vs_batch_size.png" not in _files(tmp_path / "c")
    assert write_figures([], tmp_path / "d") == []


def test_rerendering_is_byte_identical_and_independent_of_rcparams(tmp_path):
    runs = _all_data_runs(tmp_path / "runs")
    write_figures(runs, tmp_path / "one")
    with plt.rc_context({"lines.linewidth": 5.0, "pdf.fonttype": 3, "font.size": 20}):
        write_figures(runs, tmp_path / "two")
    assert plt.rcParams["pdf.fonttype"] == 3  # the caller's settings are left alone
    for name in sorted(_files(tmp_path / "one")):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), (
            name
        )


def test_pdfs_embed_truetype_fonts_and_no_dates(tmp_path):
    write_figures(_all_data_runs(tmp_path / "runs"), tmp_path / "out")
    for f in FIGURES:
        pdf = (tmp_path / "out" / f"{f}.pdf").read_bytes()
        assert b"/FontFile2" in pdf, f  # TrueType (pdf.fonttype 42)
        assert b"/Type3" not in pdf, f
        assert b"/CreationDate" not in pdf and b"/Producer" not in pdf, f


def test_write_report_lists_the_figures(tmp_path):
    out = tmp_path / "report"
    written = write_report(_all_data_runs(tmp_path / "runs"), out)
    index = json.loads((out / "index.json").read_text())
    for f in FIGURES:
        for e in ("png", "pdf"):
            assert f"{f}.{e}" in index["files"] and out / f"{f}.{e}" in written


# --- the recorded key names (one tiny real run) ---------------------------------------------------


def test_real_runs_record_what_the_figures_read(tmp_path):
    from eosbench.runner import RunOptions, run

    opts = RunOptions(out=tmp_path, device="cpu", progress=False, checkpoint_every=0)
    base = Task(
        name="tiny/fc-tanh/mse/sgd/lr=0.1,bs=16",
        data=DataSpec(name="digits", n_train=64, n_test=32),
        model=ModelSpec(name="fc-tanh", width=8),
        optimizer=OptimizerSpec(name="sgd", lr=0.1, batch_size=16),
        schedule=ScheduleSpec(steps=6, eval_every=0),
        measurements=(
            MeasurementSpec("sharpness", every=3, options=options(k=2)),
            MeasurementSpec("batch_sharpness", every=3, options=options(max_batches=8)),
        ),
    )
    runs = [store.load_run(run(base, 0, opts))]
    df = normalized_data(runs)
    assert set(df["quantity"]) == {"sharpness", "batch_sharpness"}
    assert set(final_vs_batch_size_data(runs)["quantity"]) == {"sharpness", "batch_sharpness"}
    spec = spectrum_data(runs)
    assert sorted(set(spec["rank"])) == [1, 2] and list(spec["step"].unique()) == [0, 3, 6]


def test_tables_taller_than_a_page_are_longtables_with_clean_captions():
    import pandas as pd

    from eosbench.report.tables import LONG_ROWS, _latex

    for n in (LONG_ROWS, LONG_ROWS + 1):
        df = pd.DataFrame({"Task/name": [f"a/b,c[{i}] >= 1" for i in range(n)]})
        tex = _latex(df, "Runs of a/b", "tab:a/b", small=True)
        assert ("\\begin{longtable}" in tex) == (n > LONG_ROWS)
        assert "\\begin{table}" in tex or n > LONG_ROWS
        # break points in header and cells, none inside the caption or label arguments
        assert "Task/\\allowbreak{}name" in tex and "a/\\allowbreak{}b" in tex
        assert "{Runs of a/b}" in tex and "tab:a/b" in tex and "[\\allowbreak{}]" not in tex
        assert "\\textgreater{}= 1" in tex  # pdflatex's default encoding prints > as an inverted ?

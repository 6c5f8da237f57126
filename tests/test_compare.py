"""Suite comparisons (ordering claims by Welch's t-test) and the generalization table.

Oracles: scipy's ``ttest_ind(equal_var=False)`` for the p-value, hand-computed Welch
confidence intervals and Hedges' g, and hand-made run directories with known accuracies.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from eosbench import store
from eosbench.claims.compare import (
    INCONCLUSIVE,
    comparisons_for,
    hedges_g,
    metric_value,
    ordering,
    welch,
)
from eosbench.cli import main
from eosbench.record import Run
from eosbench.report import write_report
from eosbench.suites import SUITES, TASKS, Comparison, suite
from eosbench.suites.generalization import PAPER
from eosbench.task import to_dict
from tests.latex import needs_tex, pdflatex

HIGH = [0.62, 0.60, 0.61]
LOW = [0.50, 0.52, 0.51]


def test_ordering_pass_fail_inconclusive():
    assert ordering(HIGH, LOW).verdict == "PASS"
    assert ordering(LOW, HIGH).verdict == "FAIL"
    assert ordering([0.5, 0.6, 0.55], [0.56, 0.5, 0.58]).verdict == INCONCLUSIVE
    v = ordering(HIGH, LOW)
    assert v.measured == pytest.approx(np.mean(HIGH) - np.mean(LOW))
    assert "Hedges g" in v.detail and "95% CI" in v.detail


def test_too_few_seeds_is_inconclusive_and_never_as_expected():
    for expected in ("PASS", "FAIL"):
        v = ordering([0.9], LOW, expected=expected)
        assert v.verdict == INCONCLUSIVE and not v.as_expected
        assert "not evaluable" in v.detail


def test_welch_matches_scipy_and_hand_computation():
    a, b = np.array([0.61, 0.64, 0.58, 0.60]), np.array([0.55, 0.59, 0.50])
    w = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert w["p_greater"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert w["t"] == pytest.approx(ref.statistic, rel=1e-10)
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert w["ci_low"] == pytest.approx(a.mean() - b.mean() - half)
    assert w["ci_high"] == pytest.approx(a.mean() - b.mean() + half)
    sp = math.sqrt((3 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 5)
    assert hedges_g(a, b) == pytest.approx((1 - 3 / (4 * 7 - 9)) * (a.mean() - b.mean()) / sp)


def test_identical_constant_samples():
    assert ordering([0.5, 0.5], [0.5, 0.5]).verdict == INCONCLUSIVE
    assert ordering([0.6, 0.6], [0.5, 0.5]).verdict == "PASS"


def test_metric_value_first_last_and_missing():
    traj = Run.synthetic([{"step": 0, "test_acc": 0.1}, {"step": 5}, {"step": 9, "test_acc": 0.7}])
    assert metric_value(traj, "test_acc") == 0.7
    assert metric_value(traj, "test_acc@first") == 0.1
    assert metric_value(traj, "test_acc@last") == 0.7
    assert metric_value(traj, "sharpness") is None
    with pytest.raises(ValueError, match="suffix"):
        metric_value(traj, "test_acc@middle")


def test_metric_value_median_over_the_second_half():
    # rises to the edge, then oscillates around 10 with one outlier at the end
    values = [1, 3, 6, 9, 10.2, 9.8, 10.1, 9.9, 10.0, 10.3, 30]
    traj = Run.synthetic([{"step": 100 * i, "sharpness": v} for i, v in enumerate(values)])
    assert metric_value(traj, "sharpness@median") == pytest.approx(10.05)  # steps 500-1000
    assert metric_value(traj, "sharpness") == 30  # the last value alone
    assert metric_value(Run.synthetic([{"step": 3}]), "sharpness@median") is None
    # recorded only early (e.g. a series that stops being finite): nothing in the second half
    early = Run.synthetic([{"step": 0, "sharpness": 1.0}, {"step": 10, "sharpness": float("nan")}])
    assert metric_value(early, "sharpness@median") is None


def test_metric_value_at_a_step():
    traj = Run.synthetic([{"step": 100 * i, "sharpness": float(i)} for i in range(6)])
    assert metric_value(traj, "sharpness@300") == 3.0
    assert metric_value(traj, "sharpness@350") == 3.0  # the last measurement at or before
    assert metric_value(traj, "sharpness@0") == 0.0
    assert metric_value(traj, "sharpness@9999") == 5.0
    late = Run.synthetic([{"step": 100, "sharpness": 1.0}])
    assert metric_value(late, "sharpness@50") is None
    with pytest.raises(ValueError, match="suffix"):
        metric_value(traj, "sharpness@-3")


def test_suite_rejects_comparisons_of_tasks_outside_it():
    t = TASKS.get("cifar10-3k/resnet20/ce/sgd/noaug")
    with pytest.raises(ValueError, match="not in the suite"):
        suite("x-bad", [t], "", comparisons=(Comparison("ordering", t.name, "nope"),))
    assert "x-bad" not in SUITES


REDUCED = SUITES.get("generalization-reduced")


def _runs(root, accs: dict[str, list[float]], sharp=10.0, status="completed"):
    """Hand-made finished runs of the reduced suite with the given final test accuracies."""
    dirs = []
    for name, values in accs.items():
        task = TASKS.get(name)
        for seed, acc in enumerate(values):
            d = store.run_dir(root, name, seed)
            store.atomic_write_json(
                d / store.RUN_FILE,
                {"task": to_dict(task), "task_hash": "h", "seed": seed, "status": status,
                 "step": 345, "provenance": {}},
            )  # fmt: skip
            recs = [
                {"step": 0, "test_acc": 0.1},
                {"step": 345, "test_acc": acc, "sharpness": sharp + seed, "trace": 100.0 + seed},
            ]
            store.atomic_write_text(d / store.METRICS_FILE, store.dumps_records(recs))
            dirs.append(store.load_run(d))
    return dirs


def _accs(sgd, sam, tracer):
    names = REDUCED.tasks
    return {names[0]: sgd, names[1]: sam, names[2]: tracer}


def test_reduced_suite_comparisons_on_hand_made_runs(tmp_path):
    runs = _runs(tmp_path, _accs(LOW, [0.56, 0.55, 0.57], HIGH))
    verdicts = comparisons_for(runs)
    assert len(verdicts) == len(REDUCED.comparisons) == 5
    got = {(v.claim.split(": ")[1], v.verdict, v.expected) for v in verdicts}
    assert all(v.as_expected for v in verdicts), got
    # every claim flips when the data say the opposite
    runs = _runs(tmp_path / "rev", _accs(HIGH, [0.56, 0.55, 0.57], LOW))
    verdicts = comparisons_for(runs)
    bad = [v for v in verdicts if not v.as_expected]
    assert len(bad) == 4  # the three published orderings and the reversed control
    assert all(v.verdict == "FAIL" for v in bad if v.expected == "PASS")


def test_unfinished_runs_make_comparisons_inconclusive(tmp_path):
    runs = _runs(tmp_path, _accs(LOW, LOW, HIGH), status="running")
    verdicts = comparisons_for(runs)
    assert verdicts and all(v.verdict == INCONCLUSIVE for v in verdicts)
    assert not any(v.as_expected for v in verdicts)


def test_runs_kept_without_series_are_not_compared_again(tmp_path, capsys):
    """A results artifact may keep a run's records without its series (a GPU session's):
    check prints its recorded verdicts and leaves the comparisons out instead of turning
    them into INCONCLUSIVE ones for lack of values."""
    from dataclasses import replace as with_

    from eosbench.artifact import read_artifact, write_artifact

    runs = _runs(tmp_path / "runs", _accs(LOW, [0.56, 0.55, 0.57], HIGH))
    assert len(comparisons_for(runs)) == len(REDUCED.comparisons)
    bare = [with_(r, id=f"r{i}", series=None) for i, r in enumerate(runs)]
    write_artifact(tmp_path / "pub" / "runs.parquet", bare)
    back = read_artifact(tmp_path / "pub")
    assert len(back) == len(runs) and not any(r.has_series for r in back)
    assert comparisons_for(back) == []
    assert main(["check", str(tmp_path / "pub")]) == 0
    out = capsys.readouterr().out
    assert "[suite]" not in out and "0 of 0 verdicts" in out  # these tasks have no run claims


def test_generalization_table_and_check_exit_code(tmp_path, capsys):
    runs = _runs(tmp_path / "runs", _accs(LOW, [0.56, 0.55, 0.57], HIGH))
    out = tmp_path / "report"
    written = write_report(runs, out)
    names = {p.name for p in written}
    assert {"generalization.tex", "generalization_curvature.tex", "comparisons.tex"} <= names
    tex = (out / "generalization.tex").read_text()
    # SGD-TRACER has the best mean: 61.00 (0.58), in bold; the paper's CIFAR-100 numbers beside
    assert "\\textbf{61.0 (0.6)}" in tex and "51.0 (0.6)" in tex
    # cells may break after commas (rows only); the header keeps "SGD [p]" whole
    assert "cifar10-3k,\\allowbreak{} resnet20,\\allowbreak{} no augmentation" in tex
    assert "SGD [p]" in tex
    assert f"{PAPER[('resnet20', 'noaug', 'sgd-tracer')]:.2f}" in tex
    assert "the first 3,000 training and the first 1,000 test images" in tex
    assert "reduced version" in tex
    cur = (out / "generalization_curvature.tex").read_text()
    assert "11.0 (0.6)" in cur  # sharpness 10, 11, 12
    assert main(["check", str(tmp_path / "runs")]) == 0
    assert "[suite]" in capsys.readouterr().out
    # a second rendering is byte-identical
    again = tmp_path / "again"
    write_report(runs, again)
    for p in ("generalization.tex", "comparisons.tex", "comparisons.csv"):
        assert (out / p).read_bytes() == (again / p).read_bytes()
    rev = _runs(tmp_path / "rev", _accs(HIGH, [0.56, 0.55, 0.57], LOW))
    assert rev and main(["check", str(tmp_path / "rev")]) == 1


def test_every_generalization_task_has_a_cell_and_paper_numbers_exist():
    full = SUITES.get("generalization")
    names = set(full.tasks) | set(REDUCED.tasks)
    meta = {n: dict(TASKS.get(n).meta) for n in names}
    assert all(set(m) == {"dataset", "model", "setting", "method"} for m in meta.values())
    cells = {(m["model"], m["setting"], m["method"]) for m in meta.values()
             if m["dataset"] == "cifar100"}  # fmt: skip
    assert set(PAPER) <= cells
    for name in full.tasks:
        t = TASKS.get(name)
        assert t.schedule.lr_schedule == "cosine" and t.schedule.epochs == 200
    sgd = TASKS.get(REDUCED.tasks[0])
    assert replace(sgd.optimizer, name="sam", rho=0.05) == TASKS.get(REDUCED.tasks[1]).optimizer


@needs_tex
def test_generalization_tables_compile_with_latex_and_fit_the_page(tmp_path):
    runs = _runs(tmp_path / "runs", _accs(LOW, [0.56, 0.55, 0.57], HIGH))
    out = tmp_path / "report"
    write_report(runs, out)
    stdout = pdflatex(
        out,
        "\\input{generalization.tex}\\input{generalization_curvature.tex}"
        "\\input{comparisons.tex}",
        "[11pt]{article}\\usepackage{booktabs}\\usepackage{amsmath}"
        "\\usepackage[margin=2.5cm]{geometry}",
    )
    assert "Overfull \\hbox" not in stdout, stdout[-3000:]

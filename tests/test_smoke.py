"""The main job end to end (slow): the smoke suite reproduces with every verdict as expected,
writes LaTeX tables that compile and figures, and a regenerated report is byte-identical."""

from __future__ import annotations

import csv
import shutil

import pytest

from eosbench.cli import main
from eosbench.suites import SUITES
from tests.latex import needs_tex, pdflatex

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    rc = main(["reproduce", "--suite", "smoke", "--out", str(out), "--device", "cpu",
               "--jobs", "2", "--no-progress"])
    return rc, out


def test_every_verdict_as_expected(smoke, capsys):
    rc, out = smoke
    assert rc == 0
    with open(out / "report" / "claims.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(SUITES.get("smoke").tasks)  # one claim per run, 3 seeds
    assert all(r["as_expected"] == "True" for r in rows)
    negatives = [r for r in rows if r["expected"] == "FAIL"]
    assert len(negatives) == 3 * 3 and all(r["verdict"] == "FAIL" for r in negatives)


def test_report_files_and_byte_identical_regeneration(smoke, tmp_path):
    _, out = smoke
    report = out / "report"
    for name in ("claims.tex", "curvature.tex", "summary.csv", "sharpness.png", "sharpness.pdf"):
        assert (report / name).stat().st_size > 0, name
    assert main(["report", str(out), "--out", str(tmp_path)]) == 0
    for name in ("claims.tex", "curvature.tex", "summary.csv", "claims.csv"):
        assert (tmp_path / name).read_bytes() == (report / name).read_bytes(), name


@needs_tex
def test_tables_compile_with_latex(smoke, tmp_path):
    _, out = smoke
    for name in ("claims.tex", "curvature.tex"):
        shutil.copy(out / "report" / name, tmp_path / name)
    shutil.copy(out / "report" / "sharpness.pdf", tmp_path / "sharpness.pdf")
    assert "\\begin{longtable}" in (tmp_path / "claims.tex").read_text()  # 21 rows: too tall
    stdout = pdflatex(
        tmp_path,
        "\\input{claims.tex}\\input{curvature.tex}"
        "\\includegraphics[width=\\linewidth]{sharpness.pdf}",
        "{article}\\usepackage{booktabs}\\usepackage{graphicx}\\usepackage{longtable}"
        "\\usepackage[margin=1cm,landscape]{geometry}",
    )
    assert "Float too large" not in stdout, stdout[-3000:]

"""The CLI: listing, one clear line and exit 2 for user errors, check exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eosbench import store
from eosbench.cli import main
from eosbench.suites import TASKS
from eosbench.task import Task, to_dict

TASK = "scalar/linear2/mse/gd/lr=0.2"


def test_tasks_lists_and_filters(capsys):
    assert main(["tasks", "digits/*"]) == 0
    out = capsys.readouterr().out.split()
    assert "digits/fc-tanh/mse/gd/lr=0.1" in out and all(n.startswith("digits/") for n in out)
    assert main(["tasks", "--suite", "smoke"]) == 0
    assert set(capsys.readouterr().out.split()) == set(
        __import__("eosbench.suites").suites.SUITES.get("smoke").tasks
    )
    assert main(["tasks", "--suites"]) == 0
    assert "smoke" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "digits/fc-tanh/mse/gd/lr=0.11"], "did you mean"),
        (["run", TASK, "--set", "optimizer.lrr=1"], "unknown override key"),
        (["run", TASK, "--set", "optimizer.lr=abc"], "expected float"),
        (["run", TASK, "--device", "tpu"], "device"),
        (["tasks", "--suite", "smok"], "unknown suite"),
        (["check", "/nonexistent/path"], "not a run directory"),
        (["reproduce", "--suite", "nope"], "unknown suite"),
        (["run", TASK, "--physical-batch-size", "0"], "must be positive"),
        (["run", TASK, "--checkpoint-every", "-1"], "must be at least 0"),
        (["run", TASK, "--set", "optimizer.lr=-1"], "lr"),
        (["run", TASK, "--set", "model.width=3"], "width"),
        (["reproduce", "--suite", "smoke", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_cifar_data_is_a_user_error(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EOSBENCH_DATA", raising=False)
    task = "digits/fc-tanh/mse/gd/lr=0.1"
    assert main(["run", task, "--set", "data.name=cifar10", "--out", str(tmp_path)]) == 2
    assert "EOSBENCH_DATA" in capsys.readouterr().err


def _fake_run(root, task: Task, records, status="completed"):
    d = store.run_dir(root, "t", 0)
    store.atomic_write_json(
        d / store.RUN_FILE,
        {
            "task": to_dict(task),
            "task_hash": "h",
            "seed": 0,
            "status": status,
            "step": max((r["step"] for r in records), default=0),
            "provenance": {},
        },
    )
    store.atomic_write_text(d / store.METRICS_FILE, store.dumps_records(records))
    return d


def test_check_exit_codes_follow_expectations(tmp_path, capsys):
    from tests.test_claims import lin_traj

    good = TASKS.get(TASK)
    d = _fake_run(tmp_path / "a", good, lin_traj(6.0).series.records())
    assert main(["check", str(tmp_path / "a")]) == 0
    verdicts = json.loads((d / store.CLAIMS_FILE).read_text())
    assert verdicts[0]["verdict"] == "PASS" and verdicts[0]["as_expected"] is True
    _fake_run(tmp_path / "b", good, lin_traj(16.4).series.records())
    assert main(["check", str(tmp_path / "b")]) == 1
    assert "UNEXPECTED" in capsys.readouterr().out


def test_a_run_judged_after_a_claim_was_added_is_judged_by_the_claims_registered_now(
    tmp_path, capsys
):
    from dataclasses import replace

    from tests.test_claims import lin_traj

    good = TASKS.get(TASK)
    a = _fake_run(tmp_path / "a", good, lin_traj(6.0).series.records())
    more = replace(good, claims=good.claims + (replace(good.claims[0], expect="FAIL"),))
    with TASKS.temporarily(TASK, more):
        assert main(["check", str(a)]) == 1  # the added claim expects FAIL, the run passes it
    verdicts = json.loads((a / store.CLAIMS_FILE).read_text())
    assert [v["expected"] for v in verdicts] == ["PASS", "FAIL"]
    assert all(v["detail"].startswith("claims as registered now") for v in verdicts)


def _tree(tmp_path):
    """A results tree with two runs of two 'tasks' (t, u), checked."""
    from tests.test_claims import lin_traj

    root = tmp_path / "runs"
    d = _fake_run(root, TASKS.get(TASK), lin_traj(6.0).series.records())
    (d / "checkpoint.pt").write_bytes(b"not published")
    e = _fake_run(tmp_path / "x", TASKS.get(TASK), lin_traj(16.4).series.records())
    (root / "u").mkdir()
    e.rename(root / "u" / "seed-0")
    return root


def test_report_publish_writes_one_artifact_that_regenerates_the_report(tmp_path, capsys):
    import pandas as pd

    root = _tree(tmp_path)
    assert main(["check", str(root)]) == 1  # u's sharpness 16.4 is above 2/lr: unexpected
    pub = tmp_path / "pub"
    assert main(["report", str(root), "--out", str(pub), "--publish"]) == 0
    files = sorted(p.name for p in pub.iterdir())
    assert "runs.parquet" in files and "claims.tex" in files and "runs" not in files
    table = pd.read_parquet(pub / "runs.parquet")
    assert {"run", "task", "seed", "step", "sharpness", "train_loss"} <= set(table.columns)
    assert sorted(table["run"].unique()) == ["t/seed-0", "u/seed-0"]
    # the artifact alone regenerates every file byte for byte
    again = tmp_path / "again"
    assert main(["report", str(pub), "--out", str(again)]) == 0
    for name in files:
        if name != "runs.parquet":
            assert (again / name).read_bytes() == (pub / name).read_bytes(), name
    # and check judges it from the file, writing nothing
    capsys.readouterr()
    assert main(["check", str(pub)]) == 1
    out = capsys.readouterr().out
    assert f"{pub}:t/seed-0" in out and "1 UNEXPECTED" in out
    assert sorted(p.name for p in pub.iterdir()) == files
    # publishing a published folder again keeps its ids and its bytes
    assert main(["report", str(pub), "--out", str(tmp_path / "re"), "--publish"]) == 0
    assert (tmp_path / "re" / "claims.csv").read_bytes() == (pub / "claims.csv").read_bytes()


def test_report_publish_errors_write_nothing(tmp_path, capsys):
    root = _tree(tmp_path)
    assert main(["report", str(root), "--publish"]) == 2  # where to?
    assert "give --out" in capsys.readouterr().err
    other = tmp_path / "other"  # a second root with a run of the same relative path
    (other / "t").mkdir(parents=True)
    __import__("shutil").copytree(root / "t" / "seed-0", other / "t" / "seed-0")
    assert main(["report", str(root), str(other), "--out", str(tmp_path / "p"), "--publish"]) == 2
    assert "t/seed-0" in capsys.readouterr().err and not (tmp_path / "p").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "runs.parquet").write_bytes(b"PAR1 not really")
    for argv in (["report", str(bad), "--out", str(tmp_path / "o")], ["check", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "runs.parquet" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_check_corrupt_run_json_is_exit_2(tmp_path, capsys):
    d = tmp_path / "r"
    d.mkdir()
    (d / store.RUN_FILE).write_text("{truncated")
    assert main(["check", str(d)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_python_m_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "eosbench", "tasks", "scalar/*"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and TASK in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "eosbench", "run", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown task 'nope'" in r.stderr and "Traceback" not in r.stderr

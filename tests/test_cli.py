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
    d = _fake_run(tmp_path / "a", good, lin_traj(6.0).records)
    assert main(["check", str(tmp_path / "a")]) == 0
    verdicts = json.loads((d / store.CLAIMS_FILE).read_text())
    assert verdicts[0]["verdict"] == "PASS" and verdicts[0]["as_expected"] is True
    _fake_run(tmp_path / "b", good, lin_traj(16.4).records)
    assert main(["check", str(tmp_path / "b")]) == 1
    assert "UNEXPECTED" in capsys.readouterr().out


def test_check_of_a_run_without_its_time_series_reports_the_recorded_verdicts(tmp_path, capsys):
    """Older results/ folders hold run.json and claims.json alone: check must not turn them into
    'not evaluable' FAILs nor overwrite their claims.json."""
    from tests.test_claims import lin_traj

    good = TASKS.get(TASK)
    a = _fake_run(tmp_path / "a", good, lin_traj(6.0).records)
    b = _fake_run(tmp_path / "b", good, lin_traj(16.4).records)
    assert main(["check", str(a)]) == 0 and main(["check", str(b)]) == 1
    capsys.readouterr()
    recorded = {d: (d / store.CLAIMS_FILE).read_bytes() for d in (a, b)}
    for d in (a, b):
        (d / store.METRICS_FILE).unlink()
    assert main(["check", str(a)]) == 0
    assert "recorded, not re-evaluated" in capsys.readouterr().out
    assert main(["check", str(b)]) == 1  # a recorded unexpected verdict stays unexpected
    assert all((d / store.CLAIMS_FILE).read_bytes() == recorded[d] for d in (a, b))
    for bad, message in [
        ('[{"verdict": "PASS"}]', "lacks"),
        ("{}", "not a claims file"),
        ("[]", "0 verdicts recorded for the 1 claims"),
    ]:
        (a / store.CLAIMS_FILE).write_text(bad)
        assert main(["check", str(a)]) == 2
        assert message in capsys.readouterr().err


def test_copies_judged_after_a_claim_was_added_and_cut_off_copies_stay_recorded(
    tmp_path, capsys, monkeypatch
):
    """A run judged after its task gained a claim has more verdicts in claims.json than its
    run.json's task has claims: its copy must still print them.  A copy of a run that was cut
    off (status running, no series) keeps its recorded verdicts too."""
    from dataclasses import replace

    from tests.test_claims import lin_traj

    good = TASKS.get(TASK)
    a = _fake_run(tmp_path / "a", good, lin_traj(6.0).records)
    more = replace(good, claims=good.claims + (replace(good.claims[0], expect="FAIL"),))
    monkeypatch.setitem(TASKS._items, TASK, more)
    assert main(["check", str(a)]) == 1  # the added claim expects FAIL, the run passes it
    assert len(json.loads((a / store.CLAIMS_FILE).read_text())) == 2
    (a / store.METRICS_FILE).unlink()
    capsys.readouterr()
    assert main(["check", str(a)]) == 1
    out = capsys.readouterr().out
    assert out.count("recorded, not re-evaluated") == 2 and "UNEXPECTED" in out
    c = _fake_run(tmp_path / "c", good, lin_traj(6.0).records[:3], status="running")
    assert main(["check", str(c)]) == 1  # not finished: FAIL, unexpected
    before = (c / store.CLAIMS_FILE).read_bytes()
    (c / store.METRICS_FILE).unlink()
    assert main(["check", str(c)]) == 1
    assert "recorded, not re-evaluated" in capsys.readouterr().out
    assert (c / store.CLAIMS_FILE).read_bytes() == before


def test_report_with_runs_publishes_the_run_records(tmp_path, capsys):
    from tests.test_claims import lin_traj

    root = tmp_path / "runs"
    d = _fake_run(root, TASKS.get(TASK), lin_traj(6.0).records)
    (d / "checkpoint.pt").write_bytes(b"not published")
    assert main(["check", str(root)]) == 0
    assert main(["report", str(root), "--out", str(tmp_path / "pub"), "--with-runs"]) == 0
    pub = tmp_path / "pub" / "runs" / d.parent.name / d.name
    assert sorted(p.name for p in pub.iterdir()) == ["claims.json", "run.json"]
    assert all((pub / f).read_bytes() == (d / f).read_bytes() for f in ("run.json", "claims.json"))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "pub" / "runs")]) == 0
    assert "recorded, not re-evaluated" in capsys.readouterr().out
    # a report of the copies alone would be empty tables and plots over the published ones
    summary = (tmp_path / "pub" / "summary.csv").read_bytes()
    assert main(["report", str(tmp_path / "pub" / "runs"), "--out", str(tmp_path / "pub")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert (tmp_path / "pub" / "summary.csv").read_bytes() == summary
    # several roots: one report of their runs, each copy under its path in its root
    other = tmp_path / "other"
    _fake_run(other, TASKS.get(TASK), lin_traj(6.0).records)
    (other / "t").rename(other / "u")
    assert main(["check", str(other)]) == 0
    assert main(["report", str(root), str(other), "--out", str(tmp_path / "both"),
                 "--with-runs"]) == 0
    both = tmp_path / "both" / "runs"
    assert sorted(p.parent.parent.name for p in both.rglob("run.json")) == ["t", "u"]
    # task folders (or run folders) as roots still publish <task>/seed-<n>
    assert main(["report", str(root / "t"), str(other / "u" / "seed-0"), "--out",
                 str(tmp_path / "tasks"), "--with-runs"]) == 0
    tasks = tmp_path / "tasks" / "runs"
    assert sorted(str(p.parent.relative_to(tasks)) for p in tasks.rglob("run.json")) == [
        "t/seed-0", "u/seed-0"]
    capsys.readouterr()
    assert main(["report", str(root), str(other)]) == 2  # which one's report/?
    assert "give --out" in capsys.readouterr().err
    # copies under the scanned root, or a root under the copies, would be found twice
    assert main(["report", str(root), "--with-runs"]) == 2
    assert "outside" in capsys.readouterr().err
    assert not (root / "report" / "runs").exists()
    inner = tmp_path / "pub" / "runs" / "new"
    _fake_run(inner, TASKS.get(TASK), lin_traj(6.0).records)
    assert main(["check", str(inner)]) == 0
    assert main(["report", str(inner), "--out", str(tmp_path / "pub"), "--with-runs"]) == 2
    assert "one inside the other" in capsys.readouterr().err
    # a run never checked has no verdicts to publish
    (d / store.CLAIMS_FILE).unlink()
    assert main(["report", str(root), "--out", str(tmp_path / "p2"), "--with-runs"]) == 2
    assert "eosbench check" in capsys.readouterr().err


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

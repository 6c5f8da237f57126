"""Issue #22: no traceback on any bad input, checkpoints that cannot lie, nothing left behind.

Each case of the issue is a regression test here; the property test at the end drives
``eosbench.cli.main`` with generated overrides, seeds, paths and corrupted files and checks
the contract of docs/inputs.md: exit 0, 1 or 2, no traceback, nothing written on exit 2,
nothing lost that was there before.  All of it uses tasks of a few steps (fast tier).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eosbench import checkpoint, store
from eosbench.cli import main
from eosbench.runner import RunOptions, _Trainer, run
from eosbench.suites import TASKS
from eosbench.task import apply_overrides

SCALAR = "scalar/linear2/mse/gd/lr=0.2"
DIGITS = "digits/fc-tanh/mse/gd/lr=0.1"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (the lock file is empty)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(args)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    return rc, err


def assert_one_line(rc: int, err: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("eosbench: error: "), err


# --- bad options: one line, exit 2, nothing written ------------------------------------------


@pytest.mark.parametrize(
    "task,sets,seed,needle",
    [
        (SCALAR, ["schedule.steps=-5"], None, "schedule.steps"),
        (SCALAR, ["schedule.steps=0"], None, "schedule.steps"),
        (SCALAR, ["schedule.steps=none"], None, "schedule.epochs"),
        (SCALAR, [], "18446744073709551616", "seed"),
        (SCALAR, [], "-1", "seed"),
        (SCALAR, ["data.noise_seed=-3"], None, "noise_seed"),
        (DIGITS, ["model.width=100000000000"], None, "model"),
        (DIGITS, ["model.width=200000"], None, "GiB"),
        (SCALAR, ["optimizer.lr=1e39"], None, "optimizer.lr"),
        (SCALAR, ["optimizer.lr=1e-300"], None, "optimizer.lr"),
        (SCALAR, ["optimizer.weight_decay=1e30", "optimizer.lr=1e10"], None, "weight_decay"),
        (SCALAR, ["model.init_scale=1e39"], None, "init_scale"),
        (SCALAR, ["loss=ce"], None, "loss=ce"),
        (DIGITS, ["data.augment=true"], None, "data.augment"),
        (SCALAR, ["optimizer.batch_size=1000"], None, "batch_size"),
        (SCALAR, ["schedule.eval_every=-1"], None, "eval_every"),
    ],
)
def test_bad_value_is_one_line_and_writes_nothing(tmp_path, capsys, task, sets, seed, needle):
    out = tmp_path / "out"
    args = ["run", task, "--out", str(out), "--device", "cpu", "--no-progress"]
    args += [a for s in sets for a in ("--set", s)] + (["--seed", seed] if seed else [])
    rc, err = cli(args, capsys)
    assert_one_line(rc, err)
    assert needle in err
    assert not out.exists()  # not even a lock


def test_reproduce_checks_every_run_before_the_first(tmp_path, capsys):
    rc, err = cli(["reproduce", "--suite", "linear-net", "--seeds", "0,-4", "--out",
                   str(tmp_path / "o"), "--device", "cpu", "--no-progress"], capsys)  # fmt: skip
    assert_one_line(rc, err)
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_or_read_only(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, err = cli(["run", SCALAR, "--out", str(f), "--device", "cpu", "--no-progress"], capsys)
    assert_one_line(rc, err)
    assert str(f) in err and f.read_text() == "x"
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes into read-only directories: the OSError as it would be
        ro.mkdir()

        def refuse(self, *a, **k):
            raise PermissionError(13, "Permission denied", str(self))

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Path, "mkdir", refuse)
            rc, err = cli(["run", SCALAR, "--out", str(ro), "--device", "cpu"], capsys)
        assert_one_line(rc, err)
        assert "Permission denied" in err and str(ro) in err
        return
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, err = cli(["run", SCALAR, "--out", str(ro), "--device", "cpu", "--no-progress"], capsys)
        assert_one_line(rc, err)
        assert str(ro) in err
    finally:
        ro.chmod(0o755)


def test_a_bug_says_so_before_its_traceback(monkeypatch, capsys):
    from eosbench import cli as cli_module

    def boom(a):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli_module.COMMANDS, "tasks", boom)
    with pytest.raises(RuntimeError):
        main(["tasks"])
    assert "internal error: this is a bug" in capsys.readouterr().err


def test_init_scale_overflow_is_diverged_not_a_crash(tmp_path, capsys):
    out = tmp_path / "o"
    rc, _ = cli(["run", DIGITS, "--set", "model.init_scale=1e30", "--set", "schedule.steps=3",
                 "--set", "data.n_train=100", "--out", str(out), "--device", "cpu",
                 "--no-progress"], capsys)  # fmt: skip
    assert rc == 0
    (rdir,) = store.find_runs([out])
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "diverged" and meta["diverged_at"] == 0
    rc, err = cli(["check", str(out)], capsys)
    assert rc == 1 and "Traceback" not in err


# --- results files: one strict parser, cut series, untrained runs ----------------------------


def finished_run(tmp_path, capsys, steps: int = 4) -> Path:
    out = tmp_path / "o"
    rc, _ = cli(["run", SCALAR, "--set", f"schedule.steps={steps}", "--out", str(out),
                 "--device", "cpu", "--no-progress"], capsys)  # fmt: skip
    assert rc == 0
    return store.find_runs([out])[0]


@pytest.mark.parametrize(
    "content,needle",
    [
        (b'{"step": 0, "loss": 1.0}\n\xff\xfe\n', "UTF-8"),
        (b'{"step": 0, "loss": "high"}\n', ":1: loss"),
        (b'{"step": 0}\n[1, 2]\n', ":2: expected a JSON object"),
        (b'{"loss": 1.0}\n', ":1: expected an integer 'step'"),
        (b'{"step": true}\n', ":1: expected an integer 'step'"),
        (b'{"step": 0, "loss": NaN}\n', ":1:"),
        (b'{"step": 0, "x": [1]}\n', ":1: x"),
    ],
)
def test_bad_metrics_file_is_one_line_naming_file_and_line(tmp_path, capsys, content, needle):
    rdir = finished_run(tmp_path, capsys)
    (rdir / store.METRICS_FILE).write_bytes(content)
    before = snapshot(tmp_path / "o")
    rc, err = cli(["check", str(tmp_path / "o")], capsys)
    assert_one_line(rc, err)
    assert str(rdir / store.METRICS_FILE) in err and needle in err
    assert snapshot(tmp_path / "o") == before  # no claims.json written


def test_one_jsonl_parser():
    from eosbench.leaderboard import sandbox

    assert sandbox.json_lines is store.json_lines and sandbox.LineError is store.LineError
    assert sandbox.loads_records(b'{"step": 1}\n\n') == [(1, {"step": 1})]
    with pytest.raises(store.LineError):
        sandbox.loads_records(b'{"step": 1, "step": 2}\n')  # strict: duplicate keys


def test_cut_series_is_noticed(tmp_path, capsys):
    rdir = finished_run(tmp_path, capsys, steps=6)
    lines = (rdir / store.METRICS_FILE).read_bytes().splitlines(keepends=True)
    (rdir / store.METRICS_FILE).write_bytes(b"".join(lines[:-2]))  # cut at a line boundary
    rc, err = cli(["check", str(rdir)], capsys)
    assert_one_line(rc, err)
    assert "cut" in err and not (rdir / store.CLAIMS_FILE).exists()


def test_a_run_that_never_trained_passes_no_control(tmp_path, capsys):
    rdir = finished_run(tmp_path, capsys)
    meta = store.read_json(rdir / store.RUN_FILE)
    meta["step"] = 0
    store.atomic_write_json(rdir / store.RUN_FILE, meta)
    store.atomic_write_text(rdir / store.METRICS_FILE, "")
    rc, err = cli(["check", str(rdir)], capsys)
    assert_one_line(rc, err)
    assert "never trained" in err


def test_run_json_with_a_bad_task_names_the_file(tmp_path, capsys):
    rdir = finished_run(tmp_path, capsys)
    meta = store.read_json(rdir / store.RUN_FILE)
    meta["task"] = {"name": "x"}
    store.atomic_write_json(rdir / store.RUN_FILE, meta)
    for cmd in (["check", str(rdir)], ["report", str(rdir), "--out", str(tmp_path / "r")]):
        rc, err = cli(cmd, capsys)
        assert_one_line(rc, err)
        assert str(rdir / store.RUN_FILE) in err
    assert not (tmp_path / "r").exists()


def test_results_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        store.atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640


def test_garbage_tarball_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    monkeypatch.setenv("EOSBENCH_CACHE", str(tmp_path / "cache"))
    task = next(n for n in TASKS.list("cifar10-1k/*"))
    rc, err = cli(["run", task, "--data", str(data), "--out", str(tmp_path / "o"), "--device",
                   "cpu", "--no-progress"], capsys)  # fmt: skip
    assert_one_line(rc, err)
    assert "cifar-10-python.tar.gz" in err and not (tmp_path / "o").exists()


def test_truncated_tarball_member_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        payload = b"\x80\x04garbage"
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    (data / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    task = next(n for n in TASKS.list("cifar10-1k/*"))
    rc, err = cli(["run", task, "--data", str(data), "--out", str(tmp_path / "o"), "--device",
                   "cpu", "--no-progress"], capsys)  # fmt: skip
    assert_one_line(rc, err)


# --- checkpoints that cannot lie ---------------------------------------------------------------

TASK = apply_overrides(TASKS.get(SCALAR), ["schedule.steps=30"])
OPTS = RunOptions(device="cpu", progress=False, checkpoint_every=5)


def series(rdir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.endswith("_seconds")}
        for r in store.read_records(rdir / store.METRICS_FILE)
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref")
    return series(run(TASK, 0, RunOptions(out=out, device="cpu", progress=False)))


def killed_run(out: Path, monkeypatch, at: int = 12) -> tuple[Path, list[int]]:
    """A run stopped at step ``at`` as by a kill (its last checkpoint at step 10); the run.json
    steps seen at the kill."""
    seen: list[int] = []
    step = _Trainer._step

    def dying(self, total):
        if self.step == at:
            seen.append(store.read_json(self.rdir_for_test / store.RUN_FILE)["step"])
            raise KeyboardInterrupt
        return step(self, total)

    from eosbench import runner

    rdir = runner.run_path(TASK, 0, RunOptions(out=out))
    monkeypatch.setattr(_Trainer, "_step", dying)
    monkeypatch.setattr(_Trainer, "rdir_for_test", rdir, raising=False)
    with pytest.raises(KeyboardInterrupt):
        run(TASK, 0, RunOptions(out=out, device="cpu", progress=False, checkpoint_every=5))
    monkeypatch.setattr(_Trainer, "_step", step)
    return rdir, seen


def resume(out: Path, capsys) -> tuple[Path, str]:
    rdir = run(TASK, 0, RunOptions(out=out, device="cpu", progress=False, checkpoint_every=5))
    return rdir, capsys.readouterr().err


def test_resume_of_a_good_checkpoint_and_run_json_not_stale(tmp_path, monkeypatch, capsys,
                                                             reference):  # fmt: skip
    rdir, seen = killed_run(tmp_path, monkeypatch)
    assert seen == [10]  # run.json was rewritten with the checkpoint at step 10
    _, err = resume(tmp_path, capsys)
    assert "warning" not in err
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "completed" and meta["resumed_from_step"] == 10
    assert series(rdir) == reference


def _repack(path: Path, edit) -> None:
    """Rewrite a checkpoint with ``edit(state)`` applied and a *valid* header (a hostile or
    buggy writer): the state check must catch it."""
    header, payload = checkpoint.read(path, {})
    state = torch.load(io.BytesIO(payload), weights_only=False)
    state = edit(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header.update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    head = json.dumps(header).encode() + b"\n"
    path.write_bytes(checkpoint.MAGIC + head + payload)


def _flip_bit(path: Path) -> None:
    """One flipped bit in a weight tensor (the parameter ``a``'s float32 bytes)."""
    data = bytearray(path.read_bytes())
    _, payload = checkpoint.read(path, {})
    a = torch.load(io.BytesIO(payload), weights_only=False)["model"]["a"]
    i = data.index(struct.pack("<f", float(a)))
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _other_seed(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"seed":0', b'"seed":1', 1))


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda p: torch.save([1, 2, 3], p), "not an eosbench checkpoint"),
        (lambda p: torch.save({"step": 10}, p), "not an eosbench checkpoint"),
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (_flip_bit, "SHA-256"),
        (_other_seed, "another run"),
        (lambda p: _repack(p, lambda s: {k: v for k, v in s.items() if k != "model"}), "load"),
        (lambda p: _repack(p, lambda s: {**s, "model": {"a": torch.zeros(3), "b": torch.zeros(2)}}),
         "load"),  # fmt: skip
        (lambda p: _repack(p, lambda s: [s]), "not a trainer's state"),
    ],
    ids=["list", "dict", "truncated", "bit-flip", "other-seed", "no-model", "shapes", "repacked"],
)
def test_damaged_or_foreign_checkpoint_is_set_aside(tmp_path, monkeypatch, capsys, reference,
                                                    damage, reason):  # fmt: skip
    rdir, _ = killed_run(tmp_path, monkeypatch)
    ck = rdir / checkpoint.FILE
    damage(ck)
    damaged = ck.read_bytes()
    capsys.readouterr()
    _, err = resume(tmp_path, capsys)
    warnings = [x for x in err.splitlines() if "warning" in x]
    assert len(warnings) == 1 and reason in warnings[0] and "set aside" in warnings[0], err
    meta = store.read_json(rdir / store.RUN_FILE)
    assert meta["status"] == "completed" and "resumed_from_step" not in meta
    assert series(rdir) == reference  # started over: the uninterrupted series
    assert (rdir / checkpoint.REJECTED).read_bytes() == damaged  # nothing lost
    assert not ck.exists()


def test_temp_files_of_interrupted_writes_are_cleaned_up(tmp_path, monkeypatch, capsys):
    rdir, _ = killed_run(tmp_path, monkeypatch)
    junk = [rdir / ".checkpoint.pt.k2j3.tmp", rdir / ".metrics.jsonl.x.tmp", rdir / ".run.json.y.tmp"]
    for j in junk:
        j.write_bytes(b"\0" * 1000)
    other = rdir / "notes.txt"
    other.write_text("mine")
    resume(tmp_path, capsys)
    assert not any(j.exists() for j in junk) and other.read_text() == "mine"


# --- the leaderboard: one version ------------------------------------------------------------


def test_submission_runs_agree_on_version_and_commit():
    from types import SimpleNamespace

    from eosbench.leaderboard import validator

    class C:
        def __init__(self):
            self.problems = []

        def bad(self, *a):
            self.problems.append(a)

    def runs(*versions, commits=None):
        commits = commits or ["abc"] * len(versions)
        return [SimpleNamespace(id=f"r{i}", provenance={"eosbench": v, "git_commit": g})
                for i, (v, g) in enumerate(zip(versions, commits, strict=True))]  # fmt: skip

    m = SimpleNamespace(code=SimpleNamespace(package="eosbench", version="0.1.0"))
    for rs, n in ((runs("0.1.0", "0.1.0"), 0), (runs("0.1.0", "0.2.0"), 2), (runs("0.2.0"), 1)):
        c = C()
        validator._check_version(c, m, rs)
        assert len(c.problems) == n
    c = C()
    validator._check_version(c, m, runs("0.1.0", "0.1.0", commits=["abc", "abd+dirty"]))
    assert [p[1] for p in c.problems] == ["provenance.git_commit"] * 2
    plugin = SimpleNamespace(code=SimpleNamespace(package="my-opt", version="3.0"))
    c = C()
    validator._check_version(c, plugin, runs("0.1.0"))
    assert not c.problems


# --- the property: the CLI's contract under generated input ----------------------------------

KEYS = ["schedule.steps", "optimizer.lr", "optimizer.momentum", "model.init_scale", "seed",
        "data.n_train", "optimizer.batch_size", "schedule.eval_every", "loss", "model.width",
        "data.noise_seed", "schedule.epochs", "nonsense.key", "optimizer.weight_decay"]  # fmt: skip
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["none", "nan", "inf", "-0", "1e39", "1e-320", "ce", "mse", "true", "", "abc",
                     "1", "2", "3", "0.1", "0.5", "1e30"]),  # fmt: skip
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)
CORRUPTIONS = st.sampled_from(["none", "metrics-bytes", "metrics-cut", "run-json", "checkpoint",
                               "claims"])  # fmt: skip


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    sets=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3),
    seed=st.one_of(st.none(), st.integers(-(2**65), 2**65)),
    corruption=CORRUPTIONS,
    junk=st.binary(max_size=40),
    out_kind=st.sampled_from(["dir", "file", "nested-file"]),
)
def test_cli_contract(tmp_path_factory, capsys, sets, seed, corruption, junk, out_kind):
    root = tmp_path_factory.mktemp("p")
    out = root / "out"
    # a finished run already there, possibly damaged: nothing of it may be lost
    rc = main(["run", SCALAR, "--set", "schedule.steps=3", "--out", str(out), "--device", "cpu",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    rdir = store.find_runs([out])[0]
    if corruption == "metrics-bytes":
        (rdir / store.METRICS_FILE).write_bytes(junk + b"\n")
    elif corruption == "metrics-cut":
        (rdir / store.METRICS_FILE).write_bytes((rdir / store.METRICS_FILE).read_bytes()[:-40])
    elif corruption == "run-json":
        (rdir / store.RUN_FILE).write_bytes(junk)
    elif corruption == "checkpoint":
        (rdir / checkpoint.FILE).write_bytes(junk)
    elif corruption == "claims":
        (rdir / store.CLAIMS_FILE).write_bytes(junk)
    target = out
    if out_kind != "dir":
        target = root / "f"
        target.write_bytes(b"keep")
        if out_kind == "nested-file":
            target = target / "sub"
    before = snapshot(root)
    args = ["run", SCALAR, "--set", "schedule.steps=3", "--out", str(target), "--device", "cpu",
            "--no-progress"]  # fmt: skip
    for k, v in sets:
        args += ["--set", f"{k}={v}"]
    if seed is not None:
        args += ["--seed", str(seed)]
    for cmd in (args, ["check", str(out)]):
        try:
            rc = main(cmd)
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err
        assert rc in (0, 1, 2), (cmd, rc, err)
        assert "Traceback" not in err and "internal error" not in err, (cmd, err)
        after = snapshot(root)
        if rc == 2:
            assert after == before, cmd  # nothing written
        for name, data in before.items():  # nothing lost
            if name not in after:
                # a damaged checkpoint is set aside (renamed), never deleted
                assert name.endswith(checkpoint.FILE) and any(
                    a.endswith(checkpoint.REJECTED) and after[a] == data for a in after
                ), name
        before = after

"""Hub data sets (eosbench.data.hub), read by ``datasets`` from directories in the Hub's layout.

The tests run offline: they write small data sets the way the Hub stores them (Parquet files
with the ``datasets`` features in their metadata, a README whose ``configs`` name each split's
files) from the offline CIFAR-10 copy and from generated images, and read them through the same
code path as a Hub repository (``datasets.load_dataset`` on the directory).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
from PIL import Image  # noqa: E402  (datasets brings pillow)

from eosbench.cli import main  # noqa: E402
from eosbench.data import DATASETS, download, load_dataset  # noqa: E402
from eosbench.data.hub import verify  # noqa: E402
from eosbench.errors import DataError, OverrideError  # noqa: E402
from eosbench.task import DataSpec, Task, apply_overrides, options  # noqa: E402

DATA = os.environ.get("EOSBENCH_DATA")
needs_cifar = pytest.mark.skipif(
    not (DATA and (Path(DATA) / "cifar-10-python-subset.tar.xz").exists()
         or DATA and (Path(DATA) / "cifar-10-python.tar.gz").exists()),
    reason="needs the CIFAR-10 copy in $EOSBENCH_DATA",
)  # fmt: skip


def write_hub(root: Path, splits: dict, *, config: str = "plain_text", image: str = "img",
              label: str = "label", classes: int | None = 10) -> Path:  # fmt: skip
    """A data set in the Hub's layout: ``splits`` maps a split to (uint8 images, labels)."""
    label_feature = datasets.ClassLabel(num_classes=classes) if classes else datasets.Value("int64")
    features = datasets.Features({image: datasets.Image(), label: label_feature})
    (root / config).mkdir(parents=True, exist_ok=True)
    card = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for name, (images, labels) in splits.items():
        rows = {image: [Image.fromarray(a) for a in images], label: [int(v) for v in labels]}
        ds = datasets.Dataset.from_dict(rows, features=features)
        ds.to_parquet(str(root / config / f"{name}-00000-of-00001.parquet"))
        card += [f"  - split: {name}", f"    path: {config}/{name}-*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def cifar_pool():
    return DATASETS.get("cifar10")(DataSpec(name="cifar10"), Path(DATA))


def cifar_copy(root: Path, n_train: int = 60, n_test: int = 30, swap: tuple[int, int] | None = None):
    """A Hub-layout copy of the first rows of the offline CIFAR-10 pools (rows ``swap``
    exchanged in the training split)."""
    pool = cifar_pool()
    out = {}
    for name, x, y, n in (("train", pool.x_train, pool.y_train, n_train),
                          ("test", pool.x_test, pool.y_test, n_test)):  # fmt: skip
        u8 = np.rint(x[:n] * 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()
        labels = y[:n].copy()
        if swap is not None and name == "train":
            i, j = swap
            u8[[i, j]], labels[[i, j]] = u8[[j, i]], labels[[j, i]]
        out[name] = (u8, labels)
    return write_hub(root, out)


def gray(n: int, seed: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@needs_cifar
def test_a_hub_copy_of_cifar10_gives_the_official_pipelines_tensors(tmp_path):
    repo = cifar_copy(tmp_path / "cifar10")
    cache_before = (Path(DATA) / "huggingface").exists()
    hub = load_dataset(DataSpec(name="hub-cifar10", n_train=50, n_test=20,
                                options=options(repo=str(repo))))  # fmt: skip
    official = load_dataset(DataSpec(name="cifar10", n_train=50, n_test=20))
    assert hub.checksum == official.checksum  # the same bytes after every preprocessing step
    assert hub.x_train.shape == (50, 3, 32, 32) and hub.n_classes == 10
    assert "local copy cifar10/" in hub.identity and "config plain_text" in hub.identity
    assert "uint8 sha256" in hub.identity
    raw = load_dataset(DataSpec(name="hub-cifar10", n_train=5, n_test=5, standardize=False,
                                options=options(repo=str(repo))))  # fmt: skip
    assert "scaled to [0, 1]" in raw.identity
    assert (Path(DATA) / "huggingface").exists() == cache_before  # a local copy writes no cache


@needs_cifar
def test_verify_compares_row_by_row_with_the_official_files(tmp_path, capsys):
    repo = cifar_copy(tmp_path / "same")
    ok, lines = verify("hub-cifar10", DataSpec(name="hub-cifar10", options=options(repo=str(repo))),
                       None, Path(DATA), n=1000)  # fmt: skip
    assert ok and lines[0].startswith("train: the first 60 rows") and "test: the first 30" in lines[1]
    swapped = cifar_copy(tmp_path / "swapped", swap=(3, 4))
    ok, lines = verify("hub-cifar10", DataSpec(name="hub-cifar10",
                                               options=options(repo=str(swapped))),
                       None, Path(DATA))  # fmt: skip
    assert not ok and "2 of the first 60 rows differ" in lines[0] and "row 3 (image)" in lines[0]
    assert lines[1].startswith("test: the first 30 rows")
    assert main(["data", "verify", "hub-cifar10", "--option", f"repo={swapped}"]) == 1
    assert "row 3" in capsys.readouterr().out
    assert main(["data", "verify", "hub-cifar10", "--option", f"repo={repo}", "--n", "10"]) == 0
    assert "the first 10 rows" in capsys.readouterr().out


def test_grayscale_images_become_one_channel_in_row_order(tmp_path):
    tr, te = gray(12, 0), gray(5, 1)
    repo = write_hub(tmp_path / "g", {"train": (tr, np.arange(12) % 10), "test": (te, np.arange(5))},
                     config="mnist", image="image")  # fmt: skip
    spec = DataSpec(name="hub", standardize=False, options=options(repo=str(repo), config="mnist"))
    d = load_dataset(spec)
    assert d.x_train.shape == (12, 1, 28, 28) and d.n_classes == 10
    np.testing.assert_array_equal(d.x_train.numpy()[:, 0], (tr / 255.0).astype(np.float32))
    np.testing.assert_array_equal(d.y_test.numpy(), np.arange(5))
    again = load_dataset(spec)
    assert again.checksum == d.checksum


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch):
    ok = {"train": (gray(4, 0), [0, 1, 2, 1]), "test": (gray(2, 1), [0, 1])}
    repo = write_hub(tmp_path / "ok", ok, image="image", classes=3)

    def load(**o):
        return load_dataset(DataSpec(name="hub", options=options(**o)))

    with pytest.raises(DataError, match="no column 'img' \\(it has: image, label\\)") as e:
        load(repo=str(repo), config="plain_text", image="img")
    _one_line(e)
    with pytest.raises(DataError, match="no split 'validation'"):
        load(repo=str(repo), config="plain_text", test="validation")
    mixed = {"train": ([*gray(2, 0), *gray(1, 2, size=32)], [0, 1, 2]), "test": (gray(2, 1), [0, 1])}
    with pytest.raises(DataError, match="row 2 is a \\(1, 32, 32\\) image, row 0 \\(1, 28, 28\\)") as e:
        load(repo=str(write_hub(tmp_path / "mixed", mixed, image="image")), config="plain_text")
    _one_line(e)
    big = {"train": (gray(3, 0), [0, 5, 1]), "test": (gray(2, 1), [0, 1])}
    plain = write_hub(tmp_path / "big", big, image="image", classes=None)
    with pytest.raises(DataError, match="label 5 at row 1 is outside 0..2") as e:
        load(repo=str(plain), config="plain_text", classes=3)
    _one_line(e)
    with pytest.raises(DataError, match="not a ClassLabel; give data.options.classes"):
        load(repo=str(plain), config="plain_text")
    with pytest.raises(DataError, match="name a Hub data set"):
        load()
    with pytest.raises(DataError, match="read only at a pinned commit"):
        load(repo="ylecun/mnist")
    with pytest.raises(DataError, match="no such directory"):
        load(repo=str(tmp_path / "typo"))
    palette = tmp_path / "palette"
    write_hub(palette, ok, image="image", classes=3)
    pal = {"train": ([Image.fromarray(a).convert("P") for a in gray(2, 0)], [0, 1])}
    rows = {"image": pal["train"][0], "label": pal["train"][1]}
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(
        str(palette / "plain_text" / "train-00000-of-00001.parquet"))
    with pytest.raises(DataError, match="row 0 is a 'P' image"):
        load(repo=str(palette), config="plain_text")
    with pytest.raises(DataError, match="has no option data.options.colour"):
        load(repo=str(repo), colour=1)
    with pytest.raises(DataError, match="'digits' has no option data.options.repo"):
        load_dataset(DataSpec(name="digits", options=options(repo="x")))
    # a revision that is not in the cache, while offline: an error, not a download
    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    with pytest.raises(DataError, match="offline: that revision is not in the cache") as e:
        load_dataset(DataSpec(name="hub-mnist"), tmp_path / "empty-root")
    _one_line(e)


def test_offline_reads_exactly_the_pinned_revision_from_the_cache(tmp_path, monkeypatch):
    from eosbench.data.hub import MNIST_REVISION

    # huggingface_hub's cache layout: one snapshot folder per commit
    snap = tmp_path / "huggingface" / "datasets--ylecun--mnist" / "snapshots" / MNIST_REVISION
    write_hub(snap, {"train": (gray(6, 0), np.arange(6)), "test": (gray(3, 1), np.arange(3))},
              config="mnist", image="image")  # fmt: skip
    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    spec = DataSpec(name="hub-mnist", n_train=6, n_test=3, options=options(config="mnist"))
    d = load_dataset(spec, tmp_path)
    assert d.x_train.shape == (6, 1, 28, 28)
    assert d.identity.startswith(f"ylecun/mnist@{MNIST_REVISION[:12]} (Hugging Face datasets")
    other = replace(spec, options=options(config="mnist", revision="0" * 40))
    with pytest.raises(DataError, match="offline: that revision is not in the cache"):
        load_dataset(other, tmp_path)  # the cached copy of another commit is not read instead
    monkeypatch.setenv("EOSBENCH_OFFLINE", "false")  # the same switch values as the CIFAR download
    from eosbench.data import offline

    assert not offline() and offline("NOPE") is False
    monkeypatch.setenv("EOSBENCH_OFFLINE", "yes")
    assert offline()


def test_offline_cli_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    for argv in (["data", "info", "hub-mnist", "--data", str(tmp_path)],
                 ["data", "download", "hub-mnist", "--data", str(tmp_path)],
                 ["data", "info", "hub", "--option", "colour=1"],
                 ["data", "info", "nope"],
                 ["data", "verify", "hub"],
                 ["data", "verify", "digits"],
                 ["data", "verify", "hub-cifar10", "--against", "stream-gaussian"],
                 ["data", "download", "digits", "--data", str(tmp_path)],
                 ["data", "download", "hub", "--option", f"repo={tmp_path}", "--data",
                  str(tmp_path)]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not any((tmp_path / "huggingface").glob("**/*.arrow"))  # nothing was downloaded


def test_data_info_and_a_run_on_a_hub_data_set(tmp_path, capsys):
    from eosbench import store
    from eosbench.runner import RunOptions, run
    from eosbench.suites import TASKS

    splits = {"train": (gray(40, 0, size=8), np.arange(40) % 4),
              "test": (gray(10, 1, size=8), np.arange(10) % 4)}  # fmt: skip
    repo = write_hub(tmp_path / "tiny", splits, image="image", classes=4)
    assert main(["data", "info", "hub", "--option", f"repo={repo}", "--option",
                 "config=plain_text"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "train (40, 1, 8, 8) test (10, 1, 8, 8) classes 4" in out
    task = apply_overrides(TASKS.get("digits/fc-tanh/mse/gd/lr=0.1"), [
        "data.name=hub", f"data.options.repo={repo}", "data.options.config=plain_text",
        "data.n_train=40", "data.n_test=10", "schedule.steps=3", "model.width=16"])  # fmt: skip
    task = replace(task, measurements=())
    rdir = run(task, 0, RunOptions(out=tmp_path / "runs", device="cpu", progress=False))
    meta = json.loads((rdir / store.RUN_FILE).read_text())
    assert meta["status"] == "completed"
    assert meta["provenance"]["dataset"].startswith("local copy tiny/ (Hugging Face datasets")
    assert meta["task"]["data"]["options"]["repo"] == str(repo)


def test_data_options_overrides_are_typed_by_the_loaders_defaults():
    task = Task(name="t", data=DataSpec(name="hub-cifar10"))
    out = apply_overrides(task, ["data.options.revision=abc123", "data.options.classes=10"])
    assert dict(out.data.options) == {"classes": 10, "revision": "abc123"}
    assert dict(apply_overrides(task, ["data.options.config="]).data.options) == {"config": ""}
    # the name first, whatever the order: the options are those of the family it names
    late = apply_overrides(Task(name="t"), ["data.options.repo=a/b", "data.name=hub"])
    assert late.data.name == "hub" and dict(late.data.options) == {"repo": "a/b"}
    with pytest.raises(OverrideError, match="data 'hub-cifar10' has no option 'colour'"):
        apply_overrides(task, ["data.options.colour=red"])
    with pytest.raises(OverrideError, match="expected int"):
        apply_overrides(task, ["data.options.classes=ten"])
    with pytest.raises(OverrideError, match="it has none"):
        apply_overrides(Task(name="t"), ["data.options.repo=x"])


def test_registered_hub_tasks_carry_their_commit_in_the_hash():
    from eosbench.data.hub import MNIST_REVISION
    from eosbench.suites import TASKS
    from eosbench.task import computation_hash

    t = TASKS.get("hub-mnist-1k/fc-tanh/mse/gd/lr=0.1")
    assert dict(t.data.options)["revision"] == MNIST_REVISION
    moved = apply_overrides(t, ["data.options.revision=" + "1" * 40])
    assert computation_hash(moved) != computation_hash(t)


def test_registered_hub_sources_pin_a_commit():
    for name, repo in (("hub-cifar10", "uoft-cs/cifar10"), ("hub-mnist", "ylecun/mnist")):
        o = DATASETS.get(name).OPTIONS
        assert o["repo"] == repo and len(o["revision"]) == 40
        int(o["revision"], 16)
    assert DATASETS.get("hub").OPTIONS["revision"] == ""  # the generic source pins nothing


def test_download_needs_a_root(monkeypatch):
    monkeypatch.delenv("EOSBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="no data directory"):
        download("hub-mnist")

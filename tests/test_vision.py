"""torchvision as a model family and as data readers (the vision extra: nox -s tests_vision).

Without torchvision installed this module is skipped (what a user without the extra gets is
tested in test_models.py); it runs in the ``tests_vision`` session, which installs the torch/torchvision pair that
works on the CI machine.  The data readers are tested on small files in the official formats
written here (MNIST's idx files, SVHN's .mat, CIFAR's pickles).
"""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from eosbench.data import load_dataset
from eosbench.errors import DataError, OverrideError
from eosbench.models import build_model
from eosbench.task import DataSpec, ModelSpec, apply_overrides, options

tv = pytest.importorskip("torchvision")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet18_with_the_cifar_stem():
    torch.manual_seed(0)
    m = build_model(ModelSpec(name="torchvision"), (3, 32, 32), 10)
    assert n_params(m) == 11_173_962
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    plain = build_model(ModelSpec(name="torchvision", options=options(cifar_stem=False)),
                        (3, 32, 32), 10)  # fmt: skip
    assert n_params(plain) == 11_181_642  # torchvision's own: 7x7 stride-2 stem and max-pool
    assert plain.conv1.kernel_size == (7, 7) and isinstance(plain.maxpool, nn.MaxPool2d)
    gray = build_model(ModelSpec(name="torchvision"), (1, 28, 28), 10)
    assert gray.conv1.in_channels == 1 and gray(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_any_torchvision_classifier_by_name_and_bad_options():
    m = build_model(ModelSpec(name="torchvision", options=options(arch="mobilenet_v3_small")),
                    (3, 32, 32), 4)  # fmt: skip
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    # ViTs are built for the data's image size; GoogLeNet trains with one output
    vit = build_model(ModelSpec(name="torchvision", options=options(arch="vit_b_32")),
                      (3, 32, 32), 4)  # fmt: skip
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    g = build_model(ModelSpec(name="torchvision", options=options(arch="googlenet")),
                    (3, 32, 32), 4).train()  # fmt: skip
    out = g(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    with pytest.raises(OverrideError, match="not a torchvision classification model"):
        build_model(ModelSpec(name="torchvision", options=options(arch="resnet19")), (3, 32, 32), 10)
    with pytest.raises(OverrideError, match="takes 3-channel images"):
        build_model(ModelSpec(name="torchvision", options=options(arch="mobilenet_v3_small")),
                    (1, 28, 28), 10)  # fmt: skip
    with pytest.raises(OverrideError, match="model.width"):
        build_model(ModelSpec(name="torchvision", width=8), (3, 32, 32), 10)
    with pytest.raises(OverrideError, match="images \\[C, H, W\\]"):
        build_model(ModelSpec(name="torchvision"), (64,), 10)


# -- data readers on files in the official formats ---------------------------------------


def write_idx(root: Path, folder: str, images: dict, labels: dict) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for stem, x in images.items():
        n, h, w = x.shape
        header = np.array([0x803, n, h, w], dtype=">i4").tobytes()
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(header + x.astype(np.uint8).tobytes())
    for stem, y in labels.items():
        header = np.array([0x801, len(y)], dtype=">i4").tobytes()
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(header + np.asarray(y, np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("tv-mnist", "MNIST"), ("tv-fashion-mnist", "FashionMNIST")])
def test_mnist_readers_on_idx_files(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    xs = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    ys = {"train": np.arange(12) % 10, "t10k": np.arange(5)}
    write_idx(tmp_path, folder, xs, ys)
    d = load_dataset(DataSpec(name=name, standardize=False), tmp_path)
    assert d.x_train.shape == (12, 1, 28, 28) and d.n_classes == 10
    np.testing.assert_array_equal(d.x_train.numpy()[:, 0], (xs["train"] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(d.y_test.numpy(), ys["t10k"])
    assert f"torchvision {tv.__version__} {folder} reader" in d.identity


def test_missing_files_are_one_line_errors(tmp_path):
    for name in ("tv-mnist", "tv-svhn", "tv-cifar10"):
        with pytest.raises(DataError, match="found no readable files") as e:
            load_dataset(DataSpec(name=name), tmp_path)
        assert "\n" not in str(e.value)
    from eosbench.data.vision import LOADERS

    with pytest.raises(DataError, match="set EOSBENCH_DATA"):
        LOADERS["tv-mnist"](DataSpec(name="tv-mnist"), None)


def test_svhn_reader_on_mat_files(tmp_path, monkeypatch):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    for split, n in (("train", 10), ("test", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # the files' labels: 1..10, 10 for a 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    # generated files cannot have the official MD5, which torchvision checks: accept them
    monkeypatch.setattr(tv.datasets.SVHN, "_check_integrity", lambda self: True)
    d = load_dataset(DataSpec(name="tv-svhn", standardize=False), tmp_path)
    assert d.x_train.shape == (10, 3, 32, 32)
    expected = np.arange(10) % 10 + 1
    expected[expected == 10] = 0  # torchvision's mapping of the files' 10
    np.testing.assert_array_equal(d.y_train.numpy(), expected)


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's ``str`` (SHORT_BINSTRING/BINSTRING), as the official CIFAR
    pickles were written: read back as bytes with ``encoding="bytes"`` (eosbench's reader)
    and as str with ``encoding="latin1"`` (torchvision's)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def test_cifar10_reader_agrees_with_eosbenchs_own(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(root / name, "wb") as f:
            Py2Pickler(f, 2).dump({b"data": data, b"labels": labels, b"batch_label": name.encode()})
    with open(root / "batches.meta", "wb") as f:
        Py2Pickler(f, 2).dump({b"label_names": [f"c{i}".encode() for i in range(10)],
                               b"num_cases_per_batch": 4, b"num_vis": 3072})  # fmt: skip
    # generated files cannot have the official MD5s (batches and meta), which torchvision checks
    monkeypatch.setattr(tv.datasets.cifar, "check_integrity", lambda *a, **k: True)
    theirs = load_dataset(DataSpec(name="tv-cifar10"), tmp_path)
    ours = load_dataset(DataSpec(name="cifar10"), tmp_path)
    assert theirs.checksum == ours.checksum and theirs.x_train.shape == (20, 3, 32, 32)


def test_a_run_on_a_torchvision_model_and_reader(tmp_path):
    from eosbench import store
    from eosbench.runner import RunOptions, run
    from eosbench.suites import TASKS

    rng = np.random.default_rng(3)
    write_idx(tmp_path / "data", "MNIST", {"train": rng.integers(0, 256, (16, 28, 28)),
                                           "t10k": rng.integers(0, 256, (4, 28, 28))},
              {"train": np.arange(16) % 10, "t10k": np.arange(4)})  # fmt: skip
    task = apply_overrides(TASKS.get("digits/fc-tanh/mse/gd/lr=0.1"), [
        "data.name=tv-mnist", "data.n_train=16", "data.n_test=4", "model.name=torchvision",
        "model.options.arch=resnet18", "schedule.steps=2"])  # fmt: skip
    task = replace(task, measurements=())
    rdir = run(task, 0, RunOptions(out=tmp_path / "runs", device="cpu", progress=False,
                                   data_root=str(tmp_path / "data")))  # fmt: skip
    meta = json.loads((rdir / store.RUN_FILE).read_text())
    assert meta["status"] == "completed"
    assert "MNIST reader" in meta["provenance"]["dataset"]


def test_download_offline_is_refused(tmp_path, monkeypatch):
    from eosbench.data import download

    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    with pytest.raises(DataError, match="EOSBENCH_OFFLINE is set: not downloading tv-mnist"):
        download("tv-mnist", tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_checkpoint_of_the_former_signsgd_class_resumes():
    # its parameter groups had only lr and weight_decay (the class is now the l_inf Steepest)
    from eosbench.optim import build_optimizer
    from eosbench.task import OptimizerSpec

    p = nn.Parameter(torch.ones(3))
    opt = build_optimizer(OptimizerSpec(name="signsgd", lr=0.1), [p])
    old = opt.state_dict()
    for group in old["param_groups"]:
        for key in ("momentum", "nesterov", "norm"):
            group.pop(key, None)
    opt.load_state_dict(old)
    p.grad = torch.tensor([1.0, -2.0, 0.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, 1.1, 1.0]))

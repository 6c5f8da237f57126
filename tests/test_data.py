"""Tests of the data sets: readers on synthetic official-format files, the real offline
CIFAR-10 subset (when ``EOSBENCH_DATA`` has it), subsets, preprocessing, label noise,
download checks and augmentation."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from eosbench.data import DATASETS, data_root, download, label_noise, load_dataset
from eosbench.data import cifar as cifar_mod
from eosbench.data.augment import random_crop_flip
from eosbench.errors import DataError, UnknownNameError
from eosbench.task import DataSpec

BATCH_1_SHA256 = "f8b1f721d883b3f9f890f2c789dd41bfc511d89a6365c73c2d806db359eef9eb"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EOSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ---------------------------------------------------------------------------
# synthetic files in the official layout


def _batch(rng, n, label_key=b"labels", n_classes=10) -> dict:
    return {
        b"batch_label": b"synthetic",
        label_key: rng.integers(0, n_classes, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }


def _write_tar(path: Path, members: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """CIFAR-10 with batches of 8 train (x5) and 12 test images, as dir, tar.gz and tar.xz."""
    tmp_path = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _batch(rng, 8) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, 12)
    blobs = {k: pickle.dumps(v, protocol=2) for k, v in batches.items()}
    roots = {kind: tmp_path / kind for kind in ("dir", "gz", "xz")}
    for r in roots.values():
        r.mkdir()
    (roots["dir"] / "cifar-10-batches-py").mkdir()
    for name, blob in blobs.items():
        (roots["dir"] / "cifar-10-batches-py" / name).write_bytes(blob)
    members = {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()}
    _write_tar(roots["gz"] / "cifar-10-python.tar.gz", members, "w:gz")
    _write_tar(roots["xz"] / "cifar-10-python-tiny.tar.xz", members, "w:xz")
    x_train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    y_train = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    return {"roots": roots, "blobs": blobs, "x_train": x_train, "y_train": y_train,
            "x_test": batches["test_batch"][b"data"],
            "y_test": np.array(batches["test_batch"][b"labels"])}


RAW = DataSpec(name="cifar10", standardize=False)


@pytest.mark.parametrize("kind", ["dir", "gz", "xz"])
def test_reader_matches_official_layout(synthetic, kind):
    d = load_dataset(RAW, synthetic["roots"][kind])
    expected = synthetic["x_train"].reshape(-1, 3, 32, 32) / 255.0
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_test.shape == (12, 3, 32, 32)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    np.testing.assert_array_equal(d.x_train.numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(d.y_train.numpy(), synthetic["y_train"])
    np.testing.assert_array_equal(d.y_test.numpy(), synthetic["y_test"])
    # channel-planar: the first 1024 bytes of a row are the red plane
    assert d.x_train[0, 0, 0, 1].item() == pytest.approx(synthetic["x_train"][0, 1] / 255)
    assert d.x_train[0, 1, 0, 0].item() == pytest.approx(synthetic["x_train"][0, 1024] / 255)
    assert d.n_classes == 10 and d.input_shape == (3, 32, 32)


def test_same_bytes_same_checksum_across_sources(synthetic):
    sums = {load_dataset(RAW, r).checksum for r in synthetic["roots"].values()}
    assert len(sums) == 1


def test_env_root_and_cache(synthetic, monkeypatch):
    monkeypatch.setenv("EOSBENCH_DATA", str(synthetic["roots"]["gz"]))
    assert data_root() == synthetic["roots"]["gz"]
    first = load_dataset(RAW)
    assert "cifar-10-python.tar.gz" in first.identity

    def fail(*args):
        raise AssertionError("the decoded cache was not used")

    monkeypatch.setattr(cifar_mod, "_read_members", fail)
    assert load_dataset(RAW).checksum == first.checksum


def test_corrupt_cache_is_ignored(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("EOSBENCH_CACHE", str(tmp_path / "c"))
    good = load_dataset(RAW, synthetic["roots"]["xz"])
    for f in (tmp_path / "c").iterdir():
        f.write_bytes(b"not an npz")
    assert load_dataset(RAW, synthetic["roots"]["xz"]).checksum == good.checksum


def test_cifar100_reader(tmp_path):
    rng = np.random.default_rng(1)
    train = _batch(rng, 40, b"fine_labels", 100)
    test = _batch(rng, 10, b"fine_labels", 100)
    members = {"cifar-100-python/train": pickle.dumps(train, protocol=2),
               "cifar-100-python/test": pickle.dumps(test, protocol=2)}
    _write_tar(tmp_path / "cifar-100-python.tar.gz", members, "w:gz")
    d = load_dataset(DataSpec(name="cifar100", n_train=25, standardize=False), tmp_path)
    assert d.n_classes == 100 and d.x_train.shape == (25, 3, 32, 32)
    np.testing.assert_array_equal(d.y_train.numpy(), np.array(train[b"fine_labels"][:25]))


def test_truncated_tarball_is_data_error(synthetic, tmp_path):
    blob = (synthetic["roots"]["gz"] / "cifar-10-python.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*corrupt or truncated"):
        load_dataset(RAW, tmp_path)


def test_garbage_tarball_is_data_error(tmp_path):
    (tmp_path / "cifar-10-python-x.tar.xz").write_bytes(os.urandom(1000))
    with pytest.raises(DataError, match="cifar-10-python-x.tar.xz"):
        load_dataset(RAW, tmp_path)


def _dir_with(tmp_path, name: str, blob: bytes, synthetic) -> Path:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for k, v in synthetic["blobs"].items():
        (d / k).write_bytes(blob if k == name else v)
    return tmp_path


def test_truncated_pickle_is_data_error(synthetic, tmp_path):
    blob = synthetic["blobs"]["data_batch_3"]
    root = _dir_with(tmp_path, "data_batch_3", blob[:-500], synthetic)
    with pytest.raises(DataError, match="data_batch_3 is corrupt or truncated"):
        load_dataset(RAW, root)


def test_pickle_cannot_run_code(synthetic, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    root = _dir_with(tmp_path, "test_batch", pickle.dumps({b"data": Evil()}), synthetic)
    with pytest.raises(DataError, match="unexpected object"):
        load_dataset(RAW, root)


@pytest.mark.parametrize("bad, message", [
    ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, r"uint8 \[N, 3072\]"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, r"uint8 \[N, 3072\]"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "4 integer labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, r"0\.\.9"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, "expected a dict with"),
])
def test_wrong_shapes_and_labels_are_data_errors(synthetic, tmp_path, bad, message):
    root = _dir_with(tmp_path, "data_batch_2", pickle.dumps(bad, protocol=2), synthetic)
    with pytest.raises(DataError, match=message):
        load_dataset(RAW, root)


def test_missing_member_is_data_error(synthetic, tmp_path):
    members = {f"cifar-10-batches-py/{k}": v for k, v in synthetic["blobs"].items()
               if k != "data_batch_5"}
    _write_tar(tmp_path / "cifar-10-python.tar.gz", members, "w:gz")
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_5"):
        load_dataset(RAW, tmp_path)


def test_missing_root_says_how_to_get_the_data(monkeypatch, tmp_path):
    monkeypatch.delenv("EOSBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="EOSBENCH_DATA.*eosbench data download cifar10"):
        load_dataset(DataSpec(name="cifar10"))
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_dataset(DataSpec(name="cifar100"), tmp_path)


def test_too_many_images_is_data_error(synthetic):
    with pytest.raises(DataError, match="only 40 training examples.*needs 41.*download"):
        load_dataset(DataSpec(name="cifar10", n_train=41), synthetic["roots"]["dir"])


# ---------------------------------------------------------------------------
# subsets, standardization, label noise (generic steps, checked on digits)


def test_unknown_data_set_suggests():
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset(DataSpec(name="cifar-10"))
    assert DATASETS.list() == ["cifar10", "cifar100", "digits", "hub", "hub-cifar10", "hub-mnist",
                               "scalar", "stream-gaussian", "stream-t3", "support", "tv-cifar10",
                               "tv-fashion-mnist", "tv-mnist", "tv-svhn"]


def test_digits_shapes_and_split():
    from sklearn.datasets import load_digits

    d = load_dataset(DataSpec(name="digits", standardize=False))
    raw = load_digits()
    assert d.x_train.shape == (1500, 64) and d.x_test.shape == (297, 64)
    assert d.input_shape == (64,) and d.n_classes == 10
    np.testing.assert_array_equal(d.x_train.numpy(), raw.data[:1500].astype(np.float32))
    np.testing.assert_array_equal(d.y_test.numpy(), raw.target[1500:])


def test_digits_standardization_uses_training_subset():
    from sklearn.datasets import load_digits

    d = load_dataset(DataSpec(name="digits", n_train=300, n_test=50))
    x = load_digits().data
    mu, sd = x[:300].mean(0), x[:300].std(0)
    sd[sd == 0] = 1.0
    np.testing.assert_allclose(d.x_train.numpy(), (x[:300] - mu) / sd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.x_test.numpy(), (x[1500:1550] - mu) / sd, rtol=1e-6,
                               atol=1e-6)
    assert (x[:300].std(0) == 0).any()  # constant pixels exist and map to 0, not NaN
    assert torch.isfinite(d.x_train).all()


def test_checksum_is_deterministic_and_sensitive():
    a = load_dataset(DataSpec(name="digits", n_train=200))
    b = load_dataset(DataSpec(name="digits", n_train=200))
    c = load_dataset(DataSpec(name="digits", n_train=201))
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in
                                     (a.x_train, a.y_train, a.x_test, a.y_test))).hexdigest()
    assert a.checksum == b.checksum == digest != c.checksum
    assert "first 200 train / 297 test" in a.identity


def test_balanced_and_random_subsets():
    bal = load_dataset(DataSpec(name="digits", n_train=105, n_test=20, subset="balanced"))
    counts = np.bincount(bal.y_train.numpy(), minlength=10)
    assert counts.tolist() == [11] * 5 + [10] * 5
    assert np.bincount(bal.y_test.numpy(), minlength=10).tolist() == [2] * 10
    r1 = load_dataset(DataSpec(name="digits", n_train=100, subset="random", subset_seed=1))
    r1b = load_dataset(DataSpec(name="digits", n_train=100, subset="random", subset_seed=1))
    r2 = load_dataset(DataSpec(name="digits", n_train=100, subset="random", subset_seed=2))
    assert r1.checksum == r1b.checksum != r2.checksum
    first = load_dataset(DataSpec(name="digits", n_train=100))
    assert r1.checksum != first.checksum


def test_subset_errors():
    with pytest.raises(DataError, match="only 1500 training examples.*needs 1501"):
        load_dataset(DataSpec(name="digits", n_train=1501))
    with pytest.raises(DataError, match="data.subset"):
        load_dataset(DataSpec(name="digits", subset="last"))
    with pytest.raises(DataError, match="label_noise"):
        load_dataset(DataSpec(name="digits", label_noise=1.5))


def test_label_noise_oracle():
    y = np.arange(2000) % 10
    noisy = label_noise(y, 0.5, seed=7, n_classes=10)
    rng = np.random.default_rng(7)
    u, c = rng.random(2000), rng.integers(0, 10, size=2000)
    np.testing.assert_array_equal(noisy, np.where(u < 0.5, c, y))
    # replacements are uniform over all 10 classes: a fraction p (1 - 1/K) changes
    assert abs((noisy != y).mean() - 0.45) < 0.04
    np.testing.assert_array_equal(label_noise(y, 0.0, 7, 10), y)
    assert (label_noise(y, 1.0, 7, 10) == c).all()


def test_label_noise_only_touches_training_labels():
    clean = load_dataset(DataSpec(name="digits"))
    noisy = load_dataset(DataSpec(name="digits", label_noise=0.2, noise_seed=3))
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_test, noisy.y_test)
    changed = (clean.y_train != noisy.y_train).float().mean().item()
    assert 0.1 < changed < 0.26
    assert noisy.checksum != clean.checksum and "label noise 0.2" in noisy.identity


# ---------------------------------------------------------------------------
# the real offline CIFAR-10 subset


def _real_root() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("EOSBENCH_DATA is not set")
    try:
        cifar_mod.find_source(cifar_mod.FORMATS["cifar10"], root)
    except DataError:
        pytest.skip(f"EOSBENCH_DATA={root} holds no CIFAR-10")
    return root


def test_real_cifar10_first_1000_is_data_batch_1():
    root = _real_root()
    d = load_dataset(DataSpec(name="cifar10", n_train=1000, n_test=1000, standardize=False))
    source = cifar_mod.find_source(cifar_mod.FORMATS["cifar10"], root)
    if source.is_dir():
        blob = (source / "data_batch_1").read_bytes()
    else:
        with tarfile.open(source) as tf:
            blob = tf.extractfile("cifar-10-batches-py/data_batch_1").read()
    batch = pickle.loads(blob, encoding="bytes")
    if len(batch[b"labels"]) == 1000:  # the offline subset: a known file
        assert hashlib.sha256(blob).hexdigest() == BATCH_1_SHA256
    x = batch[b"data"][:1000].reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(np.rint(d.x_train.numpy() * 255).astype(np.uint8), x)
    np.testing.assert_array_equal(d.y_train.numpy(), batch[b"labels"][:1000])
    means = d.x_train.mean(dim=(0, 2, 3)) * 255
    assert torch.round(means).tolist() == [125.0, 123.0, 114.0]


def test_real_cifar10_standardized_and_too_many():
    _real_root()
    d = load_dataset(DataSpec(name="cifar10", n_train=1000, n_test=100))
    flat = d.x_train.reshape(1000, -1).double()
    assert flat.mean(0).abs().max() < 1e-5 and (flat.std(0, unbiased=False) - 1).abs().max() < 1e-4
    available = len(load_dataset(RAW).y_train)
    with pytest.raises(DataError, match=f"only {available} training examples.*download"):
        load_dataset(DataSpec(name="cifar10", n_train=available + 1))


# ---------------------------------------------------------------------------
# download


def _payload(tmp_path) -> tuple[str, str]:
    src = tmp_path / "remote.tar.gz"
    src.write_bytes(b"pretend tarball " * 100)
    return src.as_uri(), hashlib.md5(src.read_bytes()).hexdigest()


def test_download_checks_md5_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.delenv("EOSBENCH_OFFLINE", raising=False)
    url, md5 = _payload(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="MD5"):
        download("cifar10", root, url=url, md5="0" * 32)
    assert list(root.iterdir()) == []  # no partial or temporary file left
    path = download("cifar10", root, url=url, md5=md5)
    assert path == root / "cifar-10-python.tar.gz"
    assert path.read_bytes() == (tmp_path / "remote.tar.gz").read_bytes()
    # a file already in place with the right MD5 is kept without any network access
    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    assert download("cifar10", root, url="file:///nonexistent", md5=md5) == path


def test_download_offline_and_errors(tmp_path, monkeypatch):
    url, md5 = _payload(tmp_path)
    monkeypatch.setenv("EOSBENCH_OFFLINE", "1")
    with pytest.raises(DataError, match="EOSBENCH_OFFLINE"):
        download("cifar10", tmp_path / "d", url=url, md5=md5)
    monkeypatch.delenv("EOSBENCH_OFFLINE")
    with pytest.raises(DataError, match="cannot download"):
        download("cifar10", tmp_path / "d", url=(tmp_path / "missing").as_uri(), md5=md5)
    with pytest.raises(DataError, match="no download"):
        download("digits", tmp_path)
    assert cifar_mod.FORMATS["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar_mod.FORMATS["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"


# ---------------------------------------------------------------------------
# augmentation


def _reference_crop_flip(x, dy, dx, flip, p):
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    out = []
    for i in range(len(x)):
        crop = padded[i, :, dy[i]:dy[i] + x.shape[2], dx[i]:dx[i] + x.shape[3]]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_random_crop_flip_matches_per_image_reference(padding):
    x = torch.randn(16, 3, 8, 10)
    out = random_crop_flip(x, torch.Generator().manual_seed(5), padding)
    g = torch.Generator().manual_seed(5)
    dy = torch.randint(0, 2 * padding + 1, (16,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (16,), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g).bool()
    torch.testing.assert_close(out, _reference_crop_flip(x, dy, dx, flip, padding))
    assert out.shape == x.shape


def test_random_crop_flip_is_determined_by_generator():
    x = torch.randn(64, 3, 32, 32)
    a = random_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_crop_flip(x, torch.Generator().manual_seed(0))
    c = random_crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flips = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    flipped = [torch.equal(flips[i], x[i].flip(-1)) for i in range(64)]
    assert all(f or torch.equal(flips[i], x[i]) for i, f in enumerate(flipped))
    assert 16 <= sum(flipped) <= 48


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_crop_flip_on_cuda_matches_cpu():
    x = torch.randn(32, 3, 32, 32)
    cpu = random_crop_flip(x, torch.Generator().manual_seed(2))
    gpu = random_crop_flip(x.cuda(), torch.Generator().manual_seed(2))
    assert torch.equal(gpu.cpu(), cpu)


def test_scalar_regression_data():
    d = load_dataset(DataSpec(name="scalar", standardize=False))
    assert d.n_classes == 1 and d.input_shape == (1,)
    assert d.y_train.dtype == torch.float32
    torch.testing.assert_close(d.y_train, d.x_train[:, 0])
    assert abs(float(d.x_train.square().mean()) - 1.0) < 0.05
    with pytest.raises(DataError, match="regression"):
        load_dataset(DataSpec(name="scalar", label_noise=0.1))


def test_classes_keeps_the_first_classes_in_official_order():
    full = load_dataset(DataSpec(name="digits", standardize=False))
    four = load_dataset(DataSpec(name="digits", classes=4, n_train=300, standardize=False))
    assert four.n_classes == 4 and int(four.y_train.max()) == 3 and int(four.y_test.max()) == 3
    keep = full.y_train < 4
    assert torch.equal(four.x_train, full.x_train[keep][:300])  # the first 300 of those
    assert "classes 0-3 only" in four.identity
    for bad in (1, 11):
        with pytest.raises(DataError, match="data.classes"):
            load_dataset(DataSpec(name="digits", classes=bad))
    with pytest.raises(DataError, match="expected an integer"):
        load_dataset(DataSpec(name="digits", classes=True))

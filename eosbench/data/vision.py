r"""Data sets read by torchvision's own readers from a torchvision download directory.

For a user who already has ``torchvision.datasets`` downloads: the data root (``EOSBENCH_DATA``
or ``--data``) is the ``root`` those readers were given.  Loading never downloads
(``download=False``); ``eosbench data download tv-...`` does, by torchvision's own download.
Registered, each in torchvision's layout under the root:

* ``tv-mnist`` -- ``torchvision.datasets.MNIST``: ``MNIST/raw/{train,t10k}-{images-idx3,
  labels-idx1}-ubyte``; 60,000 / 10,000 images ``[1, 28, 28]``, 10 classes;
* ``tv-fashion-mnist`` -- ``FashionMNIST``: the same files under ``FashionMNIST/raw/``;
* ``tv-svhn`` -- ``SVHN``: ``train_32x32.mat``, ``test_32x32.mat`` (cropped digits; the label
  of a 0 is 0, as torchvision maps the files' 10), ``[3, 32, 32]``, 10 classes;
* ``tv-cifar10`` -- ``CIFAR10``: ``cifar-10-batches-py/`` (the same files eosbench's own
  ``cifar10`` reader takes, there with partial copies and tarballs too).

torchvision checks the MD5 of the SVHN and CIFAR files against the official ones, so those two
read only complete official downloads.  The images become the pool of the pipeline: float64
in [0, 1], ``[N, C, H, W]``, in the files' order, labels int64; the source names the reader,
its torchvision version and the SHA-256 of the uint8 pixels and labels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..task import DataSpec


def _arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, C, H, W]`` and int64 labels of a torchvision data set object, in order."""
    x = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    y = getattr(ds, "targets", None)
    if y is None:
        y = ds.labels
    y = (y.numpy() if hasattr(y, "numpy") else np.asarray(y)).astype(np.int64)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] == 3 and x.shape[1] != 3:  # CIFAR: [N, H, W, C]
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.uint8), y


def _reader(reader: str):
    """torchvision and its data set class ``reader`` (one line if torchvision is missing)."""
    from ..models.vision import import_torchvision

    torchvision = import_torchvision()
    return torchvision, getattr(torchvision.datasets, reader)


def _split(reader: str, train: bool) -> dict[str, object]:
    """The keyword that picks a split: SVHN's ``split``, the others' ``train``."""
    return {"split": "train" if train else "test"} if reader == "SVHN" else {"train": train}


def download(name: str, root: Path) -> Path:
    """Fetch data set ``name`` (a ``tv-*`` one) into ``root`` with torchvision's own download
    (``download=True``: its URLs and MD5 checks); ``EOSBENCH_OFFLINE=1`` forbids it."""
    from . import offline

    if offline():
        raise DataError(f"EOSBENCH_OFFLINE is set: not downloading {name}")
    reader, _ = SOURCES[name]
    _, cls = _reader(reader)
    for train in (True, False):
        try:
            cls(str(root), download=True, **_split(reader, train))
        except (RuntimeError, OSError, ValueError) as e:
            raise DataError(f"cannot download {name} with torchvision: "
                            f"{' '.join(str(e).split())}") from e  # fmt: skip
    return root


def torchvision_loader(reader: str, n_classes: int, folder: str):
    """A registry loader reading with ``torchvision.datasets.<reader>`` (module docstring);
    ``folder`` is where under the root its files are, for the error message."""

    def load(spec: DataSpec, root: Path | None):
        from . import RawPool

        torchvision, cls = _reader(reader)
        if root is None:
            raise DataError(f"data {spec.name!r} reads a torchvision download directory: set "
                            "EOSBENCH_DATA or pass --data DIR")  # fmt: skip
        pools = []
        for train in (True, False):
            try:
                ds = cls(str(root), download=False, **_split(reader, train))
            except (RuntimeError, OSError, ValueError) as e:
                msg = " ".join(str(e).split())
                raise DataError(f"data {spec.name!r}: torchvision's {reader} reader found no "
                                f"readable files in {root / folder} ({msg})") from e
            pools.append(_arrays(ds))
        (x_tr, y_tr), (x_te, y_te) = pools
        for y, split in ((y_tr, "training"), (y_te, "test")):
            if y.size and (y.min() < 0 or y.max() >= n_classes):
                raise DataError(f"data {spec.name!r}: {split} labels outside 0..{n_classes - 1}")
        digest = hashlib.sha256()
        for a in (x_tr, y_tr, x_te, y_te):
            digest.update(a.tobytes())
        return RawPool(
            x_train=x_tr.astype(np.float64) / 255.0,
            y_train=y_tr,
            x_test=x_te.astype(np.float64) / 255.0,
            y_test=y_te,
            n_classes=n_classes,
            source=(f"{spec.name} (torchvision {torchvision.__version__} {reader} reader, "
                    f"{folder}, uint8 sha256 {digest.hexdigest()[:12]})"),  # fmt: skip
            scale="scaled to [0, 1]",
        )

    return load


# name: (torchvision reader, where its files are under the root)
SOURCES = {
    "tv-mnist": ("MNIST", "MNIST/raw"),
    "tv-fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "tv-svhn": ("SVHN", "{train,test}_32x32.mat"),
    "tv-cifar10": ("CIFAR10", "cifar-10-batches-py"),
}
LOADERS = {name: torchvision_loader(reader, 10, folder) for name, (reader, folder) in SOURCES.items()}

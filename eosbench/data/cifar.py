"""CIFAR-10 and CIFAR-100 from the official "python version" files.

Layout (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): each
batch file is a pickle (``pickle.load(f, encoding="bytes")``) of a dict with
``b'data'`` -- uint8 ``[N, 3072]``, row-major, channel-planar (1024 R, then
1024 G, then 1024 B bytes of a 32x32 image) -- and ``b'labels'`` (CIFAR-10)
or ``b'fine_labels'`` (CIFAR-100, 100 classes).  Files are looked up under the
data root (``root`` argument, else ``$EOSBENCH_DATA``) in this order:

1. the directory ``<root>/cifar-10-batches-py/`` (``data_batch_1..5``,
   ``test_batch``), resp. ``<root>/cifar-100-python/`` (``train``, ``test``);
2. the official tarball ``<root>/cifar-10-python.tar.gz`` resp.
   ``cifar-100-python.tar.gz``;
3. any other ``<root>/cifar-10-python*.tar.xz`` / ``*.tar.gz`` (resp.
   ``cifar-100-python*``), first in sorted order -- e.g. the offline subset
   ``cifar-10-python-subset.tar.xz``.

Tarballs are streamed with :mod:`tarfile`, never extracted.  The training pool
is ``data_batch_1..5`` concatenated in this order (CIFAR-10) resp. ``train``;
the test pool is ``test_batch`` resp. ``test``.  Pickles are read with an
unpickler that only admits the numpy array reconstructors the official files
use, so a tampered file cannot run code.

Preprocessing before :mod:`eosbench.data`'s generic steps: bytes are scaled to
:math:`[0, 1]` by :math:`x/255` and reshaped to ``[N, 3, 32, 32]``.  With
``standardize=True`` every one of the 3072 features (pixel x channel) is then
centred and scaled with the training-subset statistics.  Cohen et al. 2021
(``src/cifar.py`` of locuslab/edge-of-stability) do the same per-feature
:math:`x/255`, centre, divide by std, but with statistics of the full 50,000
image training set before taking the first :math:`n`; we use the training
subset, so the numbers differ slightly from theirs for :math:`n < 50000` (and
the offline copy has no full training set to take statistics from).

Decoded uint8 pools are cached as ``.npz`` under ``$EOSBENCH_CACHE`` (default
``$XDG_CACHE_HOME/eosbench`` or ``~/.cache/eosbench``; ``EOSBENCH_CACHE=off``
disables it), keyed by the SHA-256 of the source file(s).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError
from . import RawPool, data_root


@dataclass(frozen=True)
class CifarFormat:
    """Where and how one CIFAR variant is stored."""

    name: str
    dirname: str  # top-level directory, in the tarball and on disk
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    label_key: bytes
    n_classes: int
    tarball: str  # official file name
    url: str
    md5: str  # published MD5 of the official tarball
    full_sizes: tuple[int, int]  # training and test images of the full data set


FORMATS = {
    "cifar10": CifarFormat(
        "cifar10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        10,
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        (50000, 10000),
    ),
    "cifar100": CifarFormat(
        "cifar100",
        "cifar-100-python",
        ("train",),
        ("test",),
        b"fine_labels",
        100,
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        (50000, 10000),
    ),
}

# the only globals an official (or re-pickled) CIFAR batch needs
_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
# low-level failures of a truncated or corrupt archive or pickle
_READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR pickle")
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _how_to_get(fmt: CifarFormat) -> str:
    return (
        f"set EOSBENCH_DATA to a directory holding {fmt.dirname}/ or {fmt.tarball} "
        f"(run `eosbench data download {fmt.name}`, or fetch {fmt.url})"
    )


def find_source(fmt: CifarFormat, root: Path | None) -> Path:
    """The directory or tarball holding ``fmt`` under ``root`` (module docstring order)."""
    if root is None:
        raise DataError(f"{fmt.name} needs the official python files: {_how_to_get(fmt)}")
    if root.is_file() and ".tar" in root.name:
        return root
    if root.name == fmt.dirname and root.is_dir():
        return root
    if (root / fmt.dirname).is_dir():
        return root / fmt.dirname
    if (root / fmt.tarball).is_file():
        return root / fmt.tarball
    stem = fmt.tarball.split(".tar")[0]
    others = sorted(p for pat in (f"{stem}*.tar.xz", f"{stem}*.tar.gz") for p in root.glob(pat))
    if others:
        return others[0]
    raise DataError(f"{fmt.name} not found in {root}: {_how_to_get(fmt)}")


def unpickle_batch(f: BinaryIO, label_key: bytes, n_classes: int, where: str):
    """``(data uint8 [N, 3072], labels int64 [N])`` of one batch pickle, validated."""
    try:
        d = _SafeUnpickler(f, encoding="bytes").load()
    except _READ_ERRORS as e:
        raise DataError(f"{where} is corrupt or truncated ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{where}: expected a dict with b'data' and {label_key!r}, got {keys}")
    data, labels = d[b"data"], np.asarray(d[label_key])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{where}: b'data' must be uint8 [N, 3072], got {shape} "
            f"{getattr(data, 'dtype', type(data).__name__)}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: {label_key!r} must be {data.shape[0]} integer labels, "
            f"got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{where}: labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return data, labels.astype(np.int64)


def _read_members(fmt: CifarFormat, source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    wanted = fmt.train_members + fmt.test_members
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if source.is_dir():
        for m in wanted:
            path = source / m
            if not path.is_file():
                raise DataError(f"{path} is missing: {_how_to_get(fmt)}")
            with open(path, "rb") as f:
                out[m] = unpickle_batch(f, fmt.label_key, fmt.n_classes, str(path))
        return out
    try:
        with tarfile.open(source, "r:*") as tf:
            for info in tf:  # stream: one sequential pass over the compressed archive
                parts = Path(info.name).parts
                if (
                    len(parts) >= 2
                    and parts[-2] == fmt.dirname
                    and parts[-1] in wanted
                    and info.isfile()
                ):
                    f = tf.extractfile(info)
                    buf = io.BytesIO(f.read())
                    where = f"{source.name}:{info.name}"
                    out[parts[-1]] = unpickle_batch(buf, fmt.label_key, fmt.n_classes, where)
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(
            f"{source} is corrupt or truncated ({type(e).__name__}: {e}); "
            f"delete it and {_how_to_get(fmt)}"
        ) from None
    missing = [m for m in wanted if m not in out]
    if missing:
        raise DataError(
            f"{source} lacks {', '.join(f'{fmt.dirname}/{m}' for m in missing)}; {_how_to_get(fmt)}"
        )
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_key(fmt: CifarFormat, source: Path) -> str:
    """SHA-256 of a tarball, or of the member files' SHA-256s of a directory."""
    if source.is_file():
        return _sha256_file(source)
    h = hashlib.sha256()
    for m in fmt.train_members + fmt.test_members:
        path = source / m
        h.update((m + ":" + (_sha256_file(path) if path.is_file() else "missing") + "\n").encode())
    return h.hexdigest()


def cache_dir() -> Path | None:
    """``$EOSBENCH_CACHE``, else ``$XDG_CACHE_HOME/eosbench``, else ``~/.cache/eosbench``."""
    env = os.environ.get("EOSBENCH_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "none", ""):
        return None
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "eosbench"


_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_cached(path: Path) -> tuple[np.ndarray, ...] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in _KEYS)
    except (OSError, ValueError, KeyError, EOFError, zlib.error):
        return None
    x_tr, y_tr, x_te, y_te = arrays
    ok = (
        x_tr.dtype == np.uint8
        and x_tr.ndim == 2
        and x_tr.shape[1] == 3072
        and x_te.ndim == 2
        and x_te.shape[1] == 3072
        and y_tr.shape == (len(x_tr),)
        and y_te.shape == (len(x_te),)
    )
    return arrays if ok else None


def _save_cached(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **dict(zip(_KEYS, arrays, strict=True)))
        os.replace(tmp, path)
    except OSError:  # the cache is optional: an unwritable cache only costs time
        pass


def read_raw(name: str, root: Path | None) -> tuple[tuple[np.ndarray, ...], Path, str]:
    """Uint8 ``(x_train, y_train, x_test, y_test)``, the source path and its SHA-256."""
    fmt = FORMATS[name]
    source = find_source(fmt, root)
    key = source_key(fmt, source)
    cdir = cache_dir()
    cache = cdir / f"{name}-{key[:20]}.npz" if cdir is not None else None
    arrays = _load_cached(cache) if cache is not None and cache.is_file() else None
    if arrays is None:
        members = _read_members(fmt, source)
        tr = [members[m] for m in fmt.train_members]
        te = [members[m] for m in fmt.test_members]
        arrays = (
            np.concatenate([d for d, _ in tr]),
            np.concatenate([y for _, y in tr]),
            np.concatenate([d for d, _ in te]),
            np.concatenate([y for _, y in te]),
        )
        if cache is not None:
            _save_cached(cache, arrays)
    return arrays, source, key


def load_cifar_pool(name: str, root: Path | None) -> RawPool:
    """The CIFAR training and test pools in official order, scaled to [0, 1], [N, 3, 32, 32]."""
    fmt = FORMATS[name]
    (x_tr, y_tr, x_te, y_te), source, key = read_raw(name, root)
    full_tr, full_te = fmt.full_sizes
    hint = ""
    if len(y_tr) < full_tr or len(y_te) < full_te:
        hint = (
            f"; {source} is a partial copy with {len(y_tr)} training / {len(y_te)} test "
            f"images (the full {name} has {full_tr} / {full_te}): download the full data with "
            f"`eosbench data download {name}` or from {fmt.url}"
        )
    label = source.name + ("/" if source.is_dir() else "")
    return RawPool(
        x_train=(x_tr.astype(np.float64) / 255.0).reshape(-1, 3, 32, 32),
        y_train=y_tr,
        x_test=(x_te.astype(np.float64) / 255.0).reshape(-1, 3, 32, 32),
        y_test=y_te,
        n_classes=fmt.n_classes,
        source=f"{name} (official python pickle, {label} sha256 {key[:12]})",
        missing_hint=hint,
        scale="scaled to [0, 1]",
    )


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch the official tarball of ``name`` into the data root and check its MD5.

    The file is streamed to a temporary file in the same directory and renamed
    into place only when its MD5 equals the published one (``md5`` and ``url``
    override the official values, for mirrors and tests).  A file already in
    place with the right MD5 is kept.  ``EOSBENCH_OFFLINE=1`` forbids network
    access: :class:`DataError` instead.
    """
    if name not in FORMATS:
        raise DataError(f"no download for data set {name!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[name]
    url, md5 = url or fmt.url, md5 or fmt.md5
    target_dir = data_root(root)
    if target_dir is None:
        raise DataError(f"no data directory: set EOSBENCH_DATA (or pass a root) to download {name}")
    dest = target_dir / fmt.tarball
    if dest.is_file() and _md5_file(dest) == md5:
        return dest
    from . import offline

    if offline():
        raise DataError(
            f"EOSBENCH_OFFLINE is set: cannot download {url}; copy {fmt.tarball} "
            f"into {target_dir} by hand"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{fmt.tarball}.", suffix=".part")
    h = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != md5:
            raise DataError(
                f"download of {url} has MD5 {h.hexdigest()}, expected {md5}; "
                "the file was discarded, try again"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download {url}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest

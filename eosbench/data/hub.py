r"""Image-classification data sets from the Hugging Face Hub, read by ``datasets``.

A Hub data set is a repository of Parquet files (one or more per split) whose rows hold an
image and an integer label.  :func:`hub_loader` makes a loader for the registry from the
columns and splits of one such repository, and the task names the repository and the commit
to read in ``data.options``:

* ``repo`` -- ``owner/name`` on the Hub, or a local directory in the Hub's layout (Parquet
  files under ``<config>/`` or ``data/`` named ``<split>-*.parquet``, as the Hub's parquet
  conversion writes them; such a directory is read as it is, without a revision);
* ``revision`` -- the commit id to read (a Hub repository is read only at a pinned commit);
* ``config`` -- the configuration (subset) name, ``""`` for the repository's default;
* ``image``, ``label`` -- the two columns; ``train``, ``test`` -- the two splits;
* ``classes`` -- the number of classes, ``0`` to take it from the label column's
  ``ClassLabel`` feature (a label outside ``0 .. classes-1`` is an error).

``huggingface_hub`` fetches the snapshot of exactly that commit into ``<data root>/huggingface``
(its own default cache when no data root is set), and ``datasets.load_dataset`` reads it.
``EOSBENCH_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) forbids the
network: a revision that is not in the cache is then an error, not a download, and a cached
copy of another commit is never read in its place.  The images become the pool that the rest of
the pipeline uses: float64 in [0, 1], ``[N, C, H, W]`` (``C = 1`` for grayscale), in the
split's row order, with the labels as int64.  The source recorded in the run's provenance
names the repository, revision, configuration and splits, and the SHA-256 of the decoded
uint8 pixels and labels.

Registered (``eosbench data info NAME``):

* ``hub`` -- any repository; ``repo`` and ``revision`` must be given;
* ``hub-cifar10`` -- ``uoft-cs/cifar10`` at ``0b2714987fa4`` (config ``plain_text``, columns
  ``img``/``label``); the revision is the one that independent public code pins (MTEB among
  others), not checked here: there is no network on the machine this was written on.
  Whether its rows are the official images in the official order is checked by
  ``eosbench data verify hub-cifar10`` against the official files in the data root;
* ``hub-mnist`` -- ``ylecun/mnist`` at ``77f3279092a1`` (columns ``image``/``label``; the
  revision MTEB pins, likewise not checked offline).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..task import DataSpec

OFFLINE_SWITCHES = ("EOSBENCH_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
# the commits that independent public code pins (module docstring); not checked offline
CIFAR10_REVISION = "0b2714987fa478483af9968de7c934580d0bb9a2"
MNIST_REVISION = "77f3279092a1c1579b2250db8eafed0ad422088c"


@dataclass(frozen=True)
class Split:
    """One split as uint8 pixels ``[N, C, H, W]`` and int64 labels ``[N]``."""

    x: np.ndarray
    y: np.ndarray


def hub_loader(official: str | None = None, **defaults: Any):
    """A registry loader for a Hub source whose ``data.options`` default to ``defaults``
    (the module docstring's keys); ``official`` names the registered data set whose official
    files the source copies, the default for ``eosbench data verify``."""
    options = {"repo": "", "revision": "", "config": "", "image": "image", "label": "label",
               "train": "train", "test": "test", "classes": 0}  # fmt: skip
    unknown = sorted(set(defaults) - set(options))
    if unknown:
        raise ValueError(f"unknown Hub source option {unknown[0]!r}")
    options.update(defaults)

    def load(spec: DataSpec, root: Path | None):
        from . import RawPool

        o = {**options, **dict(spec.options)}
        (train, test), n_classes, source = read_hub(o, root)
        return RawPool(
            x_train=train.x.astype(np.float64) / 255.0,
            y_train=train.y,
            x_test=test.x.astype(np.float64) / 255.0,
            y_test=test.y,
            n_classes=n_classes,
            source=source,
            scale="scaled to [0, 1]",
        )

    load.OPTIONS = options
    load.official = official
    return load


def offline() -> bool:
    """Whether a switch forbids the network (module docstring)."""
    from . import offline as switched

    return switched(*OFFLINE_SWITCHES)


def _looks_like_a_path(repo: str) -> bool:
    return repo.startswith((".", "/", "~")) or repo.count("/") != 1


def read_hub(o: dict[str, Any], root: Path | None) -> tuple[tuple[Split, Split], int, str]:
    """The train and test splits of the Hub source described by options ``o``, its number of
    classes and the source string for provenance (module docstring).

    A Hub repository is fetched as the snapshot of exactly ``revision``
    (``huggingface_hub.snapshot_download``; offline, from the cache only, so that a cached copy
    of another commit is never read in its place) and then read like a local copy."""
    repo, revision = str(o["repo"]), str(o["revision"])
    if not repo:
        raise DataError("data.options.repo: name a Hub data set (owner/name) or a local "
                        "directory in the Hub's layout")  # fmt: skip
    local = Path(repo).expanduser()
    is_local = local.is_dir()
    if not is_local:
        if _looks_like_a_path(repo):
            raise DataError(f"data.options.repo={repo!r}: no such directory (a Hub data set is "
                            "named owner/name)")  # fmt: skip
        if not revision:
            raise DataError(f"data.options.revision: the Hub data set {repo!r} is read only at "
                            "a pinned commit; give its commit id")  # fmt: skip
        local = Path(_snapshot(repo, revision, root))
    where = str(local) if is_local else f"{repo}@{revision}"
    import datasets

    datasets.disable_progress_bars()
    # read into memory through a scratch cache: the data root is written only by a download
    with tempfile.TemporaryDirectory() as scratch, _network(False):
        try:
            dd = datasets.load_dataset(str(local), o["config"] or None, cache_dir=scratch,
                                       keep_in_memory=True)  # fmt: skip
        except Exception as e:  # datasets raises many kinds; each becomes one line
            msg = " ".join(str(e).split()) or type(e).__name__
            raise DataError(f"data set {where}: {msg[:300]}") from e
        return _pool(datasets, dd, o, where, local, None if is_local else (repo, revision))


def _snapshot(repo: str, revision: str, root: Path | None) -> str:
    """The local directory of ``repo`` at ``revision`` in the cache (``<root>/huggingface``,
    or huggingface_hub's default), downloaded there first unless offline."""
    import huggingface_hub

    cache = str(root / "huggingface") if root is not None else None
    try:
        return huggingface_hub.snapshot_download(repo, repo_type="dataset", revision=revision,
                                                 cache_dir=cache, local_files_only=offline())
    except Exception as e:  # not cached offline, no network, no such repo or revision
        msg = " ".join(str(e).split()) or type(e).__name__
        state = " (offline: that revision is not in the cache)" if offline() else ""
        raise DataError(f"data set {repo}@{revision}{state}: {msg[:300]}") from e


@contextlib.contextmanager
def _network(allowed: bool):
    """Within the block, ``datasets`` and ``huggingface_hub`` may use the network only if
    ``allowed`` (their offline switches, set for the block and restored after)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    before = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if not allowed:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = before


def _pool(datasets, dd, o: dict[str, Any], where: str, local: Path,
          hub: tuple[str, str] | None) -> tuple[tuple[Split, Split], int, str]:  # fmt: skip
    """The splits of the loaded ``DatasetDict`` ``dd`` checked and decoded (:func:`read_hub`)."""
    splits = []
    n_classes = int(o["classes"])
    for key in ("train", "test"):
        name = str(o[key])
        if name not in dd:
            raise DataError(f"data set {where} has no split {name!r} (it has: "
                            f"{', '.join(dd)}); set data.options.{key}")  # fmt: skip
        ds = dd[name]
        for col in (o["image"], o["label"]):
            if col not in ds.column_names:
                raise DataError(f"data set {where}, split {name!r}: no column {col!r} (it has: "
                                f"{', '.join(ds.column_names)})")  # fmt: skip
        feature = ds.features[o["label"]]
        if not n_classes and isinstance(feature, datasets.ClassLabel):
            n_classes = int(feature.num_classes)
        splits.append(_split(ds, o["image"], o["label"], f"{where}, split {name!r}"))
    if not n_classes:
        raise DataError(f"data set {where}: its label column is not a ClassLabel; give "
                        "data.options.classes")  # fmt: skip
    for split, key in zip(splits, ("train", "test"), strict=True):
        y = split.y
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"data set {where}, split {o[key]!r}: label {int(y[i])} at row {i} "
                            f"is outside 0..{n_classes - 1}")  # fmt: skip
    if splits[0].x.shape[1:] != splits[1].x.shape[1:]:
        raise DataError(f"data set {where}: train images {splits[0].x.shape[1:]} and test "
                        f"images {splits[1].x.shape[1:]} differ in shape")  # fmt: skip
    digest = hashlib.sha256()
    for s in splits:
        digest.update(s.x.tobytes())
        digest.update(s.y.tobytes())
    config = f", config {o['config']}" if o["config"] else ""
    at = f"local copy {local.name}/" if hub is None else f"{hub[0]}@{hub[1][:12]}"
    source = (f"{at} (Hugging Face datasets {datasets.__version__}{config}, splits "
              f"{o['train']}/{o['test']}, uint8 sha256 {digest.hexdigest()[:12]})")  # fmt: skip
    return (splits[0], splits[1]), n_classes, source


def _split(ds, image: str, label: str, where: str) -> Split:
    """The uint8 pixels ``[N, C, H, W]`` and labels of one split, in row order."""
    from datasets import Image

    if not isinstance(ds.features[image], Image):
        raise DataError(f"data set {where}: column {image!r} is not an image column")
    ds = ds.cast_column(image, Image(decode=False))  # decode with PIL below, one by one
    from PIL import Image as PILImage

    arrays = []
    for i, item in enumerate(ds[image]):
        data = item.get("bytes") if isinstance(item, dict) else None
        if data is None:
            path = item.get("path") if isinstance(item, dict) else None
            if not path:
                raise DataError(f"data set {where}: row {i} has no image")
            data = Path(path).read_bytes()
        with PILImage.open(io.BytesIO(data)) as im:
            if im.mode not in ("L", "RGB"):
                raise DataError(f"data set {where}: row {i} is a {im.mode!r} image; eosbench "
                                "reads 8-bit grayscale ('L') or colour ('RGB') images")  # fmt: skip
            a = np.asarray(im)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if arrays and a.shape != arrays[0].shape:
            raise DataError(f"data set {where}: row {i} is a {tuple(a.shape)} image, row 0 "
                            f"{tuple(arrays[0].shape)}; every image must have the same size")
        arrays.append(a)
    if not arrays:
        raise DataError(f"data set {where}: the split is empty")
    labels = list(ds[label])
    if any(v is None or isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in labels):
        raise DataError(f"data set {where}: column {label!r} must hold integer labels")
    y = np.asarray(labels, dtype=np.int64)
    return Split(np.ascontiguousarray(np.stack(arrays)), y)


def verify(name: str, spec: DataSpec, against: str | None, root: Path | None,
           n: int = 1000) -> tuple[bool, list[str]]:  # fmt: skip
    """Whether the first ``n`` rows of each split of the Hub source ``name`` (with ``spec``'s
    options) are, byte for byte and in order, the images and labels of the registered data
    set ``against`` (default: the one the source copies) read from its official files; and
    one line per split saying so, or where they first differ."""
    from . import DATASETS, seeded

    loader = DATASETS.get(name)
    against = against or getattr(loader, "official", None)
    if not hasattr(loader, "OPTIONS"):
        raise DataError(f"data {name!r} is not a Hub source: nothing to verify")
    if against is None:
        raise DataError(f"data {name!r} copies no registered data set: name one with --against")
    if n < 1:
        raise DataError(f"--n {n}: expected a positive number of rows")
    if seeded(against):
        raise DataError(f"--against {against}: a data set drawn per seed has no official files")
    hub = loader(spec, root)
    ref = DATASETS.get(against)(DataSpec(name=against), root)
    ok, lines = True, []
    for split, xa, ya, xb, yb in (("train", hub.x_train, hub.y_train, ref.x_train, ref.y_train),
                                  ("test", hub.x_test, hub.y_test, ref.x_test, ref.y_test)):
        m = min(n, len(ya), len(yb))
        if xa.shape[1:] != xb.shape[1:]:
            ok = False
            lines.append(f"{split}: images {xa.shape[1:]} against {against}'s {xb.shape[1:]}")
            continue
        pa = np.rint(xa[:m] * 255).astype(np.uint8).reshape(m, -1)
        pb = np.rint(xb[:m] * 255).astype(np.uint8).reshape(m, -1)
        same = (pa == pb).all(axis=1) & (ya[:m] == yb[:m])
        if same.all():
            lines.append(f"{split}: the first {m} rows of {name} are {against}'s official images "
                         "and labels, in order")  # fmt: skip
        else:
            ok = False
            i = int(np.flatnonzero(~same)[0])
            what = "image" if not (pa[i] == pb[i]).all() else "label"
            lines.append(f"{split}: {int((~same).sum())} of the first {m} rows differ from "
                         f"{against}'s official ones; the first at row {i} ({what})")
    return ok, lines

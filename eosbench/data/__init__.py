"""Data sets: loading, subsets, preprocessing and label noise.

:func:`load_dataset` turns a :class:`~eosbench.task.DataSpec` into a
:class:`Dataset` of CPU tensors in four steps, always in this order:

1. **pool** -- the registered loader reads the raw training and test pools in
   their official order (``digits``: :mod:`eosbench.data.digits`; ``cifar10``,
   ``cifar100``: :mod:`eosbench.data.cifar`), as float64 features in their
   natural range and int64 labels.  A *seeded* loader (:func:`seeded`: the
   streaming data sets of :mod:`eosbench.data.synthetic`) draws its pool from the
   run's seed, so each seed of a task sees its own sample and the checksum is
   the seed's;
2. **subset** -- ``n_train`` of the training pool and ``n_test`` of the test
   pool (``None`` = the whole pool), chosen by ``spec.subset``:

   * ``first``: the first :math:`n` examples in the official order (Cohen et
     al. 2021's ``cifar10-1k`` is the first 1000 CIFAR-10 training images);
   * ``balanced``: :math:`\\lfloor n/K \\rfloor` examples of every class, plus
     one more for the first :math:`n \\bmod K` classes, drawn uniformly without
     replacement within each class with ``subset_seed``, then kept in official
     order;
   * ``random``: :math:`n` examples drawn uniformly without replacement with
     ``subset_seed``, kept in official order.

   The training and test draws use independent streams
   ``numpy.random.SeedSequence([subset_seed, 0])`` and ``[subset_seed, 1]``;
3. **standardize** (``spec.standardize``) -- every input feature :math:`j` is
   centred and scaled with the statistics of the *training subset*,
   :math:`x_{ij} \\leftarrow (x_{ij}-\\mu_j)/\\sigma_j` with
   :math:`\\mu_j = \\frac1n\\sum_i x_{ij}`,
   :math:`\\sigma_j = (\\frac1n\\sum_i (x_{ij}-\\mu_j)^2)^{1/2}` (population
   std, as ``numpy.std``) and :math:`\\sigma_j := 1` where it is 0; the test
   set uses the same :math:`\\mu, \\sigma`.  Computed in float64, stored as
   float32;
4. **label noise** (``spec.label_noise`` :math:`=p`) -- symmetric noise on the
   training labels only: with ``numpy.random.default_rng(noise_seed)``, draw
   :math:`u_i \\sim U[0,1)` and :math:`c_i \\sim U\\{0,\\dots,K-1\\}` for every
   training example (both arrays in full, so the draw does not depend on
   :math:`p`) and set :math:`y_i \\leftarrow c_i` where :math:`u_i < p`.  The
   replacement is uniform over *all* :math:`K` classes and may equal the true
   label (Zhang et al. 2017, "Understanding deep learning requires rethinking
   generalization"), so the expected fraction of changed labels is
   :math:`p(1-1/K)`.

Augmentation is not applied here: it is per step
(:func:`eosbench.data.augment.random_crop_flip`).

:attr:`Dataset.checksum` is the SHA-256 over the exact bytes (C order) of
``x_train``, ``y_train``, ``x_test``, ``y_test`` after all four steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..registry import Registry
from ..task import DataSpec

SUBSETS = ("first", "balanced", "random")


@dataclass(frozen=True)
class Dataset:
    """A preprocessed data set as CPU tensors (see the module docstring)."""

    x_train: Tensor  # float32 [n_train, *input_shape]
    y_train: Tensor  # int64 class labels [n_train]
    x_test: Tensor  # float32 [n_test, *input_shape]
    y_test: Tensor  # int64 class labels [n_test]
    n_classes: int
    input_shape: tuple[int, ...]
    identity: str  # source, version and subset, human-readable
    checksum: str  # sha256 over the bytes of x_train, y_train, x_test, y_test


@dataclass(frozen=True)
class RawPool:
    """What a loader returns: the full pools in official order, before step 2."""

    x_train: np.ndarray  # float64 [N_train, *input_shape]
    y_train: np.ndarray  # int64 [N_train]
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str  # e.g. "cifar10 (official python pickle, <file> sha256 1bed66b0b70c)"
    missing_hint: str = ""  # appended when the task asks for more examples than exist
    scale: str = "raw"  # the features' range, for the identity when not standardized


Loader = Callable[..., RawPool]  # (spec, root), or (spec, root, seed) when seeded
DATASETS: Registry[Loader] = Registry("data set")


def offline(*also: str) -> bool:
    """Whether ``EOSBENCH_OFFLINE`` (or one of the variables ``also``) forbids the network:
    set to 1, true, yes or on."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("EOSBENCH_OFFLINE", *also))  # fmt: skip


def seeded(name: str) -> bool:
    """Whether data set ``name`` is drawn per run seed (its loader takes the seed)."""
    return bool(getattr(DATASETS.get(name), "seeded", False))


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``root`` if given, else ``$EOSBENCH_DATA``, else ``None``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("EOSBENCH_DATA")
    return Path(env).expanduser() if env else None


def load_dataset(spec: DataSpec, root: str | os.PathLike | None = None,
                 seed: int | None = None) -> Dataset:  # fmt: skip
    """Load, subset, standardize and label-noise ``spec.name`` (module docstring); ``seed``
    (the run's) is needed by, and only used by, a :func:`seeded` data set."""
    _validate(spec)
    if not seeded(spec.name):
        pool = DATASETS.get(spec.name)(spec, data_root(root))
    elif seed is None:
        raise DataError(f"data {spec.name!r} is drawn per run: load it with the run's seed")
    else:
        pool = DATASETS.get(spec.name)(spec, data_root(root), seed)
    if spec.classes is not None:
        pool = first_classes(pool, spec.classes, spec.name)
    k = pool.n_classes
    i_tr = select(
        pool.y_train,
        spec.n_train,
        spec.subset,
        spec.subset_seed,
        0,
        k,
        "training",
        pool.missing_hint,
        spec.name,
    )
    i_te = select(
        pool.y_test,
        spec.n_test,
        spec.subset,
        spec.subset_seed,
        1,
        k,
        "test",
        pool.missing_hint,
        spec.name,
    )
    x_tr, y_tr = pool.x_train[i_tr], pool.y_train[i_tr]
    x_te, y_te = pool.x_test[i_te], pool.y_test[i_te]
    if spec.standardize:
        x_tr, x_te = standardize(x_tr, x_te)
    regression = k == 1  # scalar targets (float), e.g. the `scalar` data set of linear2
    if regression and spec.label_noise > 0:
        raise DataError(f"data.label_noise: {spec.name!r} is a regression data set")
    if not regression:
        y_tr = label_noise(y_tr, spec.label_noise, spec.noise_seed, k)
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    y_dtype = np.float32 if regression else np.int64
    y_tr = np.ascontiguousarray(y_tr, dtype=y_dtype)
    y_te = np.ascontiguousarray(y_te, dtype=y_dtype)
    digest = hashlib.sha256()
    for a in (x_tr, y_tr, x_te, y_te):
        digest.update(a.tobytes())
    prep = "standardized per feature (training-subset mean/std)" if spec.standardize else pool.scale
    subset = spec.subset if spec.subset == "first" else f"{spec.subset} (seed {spec.subset_seed})"
    identity = f"{pool.source} {subset} {len(y_tr)} train / {len(y_te)} test, {prep}"
    if spec.classes is not None:
        identity += f", classes 0-{spec.classes - 1} only"
    if spec.label_noise > 0:
        identity += f", label noise {spec.label_noise:g} (seed {spec.noise_seed})"
    return Dataset(
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        n_classes=k,
        input_shape=tuple(x_tr.shape[1:]),
        identity=identity,
        checksum=digest.hexdigest(),
    )


def first_classes(pool: RawPool, classes: int, name: str) -> RawPool:
    """The pools restricted to the examples of classes ``0 .. classes-1``, in official
    order (Cohen et al. 2025's "first 4 classes" of CIFAR-10); labels are unchanged."""
    if pool.n_classes == 1:
        raise DataError(f"data.classes: {name!r} is a regression data set")
    if not 2 <= classes <= pool.n_classes:
        raise DataError(f"data.classes={classes}: {name!r} has {pool.n_classes} classes "
                        f"(expected 2..{pool.n_classes})")
    tr, te = pool.y_train < classes, pool.y_test < classes
    return dataclasses.replace(pool, x_train=pool.x_train[tr], y_train=pool.y_train[tr],
                               x_test=pool.x_test[te], y_test=pool.y_test[te],
                               n_classes=classes)


def _validate(spec: DataSpec) -> None:
    known = getattr(DATASETS.get(spec.name), "OPTIONS", {})  # a source's own options
    unknown = sorted(k for k, _ in spec.options if k not in known)
    if unknown:
        have = f" (it has: {', '.join(sorted(known))})" if known else ""
        raise DataError(f"data {spec.name!r} has no option data.options.{unknown[0]}{have}")
    if spec.subset not in SUBSETS:
        raise DataError(f"data.subset={spec.subset!r}: expected one of {', '.join(SUBSETS)}")
    for key in ("n_train", "n_test"):
        n = getattr(spec, key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise DataError(f"data.{key}={n!r}: expected a positive integer or None")
    c = spec.classes
    if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
        raise DataError(f"data.classes={c!r}: expected an integer or None")
    p = spec.label_noise
    if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0):
        raise DataError(f"data.label_noise={p!r}: expected a number in [0, 1]")


def select(
    y: np.ndarray,
    n: int | None,
    mode: str,
    seed: int,
    stream: int,
    n_classes: int,
    split: str = "training",
    hint: str = "",
    name: str = "data set",
) -> np.ndarray:
    """Sorted indices of the ``mode`` subset of size ``n`` of a pool with labels ``y``."""
    size = len(y)
    if n is None:
        return np.arange(size)
    if n > size:
        raise DataError(
            f"{name} has only {size} {split} examples available but the task needs {n}{hint}"
        )
    if mode == "first":
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    if mode == "random":
        return np.sort(rng.choice(size, size=n, replace=False))
    per_class = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
    chosen = []
    for c, m in enumerate(per_class):
        members = np.flatnonzero(y == c)
        if m > len(members):
            raise DataError(
                f"{name}: a balanced subset of {n} {split} examples needs {m} of class {c}, "
                f"but only {len(members)} are available{hint}"
            )
        chosen.append(rng.choice(members, size=m, replace=False))
    return np.sort(np.concatenate(chosen))


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature :math:`(x-\\mu)/\\sigma` with training statistics (:math:`\\sigma=0 \\to 1`)."""
    mu = x_train.mean(axis=0, dtype=np.float64)
    sigma = x_train.std(axis=0, dtype=np.float64)
    sigma = np.where(sigma > 0, sigma, 1.0)
    return (x_train - mu) / sigma, (x_test - mu) / sigma


def label_noise(y: np.ndarray, p: float, seed: int, n_classes: int) -> np.ndarray:
    """Symmetric label noise: ``y_i <- c_i ~ U{0..K-1}`` with probability ``p`` (may keep y_i)."""
    if p <= 0:
        return y
    rng = np.random.default_rng(seed)
    u = rng.random(len(y))
    c = rng.integers(0, n_classes, size=len(y))
    return np.where(u < p, c, y).astype(np.int64)


def _digits(spec: DataSpec, root: Path | None) -> RawPool:
    from .digits import load_digits_pool

    return load_digits_pool()


def _cifar10(spec: DataSpec, root: Path | None) -> RawPool:
    from .cifar import load_cifar_pool

    return load_cifar_pool("cifar10", root)


def _cifar100(spec: DataSpec, root: Path | None) -> RawPool:
    from .cifar import load_cifar_pool

    return load_cifar_pool("cifar100", root)


def download(name: str, root: str | os.PathLike | None = None, options=(), **kw) -> Path:
    """Fetch data set ``name`` into the data root: a Hub source's revision (its
    ``options`` over the registered ones) into the root's ``huggingface`` cache
    (:mod:`.hub`), a ``tv-*`` set by torchvision's own download (:mod:`.vision`), or the
    official tarball of a CIFAR set, MD5-checked (:func:`.cifar.download`, ``kw`` its
    options)."""
    loader = DATASETS.get(name)
    hub_source = hasattr(loader, "OPTIONS")
    if hub_source or name in vision.LOADERS:
        where = data_root(root)
        if where is None:
            raise DataError(f"no data directory: set EOSBENCH_DATA (or pass a root) to download {name}")
        if not hub_source:
            return vision.download(name, where)
        o = {**loader.OPTIONS, **dict(options)}
        if Path(str(o["repo"])).expanduser().is_dir():
            raise DataError(f"data.options.repo={o['repo']!r} is a local copy: nothing to download")
        hub.read_hub(o, where)
        return where / "huggingface"
    if name not in ("cifar10", "cifar100"):
        raise DataError(f"no download for data set {name!r}: it ships with eosbench's "
                        "dependencies or is generated (downloads: cifar10, cifar100, the hub "
                        "and tv-* sets)")  # fmt: skip
    from .cifar import download as _download  # lazy: urllib only when downloading

    return _download(name, root, **kw)


DATASETS.register("digits", _digits)
DATASETS.register("cifar10", _cifar10)
DATASETS.register("cifar100", _cifar100)


def _scalar(spec: DataSpec, root: Path | None) -> RawPool:
    """1-d regression for ``linear2``: 64 inputs evenly spaced on [-sqrt(3), sqrt(3)]
    (mean square about 1), targets y = x; the same 64 points form the test pool."""
    x = np.linspace(-math.sqrt(3), math.sqrt(3), 64).reshape(-1, 1)
    return RawPool(
        x_train=x,
        y_train=x[:, 0].copy(),
        x_test=x.copy(),
        y_test=x[:, 0].copy(),
        n_classes=1,
        source="scalar (64 points on [-sqrt 3, sqrt 3], y = x)",
    )


DATASETS.register("scalar", _scalar)

from . import hub, synthetic, vision  # noqa: E402  (their loaders build RawPool, defined above)

DATASETS.register("support", synthetic.support)
DATASETS.register("hub", hub.hub_loader())
DATASETS.register("hub-cifar10", hub.hub_loader(
    official="cifar10", repo="uoft-cs/cifar10", revision=hub.CIFAR10_REVISION,
    config="plain_text", image="img"))  # fmt: skip
DATASETS.register("hub-mnist", hub.hub_loader(repo="ylecun/mnist", revision=hub.MNIST_REVISION))
for _name, _loader in vision.LOADERS.items():
    DATASETS.register(_name, _loader)
for _law in synthetic.STREAM_NOISES:
    DATASETS.register(f"stream-{_law}", synthetic.streaming(_law))

__all__ = [
    "DATASETS",
    "Dataset",
    "RawPool",
    "data_root",
    "download",
    "label_noise",
    "load_dataset",
    "seeded",
    "select",
    "standardize",
]

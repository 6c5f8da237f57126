r"""Synthetic regression pools of the solvable models (the ``theory`` suite).

``support``: the sparse-support teacher of Beneventano, Pinto & Poggio, "How neural networks
learn the support is an implicit regularization effect of SGD", arXiv:2406.11110v1, as in
their code (github andreakiro/sgd-finds-support, ``support-selection-syth-linear``):
:math:`n = 5000` inputs :math:`x \sim N(0, I_{15})` (NumPy's legacy ``randn`` with seed 0), of
which the first :math:`r = 5` are relevant; the irrelevant columns are centred on their
sample mean; the target is linear, :math:`y = \sum_{i<r} x_i`.  Each input appears twice, with
labels :math:`y + \epsilon` and :math:`y - \epsilon`, :math:`\epsilon \sim 0.001\,N(0, 1)`
(seed 0, after the inputs), so that full-batch GD sees the noise-free targets and a mini-batch
does not.  The pool interleaves the two copies (rows :math:`2i, 2i+1`), so ``n_train = 2m``
(subset ``first``) keeps :math:`m` whole pairs.  The test pool is 1,000 fresh inputs (seed 1,
the training pool's column means removed) with noise-free targets.  Use it with
``standardize=False``: standardizing would rescale the columns of the setup.

``stream-gaussian``, ``stream-t3``: one-pass (streaming) least squares in :math:`d = 1000`
dimensions, the setting of Marshall, Xiao, Agarwala & Paquette (clipped SGD,
arXiv:2406.11733v2) and Xiao, Marshall, Agarwala & Paquette (signSGD, arXiv:2411.12135v3):
:math:`x \sim N(0, I_d)`, :math:`y = \langle x, \theta^* \rangle + \epsilon` with
:math:`\theta^*` = :func:`stream_target` (a unit vector) and the label noise
:math:`\epsilon \sim N(0, 1)` or Student-t with 3 degrees of freedom (variance 3, heavy
tailed).  8,000 training rows (8 passes' worth of time :math:`t = k/d`; batch 1 over one epoch
sees each once) and 1,000 test rows, drawn **per run**: NumPy's ``default_rng([d, law, seed])``
with the run's seed (only :math:`\theta^*` is shared), so that the seeds of a task are
independent streams, as in the papers' one-pass setting, and not reorderings of one finite
pool (whose realized noise variance, e.g. 0.968 for one Gaussian pool of 8,000, would be a
bias shared by every seed).  Use with ``standardize=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..task import DataSpec

SUPPORT_D, SUPPORT_R, SUPPORT_N, SUPPORT_NOISE = 15, 5, 5000, 0.001


def support(spec: DataSpec, root: Path | None):
    from . import RawPool

    d, r = SUPPORT_D, SUPPORT_R
    rng = np.random.RandomState(0)
    x = rng.randn(SUPPORT_N, d)
    eps = SUPPORT_NOISE * rng.randn(SUPPORT_N)
    mean = x[:, r:].mean(axis=0)
    x[:, r:] -= mean
    y = x[:, :r].sum(axis=1)
    x_train = np.repeat(x, 2, axis=0)
    y_train = np.stack([y + eps, y - eps], axis=1).reshape(-1)
    x_test = np.random.RandomState(1).randn(1000, d)
    x_test[:, r:] -= mean
    return RawPool(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=x_test[:, :r].sum(axis=1),
        n_classes=1,
        source=f"support (d={d}, first {r} relevant, y = sum of them, each input twice with "
        f"labels y +- {SUPPORT_NOISE:g} N(0,1); arXiv:2406.11110v1's linear teacher)",
    )


STREAM_D, STREAM_N, STREAM_TEST = 1000, 8000, 1000
STREAM_NOISES = {"gaussian": "N(0, 1)", "t3": "Student-t, 3 degrees of freedom"}


def stream_target(d: int = STREAM_D) -> np.ndarray:
    """:math:`\theta^*` of the streaming data sets: a uniformly random unit vector of
    :math:`\\mathbb{R}^d` (``default_rng(12345)``), the same for every noise law."""
    v = np.random.default_rng(12345).standard_normal(d)
    return v / np.linalg.norm(v)


def stream_noise(law: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if law == "gaussian":
        return rng.standard_normal(n)
    if law == "t3":
        return rng.standard_t(3, n)
    raise ValueError(f"unknown noise law {law!r}")


def streaming(law: str):
    """The loader of ``stream-<law>`` (module docstring): a seeded loader, ``seed`` = the
    run's seed."""

    def load(spec: DataSpec, root: Path | None, seed: int):
        from . import RawPool

        rng = np.random.default_rng([STREAM_D, list(STREAM_NOISES).index(law), seed])
        theta = stream_target()
        x = rng.standard_normal((STREAM_N + STREAM_TEST, STREAM_D))
        y = x @ theta + stream_noise(law, rng, STREAM_N + STREAM_TEST)
        return RawPool(
            x_train=x[:STREAM_N],
            y_train=y[:STREAM_N],
            x_test=x[STREAM_N:],
            y_test=y[STREAM_N:],
            n_classes=1,
            source=f"stream-{law} (x ~ N(0, I_{STREAM_D}), y = <x, theta*> + eps, eps "
            f"{STREAM_NOISES[law]}, stream of seed {seed}; arXiv:2406.11733v2, 2411.12135v3)",
        )

    load.seeded = True
    return load

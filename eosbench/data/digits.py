"""The scikit-learn ``digits`` data set (bundled with scikit-learn, no download).

``sklearn.datasets.load_digits()`` holds the 1,797 8x8 grey-level images of
the UCI "Optical Recognition of Handwritten Digits" test set, each pixel an
integer count in 0..16, as a [1797, 64] float array, 10 classes.  The split is
fixed and deterministic: the first 1,500 rows (in the bundled order) are the
training pool and the remaining 297 the test pool.  ``n_train``/``n_test``
then select within these pools (:mod:`eosbench.data`).  Features stay flat:
``input_shape == (64,)``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from . import RawPool

N_TRAIN_POOL = 1500  # rows 0..1499 train, rows 1500..1796 test
N_TOTAL = 1797


def load_digits_pool() -> RawPool:
    """The digits training pool (first 1500 rows) and test pool (last 297 rows)."""
    import sklearn
    from sklearn.datasets import load_digits  # heavy import, only when used

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    if x.shape != (N_TOTAL, 64) or y.shape != (N_TOTAL,):
        raise DataError(
            f"scikit-learn {sklearn.__version__} load_digits returned {x.shape}, "
            f"expected ({N_TOTAL}, 64)"
        )
    hint = f" (digits has {N_TRAIN_POOL} training and {N_TOTAL - N_TRAIN_POOL} test images)"
    return RawPool(
        x_train=x[:N_TRAIN_POOL],
        y_train=y[:N_TRAIN_POOL],
        x_test=x[N_TRAIN_POOL:],
        y_test=y[N_TRAIN_POOL:],
        n_classes=10,
        source=f"digits (scikit-learn {sklearn.__version__} load_digits, rows 0-1499 train, "
        "1500-1796 test)",
        missing_hint=hint,
    )

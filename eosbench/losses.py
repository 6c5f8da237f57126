"""Training losses, each the MEAN over the examples it is given.

``mse`` follows Cohen et al. (2021): one half of the squared error summed over
the outputs, averaged over examples, with one-hot targets built from integer
class labels on the fly (:math:`\\ell = \\tfrac12\\lVert f(x) - e_y\\rVert^2`).
For a scalar-output regression model (one output column) the targets are the
float values themselves.  ``ce`` is the usual softmax cross-entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

LOSSES: Registry = Registry("loss")


def _targets(outputs: Tensor, y: Tensor) -> Tensor:
    if outputs.shape[-1] == 1 and y.is_floating_point():
        return y.reshape(outputs.shape).to(outputs.dtype)
    return F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)


@LOSSES.register("mse")
def mse(outputs: Tensor, y: Tensor) -> Tensor:
    r""":math:`\frac{1}{n}\sum_i \tfrac12 \lVert f(x_i) - e_{y_i} \rVert^2` (Cohen et al. 2021)."""
    return 0.5 * (outputs - _targets(outputs, y)).pow(2).sum(-1).mean()


@LOSSES.register("ce")
def ce(outputs: Tensor, y: Tensor) -> Tensor:
    r""":math:`-\frac{1}{n}\sum_i \log \operatorname{softmax}(f(x_i))_{y_i}`."""
    return F.cross_entropy(outputs, y)


def accuracy_count(outputs: Tensor, y: Tensor) -> Tensor | None:
    """Number of correct arg-max predictions, or None for scalar regression."""
    if outputs.shape[-1] == 1 or y.is_floating_point():
        return None
    return (outputs.argmax(-1) == y).sum()

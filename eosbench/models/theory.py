r"""Models of the solvable settings (the ``theory`` suite).

``deep-linear``: :math:`f(x) = W_{L+1} W_L \cdots W_1 x`, ``depth`` :math:`L` hidden layers
(default 3) of ``width`` units (default 15), no biases, no activation, every weight drawn by
``kaiming_normal_(nonlinearity="relu")`` (std :math:`\sqrt{2/\text{fan-in}}`): the network of
Beneventano, Pinto & Poggio's support-learning experiments (arXiv:2406.11110v1; their code's
``MLP(hiddens=[15, 15, 15], bias=False)`` with its default identity activation).

``linear``: :math:`f(x) = \langle \theta, x \rangle` (one output, no bias), :math:`\theta_0 = 0`:
the streaming least-squares model of the clipped-SGD and signSGD papers (``stream-*`` data).
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import OverrideError
from ..task import ModelSpec
from .mlp import reject


def deep_linear(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``deep-linear``: flatten, ``depth`` bias-free linear layers of ``width``, a linear head."""
    reject(spec, "batchnorm")
    width = spec.width or 15
    depth = 3 if spec.depth is None else spec.depth
    dims = [math.prod(input_shape)] + [width] * depth + [n_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layer = nn.Linear(a, b, bias=False)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        layers.append(layer)
    return nn.Sequential(*layers)


def linear(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``linear``: flatten, one bias-free linear map to one output, zero-initialized."""
    reject(spec, "width", "depth", "batchnorm")
    if n_classes != 1:
        raise OverrideError(f"model 'linear' is a scalar regression model, got {n_classes} outputs")
    layer = nn.Linear(math.prod(input_shape), 1, bias=False)
    nn.init.zeros_(layer.weight)
    return nn.Sequential(nn.Flatten(), layer)


BUILDERS = {"deep-linear": deep_linear, "linear": linear}

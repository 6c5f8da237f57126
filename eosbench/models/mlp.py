"""Fully connected networks ``fc-<act>`` (Cohen et al. 2021, ``src/archs.py``).

.. math::
    f(x) = W_{L+1}\\, \\sigma(W_L \\cdots \\sigma(W_1 \\operatorname{vec}(x) + b_1) \\cdots
    + b_L) + b_{L+1}

with ``depth`` :math:`L` hidden layers (default 2) of ``width`` units (default
200), biases everywhere and PyTorch's default ``nn.Linear`` initialization,
as Cohen et al.'s ``fully_connected_net``.  With ``batchnorm=True`` a
``BatchNorm1d`` follows each activation (their ``fully_connected_net_bn``
order: Linear, activation, BatchNorm).  Any input shape is flattened, so the
same model runs on digits ``(64,)`` and CIFAR ``(3, 32, 32)``.

This module also holds the helpers shared by the model zoo: the activation
table and the check that rejects options a model does not have.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import OverrideError
from ..task import ModelSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}

FC_WIDTH, FC_DEPTH = 200, 2


def reject(spec: ModelSpec, *fields: str) -> None:
    """Raise :class:`OverrideError` if any of ``fields`` is set on a model that lacks it."""
    for name in fields:
        value = getattr(spec, name)
        if value not in (None, False):
            raise OverrideError(
                f"model {spec.name!r} has no option model.{name} "
                f"(got {value!r}); leave it at its default"
            )


def fc(act: str):
    """Builder of ``fc-<act>``: ``builder(spec, input_shape, n_classes) -> nn.Sequential``."""
    activation = ACTIVATIONS[act]

    def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        width = spec.width or FC_WIDTH
        depth = FC_DEPTH if spec.depth is None else spec.depth
        layers: list[nn.Module] = [nn.Flatten()]
        prev = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(prev, width), activation()]
            if spec.batchnorm:
                layers.append(nn.BatchNorm1d(width))
            prev = width
        layers.append(nn.Linear(prev, n_classes))
        return nn.Sequential(*layers)

    build.__doc__ = f"``fc-{act}``: flatten, {FC_DEPTH} x (Linear {FC_WIDTH}, {act}), Linear."
    return build


BUILDERS = {f"fc-{act}": fc(act) for act in ACTIVATIONS}

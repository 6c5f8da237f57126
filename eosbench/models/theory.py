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

import torch
from torch import Tensor, nn

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


class SecondOrderRegression(nn.Module):
    r"""A model quadratic in its parameters :math:`\theta \in \mathbb{R}^P` (a second-order
    regression model, Agarwala, Pedregosa & Pennington, arXiv:2210.04860):
    :math:`f_c(x; \theta) = m^{-1/2} \sum_k x_k \big(G_{kc}^\top \theta + \tfrac12
    \theta^\top Q_{kc} \theta\big)` for inputs :math:`x \in \mathbb{R}^m` and outputs
    :math:`c`, with fixed random :math:`G_{kc} \sim N(0, I_P/P)` and rank-:math:`R` random
    :math:`Q_{kc} = \sum_r a_{kcr} u_r u_r^\top` (:math:`u_r \sim N(0, I_P/P)`,
    :math:`a_{kcr} \sim N(0, 1/R)`, :math:`R = P/2`), so a forward pass costs :math:`O(RP)`;
    :math:`\theta_0 \sim N(0, I_P)`; all drawn from the caller's torch seed.
    ``linear=True`` drops :math:`Q`: the constant-NTK (linearized) model."""

    def __init__(self, m: int, k: int, p: int, linear: bool = False):
        super().__init__()
        r = max(1, p // 2)
        self.theta = nn.Parameter(torch.randn(p))
        self.register_buffer("g", torch.randn(m, k, p) / math.sqrt(p))
        self.register_buffer("u", torch.randn(r, p) / math.sqrt(p))
        a = torch.randn(m, k, r) / math.sqrt(r)
        self.register_buffer("a", torch.zeros_like(a) if linear else a)

    def forward(self, x: Tensor) -> Tensor:
        t = self.theta
        per_input = self.g @ t + 0.5 * self.a @ (self.u @ t) ** 2  # [m, k]
        return x.flatten(1) @ per_input / math.sqrt(per_input.shape[0])


def second_order(linear: bool):
    def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        reject(spec, "depth", "batchnorm")
        return SecondOrderRegression(math.prod(input_shape), n_classes, spec.width or 512, linear)

    build.__doc__ = ("``quadratic-linearized``: the second-order regression model without Q "
                     "(constant NTK)" if linear else
                     "``quadratic``: the second-order regression model (``width`` = P, default 512)")
    return build


BUILDERS["quadratic"] = second_order(False)
BUILDERS["quadratic-linearized"] = second_order(True)

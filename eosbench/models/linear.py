"""``linear2``: the depth-2 scalar linear network :math:`f(x) = a\\,b\\,x`.

Two scalar parameters :math:`a, b` (0-dimensional tensors), input shape
``(1,)``, one output.  With the squared loss on 1-d data,
:math:`L(a,b) = \\frac{1}{n}\\sum_i (a b x_i - y_i)^2`, it is the smallest model
with progressive sharpening and the edge of stability (e.g. Zhu et al. 2023,
Kalra et al. 2023): on the minimum manifold :math:`ab = c^* =
\\sum_i x_i y_i / \\sum_i x_i^2` the Hessian's nonzero eigenvalue is
:math:`\\frac{2}{n}\\sum_i x_i^2 \\,(a^2 + b^2)` for that loss (half of it for eosbench's
``mse``, which carries a factor 1/2).  Initialization is *unbalanced*, the regime
in which large steps regularize (gradient flow conserves :math:`a^2-b^2`, so it
ends at the sharp solution :math:`a^2+b^2=\\sqrt{(a_0^2-b_0^2)^2+4c^{*2}}`, while
GD with a large step settles at a flatter one): :math:`a = 1 + 0.05u_a`,
:math:`b = 0.025\\,(1 + 0.05u_b)` with :math:`u \\sim U[-1, 1]` from the caller's
torch seed; ``init_scale`` multiplies both (``init_scale=4``: :math:`a\\approx4,
b\\approx0.1`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import OverrideError
from ..task import ModelSpec
from .mlp import reject


class ScalarLinear2(nn.Module):
    """:math:`f(x) = a b x` with scalar parameters ``a`` and ``b``."""

    def __init__(self):
        super().__init__()
        u = 2 * torch.rand(2) - 1
        self.a = nn.Parameter(1 + 0.05 * u[0])
        self.b = nn.Parameter(0.025 * (1 + 0.05 * u[1]))

    def forward(self, x: Tensor) -> Tensor:
        return self.a * self.b * x


def linear2(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Depth-2 scalar linear network; needs input shape (1,) and one output."""
    reject(spec, "width", "depth", "batchnorm")
    if tuple(input_shape) != (1,) or n_classes != 1:
        raise OverrideError(
            f"model 'linear2' needs input shape (1,) and 1 output, got "
            f"{tuple(input_shape)} and {n_classes}"
        )
    return ScalarLinear2()


BUILDERS = {"linear2": linear2}

"""VGG-11 for CIFAR (Simonyan & Zisserman 2015, configuration "A").

The CIFAR variant used by Cohen et al. 2021 (``vgg11_nodropout`` /
``vgg11_nodropout_bn`` in ``src/vgg.py`` of locuslab/edge-of-stability, after
chengyangfu/pytorch-vgg-cifar10): eight 3x3 convolutions (padding 1, bias)
with channels

    w, M, 2w, M, 4w, 4w, M, 8w, 8w, M, 8w, 8w, M      (w = ``width``, default 64)

where ``M`` is 2x2 max pooling, each convolution followed by ReLU (with
``batchnorm=True``: Conv, BatchNorm2d, ReLU), then a classifier *without*
dropout: Linear(8w * s^2, 8w), ReLU, Linear(8w, 8w), ReLU, Linear(8w, K), with
s = 1 on 32x32 inputs.  Convolutions are initialized
:math:`W \\sim \\mathcal{N}(0, 2/(9\\, c_{out}))`, :math:`b = 0` (their
``m.weight.data.normal_(0, math.sqrt(2. / n))``, n = 9 c_out); Linear layers
use PyTorch's default.  ``depth`` is fixed by the name.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import OverrideError
from ..task import ModelSpec
from .cnn import image_shape
from .mlp import reject

VGG_WIDTH = 64
CFG_A = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channel multiples of width


def vgg11(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """VGG-11 (configuration A), CIFAR variant without dropout; BatchNorm optional."""
    reject(spec, "depth")
    c, h, w = image_shape(spec, input_shape)
    width = spec.width or VGG_WIDTH
    if h < 32 or w < 32:
        raise OverrideError(f"model {spec.name!r} needs inputs of at least 32x32, got {h}x{w}")
    layers: list[nn.Module] = []
    for v in CFG_A:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
            continue
        conv = nn.Conv2d(c, v * width, kernel_size=3, padding=1)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * conv.out_channels)))
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        if spec.batchnorm:
            layers.append(nn.BatchNorm2d(v * width))
        layers.append(nn.ReLU())
        c = v * width
    hidden = 8 * width
    layers += [
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    ]
    return nn.Sequential(*layers)


BUILDERS = {"vgg11": vgg11}

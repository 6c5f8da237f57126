"""Small convolutional networks ``cnn-<act>`` and ``cnn-avgpool-<act>``.

Cohen et al. 2021 (``convnet`` in ``src/archs.py`` of locuslab/edge-of-stability):
``depth`` (default 2) blocks of

    Conv2d(c_in, width, 3x3, stride 1, padding 1, bias) -> activation
    [-> BatchNorm2d(width) if batchnorm] -> 2x2 pooling

with ``width`` = 32 channels, then flatten and one ``Linear`` to the classes.
Their ``cnn-<act>`` uses **max** pooling and ``cnn-avgpool-<act>`` average
pooling; both are registered under those names.  BatchNorm sits after the
activation, as in their ``convnet_bn``.  PyTorch default initialization.
On ``3x32x32`` inputs the classifier sees :math:`32 \\cdot 8 \\cdot 8 = 2048`
features; each block halves the side (floor), so ``1x8x8`` works as well.
"""

from __future__ import annotations

from torch import nn

from ..errors import OverrideError
from ..task import ModelSpec
from .mlp import ACTIVATIONS

CNN_WIDTH, CNN_DEPTH = 32, 2
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def image_shape(spec: ModelSpec, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input, or :class:`OverrideError` naming the model."""
    if len(input_shape) != 3:
        raise OverrideError(
            f"model {spec.name!r} needs image inputs (C, H, W), "
            f"got input shape {tuple(input_shape)}"
        )
    c, h, w = input_shape
    return c, h, w


def convnet(act: str, pool: str):
    """Builder of the Cohen et al. convnet with activation ``act`` and ``pool`` pooling."""
    activation, pooling = ACTIVATIONS[act], POOLS[pool]

    def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        c, h, w = image_shape(spec, input_shape)
        width = spec.width or CNN_WIDTH
        depth = CNN_DEPTH if spec.depth is None else spec.depth
        if h >> depth < 1 or w >> depth < 1:
            raise OverrideError(f"model {spec.name!r}: {depth} poolings do not fit a {h}x{w} input")
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, kernel_size=3, stride=1, padding=1), activation()]
            if spec.batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(pooling(2))
            c, h, w = width, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, n_classes)]
        return nn.Sequential(*layers)

    build.__doc__ = f"Cohen et al. convnet: {act} activations, {pool} pooling."
    return build


BUILDERS = {f"cnn-{act}": convnet(act, "max") for act in ACTIVATIONS}
BUILDERS |= {f"cnn-avgpool-{act}": convnet(act, "avg") for act in ACTIVATIONS}

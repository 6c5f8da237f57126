"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

``resnet20`` (default ``depth`` = 3 blocks per stage) and ``resnet32``
(default 5): a 3x3 stem convolution to ``width`` (16) channels, three stages
of ``depth`` basic blocks with ``width``, ``2 width``, ``4 width`` channels
(the first block of stages 2 and 3 has stride 2), global average pooling and
one ``Linear``; :math:`6\\,\\text{depth}+2` weighted layers.  A basic block is

.. math::
    y = \\operatorname{relu}\\big(\\mathrm{BN}(W_2 * \\operatorname{relu}(\\mathrm{BN}(W_1 * x)))
        + s(x)\\big)

with the parameter-free **option A** shortcut of the paper's CIFAR models:
:math:`s(x) = x`, or, where the shape changes, :math:`x` subsampled with stride
2 and zero-padded in the channel dimension.  Convolutions use He et al. 2015's
initialization :math:`W \\sim \\mathcal{N}(0, 2/(9 c_{in}))`; the head uses
PyTorch's default ``nn.Linear`` init.

``batchnorm=False`` (the BN-free variant studied at the edge of stability)
removes every BatchNorm, gives every convolution a bias (initialized to zero),
and -- because without normalization the residual sums would double the
activation variance in every block -- scales the initial :math:`W_2` of every
block by :math:`L^{-1/2}`, :math:`L = 3\\,\\text{depth}` blocks, the Fixup rule
:math:`L^{-1/(2m-2)}` for :math:`m=2` layers per branch (Zhang, Dauphin & Ma
2019).  Cohen et al. 2021 used a BN-free ResNet-32, but the ``resnet_cifar``
module their ``src/archs.py`` imports is not in their public repository, so
the details of their BN-free variant could not be checked; this one is
documented here instead.  ``batchnorm`` defaults to ``False`` in
:class:`~eosbench.task.ModelSpec`, so ``resnet20`` means the BN-free variant
unless ``model.batchnorm=true`` is set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..task import ModelSpec
from .cnn import image_shape

RESNET_WIDTH = 16


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an option-A shortcut (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(c_out) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(c_out) if batchnorm else nn.Identity()
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet with ``6 * blocks + 2`` layers."""

    def __init__(self, in_channels: int, n_classes: int, width: int, blocks: int, batchnorm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        layers, c = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(c, c_out, stride, batchnorm))
                c = c_out
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if not batchnorm:
            with torch.no_grad():
                for block in layers:
                    block.conv2.weight.mul_(1.0 / math.sqrt(len(layers)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def resnet(default_blocks: int):
    """Builder of the CIFAR ResNet with ``6 * default_blocks + 2`` layers by default."""

    def build(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        c, _, _ = image_shape(spec, input_shape)
        blocks = default_blocks if spec.depth is None else spec.depth
        return CifarResNet(c, n_classes, spec.width or RESNET_WIDTH, blocks, spec.batchnorm)

    build.__doc__ = f"CIFAR ResNet-{6 * default_blocks + 2} (option A; BN optional)."
    return build


BUILDERS = {"resnet20": resnet(3), "resnet32": resnet(5)}

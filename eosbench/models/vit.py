"""A small Vision Transformer for 32x32 images (Dosovitskiy et al. 2021).

``vit``: the image is cut into non-overlapping 4x4 patches (64 tokens on
32x32), each linearly embedded to ``width`` (default 192) dimensions by a 4x4
stride-4 convolution; a learned class token is prepended and a learned
position embedding added.  ``depth`` (default 6) pre-LayerNorm blocks

.. math::
    z \\leftarrow z + \\mathrm{MHA}(\\mathrm{LN}(z)), \\qquad
    z \\leftarrow z + W_2\\, \\mathrm{GELU}(W_1 \\mathrm{LN}(z) + b_1) + b_2

follow, with ``width / 64`` heads (at least 1; 3 by default) and MLP hidden
size ``4 width``, then a final LayerNorm and a Linear head on the class token:
ViT-Tiny's width and heads at half its depth, no dropout.  Attention is
written out, :math:`\\mathrm{softmax}(QK^\\top/\\sqrt{d_h})V`, rather than
``F.scaled_dot_product_attention``, so that double backward (Hessian-vector
products) works with every backend.  Initialization as timm's ViT: Linear
weights, class token and position embedding truncated-normal with std 0.02,
biases 0, LayerNorm :math:`\\gamma=1, \\beta=0`, patch embedding PyTorch's
default.  There is no BatchNorm option.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import OverrideError
from ..task import ModelSpec
from .cnn import image_shape
from .mlp import reject

VIT_WIDTH, VIT_DEPTH, PATCH, HEAD_DIM, MLP_RATIO = 192, 6, 4, 64, 4


class Attention(nn.Module):
    """Multi-head self-attention with explicit softmax."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        n, t, d = z.shape
        q, k, v = self.qkv(z).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim)
        )

    def forward(self, z: Tensor) -> Tensor:
        z = z + self.attn(self.ln1(z))
        return z + self.mlp(self.ln2(z))


class ViT(nn.Module):
    """Patch embedding, class token, ``depth`` pre-LN blocks, LayerNorm, Linear head."""

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, dim: int, depth: int):
        super().__init__()
        c, h, w = input_shape
        heads = max(1, dim // HEAD_DIM)
        self.patch = nn.Conv2d(c, dim, kernel_size=PATCH, stride=PATCH)
        tokens = (h // PATCH) * (w // PATCH) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.patch(x).flatten(2).transpose(1, 2)  # [n, tokens - 1, dim]
        z = torch.cat([self.cls_token.expand(len(z), -1, -1), z], dim=1) + self.pos_embed
        z = self.ln(self.blocks(z))
        return self.head(z[:, 0])


def vit(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Small ViT, patch 4 (module docstring)."""
    reject(spec, "batchnorm")
    c, h, w = image_shape(spec, input_shape)
    if h % PATCH or w % PATCH:
        raise OverrideError(f"model 'vit' needs a side divisible by {PATCH}, got {h}x{w}")
    dim = spec.width or VIT_WIDTH
    heads = max(1, dim // HEAD_DIM)
    if dim % heads:
        raise OverrideError(f"model 'vit': width {dim} is not divisible by {heads} heads")
    depth = VIT_DEPTH if spec.depth is None else spec.depth
    return ViT((c, h, w), n_classes, dim, depth)


BUILDERS = {"vit": vit}

"""A small Vision Transformer for 32x32 images (Dosovitskiy et al. 2021).

``vit``: the image is cut into non-overlapping ``p x p`` patches (``p`` =
``model.options.patch``, default 4: 64 tokens on 32x32; 8: 16 tokens), each
linearly embedded to ``width`` (default 192) dimensions by a ``p x p`` stride-``p``
convolution; a learned class token is prepended and a learned
position embedding added.  ``depth`` (default 6) pre-LayerNorm blocks

.. math::
    z \\leftarrow z + \\mathrm{MHA}(\\mathrm{LN}(z)), \\qquad
    z \\leftarrow z + W_2\\, \\mathrm{GELU}(W_1 \\mathrm{LN}(z) + b_1) + b_2

follow, with ``width / 64`` heads (at least 1; 3 by default) and MLP hidden
size ``4 width``, then a final LayerNorm and a Linear head on the class token:
ViT-Tiny's width and heads at half its depth, no dropout.  Attention is
written out, :math:`\\mathrm{softmax}(QK^\\top/\\sqrt{d_h})V`, rather than
``F.scaled_dot_product_attention``, so that double backward (Hessian-vector
products) works with every backend, and LayerNorm is :class:`.norms.LayerNorm`, written
out, because PyTorch's fused kernel has wrong third derivatives (the central flow needs
them).  Initialization as timm's ViT: Linear
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
from .norms import LayerNorm

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
        self.ln1, self.attn = LayerNorm(dim), Attention(dim, heads)
        self.ln2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim)
        )

    def forward(self, z: Tensor) -> Tensor:
        z = z + self.attn(self.ln1(z))
        return z + self.mlp(self.ln2(z))


class ViT(nn.Module):
    """Patch embedding, class token, ``depth`` pre-LN blocks, LayerNorm, Linear head."""

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, dim: int, depth: int,
                 patch: int = PATCH):
        super().__init__()
        c, h, w = input_shape
        heads = max(1, dim // HEAD_DIM)
        self.patch = nn.Conv2d(c, dim, kernel_size=patch, stride=patch)
        tokens = (h // patch) * (w // patch) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.ln = LayerNorm(dim)
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
    """Small ViT, patch ``model.options.patch`` (module docstring)."""
    reject(spec, "batchnorm")
    c, h, w = image_shape(spec, input_shape)
    patch = dict(spec.options).get("patch", PATCH)
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise OverrideError(f"model.options.patch={patch!r}: expected a positive integer")
    if h % patch or w % patch:
        raise OverrideError(f"model 'vit' needs a side divisible by its patch {patch}, "
                            f"got {h}x{w}")
    dim = spec.width or VIT_WIDTH
    heads = max(1, dim // HEAD_DIM)
    if dim % heads:
        raise OverrideError(f"model 'vit': width {dim} is not divisible by {heads} heads")
    depth = VIT_DEPTH if spec.depth is None else spec.depth
    return ViT((c, h, w), n_classes, dim, depth, patch)


vit.OPTIONS = {"patch": PATCH}


BUILDERS = {"vit": vit}

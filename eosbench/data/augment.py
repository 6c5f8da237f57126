"""Per-step data augmentation: random crop with zero padding and horizontal flip.

The standard CIFAR augmentation of He et al. 2016 ("Deep Residual Learning for
Image Recognition", Sec. 4.2): pad each image with ``padding`` zeros on every
side, crop a random ``H x W`` window, and mirror it left-right with
probability 1/2.  For an image :math:`x \\in \\mathbb{R}^{C\\times H\\times W}`
with offsets :math:`d_y, d_x \\sim U\\{0,\\dots,2p\\}` and flip bit
:math:`f \\sim \\mathrm{Bernoulli}(1/2)`,

.. math::
    \\tilde x_{c,i,j} = \\bar x_{c,\\, i+d_y,\\, j'+d_x}, \\quad
    j' = W-1-j \\text{ if } f \\text{ else } j,

where :math:`\\bar x` is :math:`x` zero-padded by :math:`p` (zero is the
mean of standardized data).  The offsets and flips of a batch are drawn with
``generator`` on the generator's device, in this order: ``dy``, ``dx``,
``flip`` (each ``[n]``), so a result is fully determined by the generator
state, whatever device the images are on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Randomly crop (zero padding ``padding``) and flip a batch ``[n, C, H, W]``."""
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip expects images [n, C, H, W], got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    gdev = generator.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=gdev).to(x.device).bool()
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [n, H]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(-1), cols) + dx[:, None]  # [n, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]

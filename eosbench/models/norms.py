"""Normalization layers written out in elementary operations, for third derivatives.

PyTorch 2.13's fused ``layer_norm``, ``batch_norm`` and ``instance_norm`` kernels give correct
Hessian-vector products (forward-over-reverse and reverse-over-reverse) but wrong third
derivatives by every autograd route, and wrong forward-over-forward second derivatives;
``group_norm`` and compositions of elementary operations are right (tests/test_flow.py checks
them against central differences of Hessian-vector products, themselves checked against
finite differences of gradients).  The central flow and the gradient of the sharpness need
third derivatives (:meth:`eosbench.curvature.LossOperator.curvature_gradients`), so eosbench's
own models use :class:`LayerNorm` here, and the operator refuses a model that contains one of
:data:`FUSED`.  Cohen et al. 2025's central-flows code notes the same of LayerNorm
(arXiv:2410.24206v2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# the module types whose forward calls a fused kernel with wrong third derivatives
FUSED = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_FUSED_FORWARDS = frozenset(t.forward for t in FUSED)


class LayerNorm(nn.LayerNorm):
    r""":class:`torch.nn.LayerNorm` (same parameters, state dict and values to rounding) with
    the forward written out, :math:`(x - \mu)\,(\sigma^2 + \epsilon)^{-1/2}\,\gamma + \beta`
    over the trailing ``normalized_shape``, so that every derivative order is autograd's
    composition of elementary operations."""

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(-len(self.normalized_shape), 0))
        mu = x.mean(dims, keepdim=True)
        var = (x - mu).square().mean(dims, keepdim=True)
        z = (x - mu) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            z = z * self.weight
        if self.bias is not None:
            z = z + self.bias
        return z


def fused_norms(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that run a fused normalization kernel (an instance of
    :data:`FUSED` whose forward is PyTorch's, not :class:`LayerNorm`'s)."""
    return [name or type(model).__name__ for name, m in model.named_modules()
            if isinstance(m, FUSED) and type(m).forward in _FUSED_FORWARDS]

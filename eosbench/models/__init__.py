"""The model zoo: a registry of builders and :func:`build_model`.

A builder has the signature ``builder(spec: ModelSpec, input_shape, n_classes)
-> nn.Module``; the module maps a batch ``[n, *input_shape]`` to ``[n,
n_classes]``.  Third-party packages add builders through the entry point
group ``eosbench.models``.  Registered names:

* ``fc-<act>``, act in tanh, relu, elu, softplus -- :mod:`.mlp`;
* ``cnn-<act>`` (max pooling) and ``cnn-avgpool-<act>`` -- :mod:`.cnn`;
* ``resnet20``, ``resnet32`` -- :mod:`.resnet`;
* ``vgg11`` -- :mod:`.vgg`;  ``vit`` -- :mod:`.vit`;  ``linear2`` -- :mod:`.linear`;
* ``deep-linear``, ``linear``, ``quadratic``, ``quadratic-linearized`` -- :mod:`.theory`;
* ``deq-gaussian``, ``deq-orthogonal``, ``deq-symmetric`` -- :mod:`.deq`;
* ``torchvision`` -- any ``torchvision.models`` classifier (``model.options.arch``),
  :mod:`.vision` (the ``vision`` extra).

``ModelSpec.width``/``depth`` (``None`` = the architecture's default) and
``batchnorm`` are interpreted by each builder, ``options`` only by a builder that declares
them in its ``OPTIONS`` dict (name: default); a model that lacks an option
raises :class:`~eosbench.errors.OverrideError` rather than ignoring it.
``init_scale`` :math:`=s` is applied here, after the builder, to every model
(registered or plugged in): every parameter :math:`\\theta` that is not a
bias and not the affine parameter of a normalization layer is replaced by
:math:`s\\,\\theta` (weights, convolution kernels, ViT class token and
position embedding, the scalars of ``linear2``).  Random seeds are the
caller's business (``torch.manual_seed`` before :func:`build_model`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import OverrideError
from ..registry import Registry
from ..task import ModelSpec
from . import cnn, deq, linear, mlp, resnet, theory, vgg, vision, vit

Builder = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
MODELS: Registry[Builder] = Registry("model", entry_point_group="eosbench.models")

for _module in (mlp, cnn, resnet, vgg, vit, linear, theory, deq, vision):
    for _name, _builder in _module.BUILDERS.items():
        MODELS.register(_name, _builder)

_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def scale_weights(model: nn.Module, scale: float) -> nn.Module:
    """Multiply every non-bias, non-normalization parameter of ``model`` by ``scale``."""
    if scale == 1.0:
        return model
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _NORMS):
                continue
            for name, p in module.named_parameters(recurse=False):
                if not name.endswith("bias"):
                    p.mul_(scale)
    return model


def available(name: str) -> bool:
    """Whether model ``name`` can be built here: False for a family whose optional package
    (its builder's ``REQUIRES``, a module name) is not installed."""
    need = getattr(MODELS.get(name), "REQUIRES", None)
    return need is None or importlib.util.find_spec(need) is not None


def second_order(name: str) -> bool:
    """Whether model ``name`` has a loss Hessian the curvature operators can take: False for
    a builder that declares ``SECOND_ORDER = False`` (a DEQ's implicit gradient)."""
    return bool(getattr(MODELS.get(name), "SECOND_ORDER", True))


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the registered model ``spec.name`` for ``input_shape`` and ``n_classes``."""
    builder = MODELS.get(spec.name)
    for key in ("width", "depth"):
        value = getattr(spec, key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise OverrideError(f"model.{key}={value!r}: expected a positive integer or None")
    if not isinstance(spec.init_scale, (int, float)) or not math.isfinite(spec.init_scale):
        raise OverrideError(f"model.init_scale={spec.init_scale!r}: expected a finite number")
    known = getattr(builder, "OPTIONS", {})  # a family's own options and their defaults
    unknown = sorted(k for k, _ in spec.options if k not in known)
    if unknown:
        raise OverrideError(f"model {spec.name!r} has no option model.options.{unknown[0]}"
                            + (f" (it has: {', '.join(sorted(known))})" if known else ""))  # fmt: skip
    shape = tuple(int(s) for s in input_shape)
    model = builder(spec, shape, int(n_classes))
    return scale_weights(model, float(spec.init_scale))


# copies of the parameters training holds at least: the parameters, their gradient, two
# optimizer states, the curvature measurements' vectors and products
MEMORY_COPIES = 8


def meta_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module | None:
    """The model of ``spec`` built on the meta device (shapes only: no memory, no random
    numbers).  An option it rejects raises :class:`OverrideError`, as does a failure with a
    width or depth set (e.g. too large to describe); None if it cannot be built on the meta
    device otherwise (the real build decides)."""
    try:
        with torch.device("meta"):
            return build_model(spec, input_shape, n_classes)
    except OverrideError:
        raise
    except Exception as e:  # noqa: BLE001 - a plug-in may not support the meta device
        if spec.width is None and spec.depth is None:
            return None
        raise OverrideError(
            f"model {spec.name!r} with width={spec.width}, depth={spec.depth} cannot be built "
            f"({type(e).__name__}: {' '.join(str(e).split())[:120]})"
        ) from None


def check_memory(spec: ModelSpec, model: nn.Module, available: int | None, where: str) -> None:
    """:class:`OverrideError` if ``model``'s parameters, :data:`MEMORY_COPIES` times, exceed
    ``available`` bytes (the memory of device ``where``; None: not checked)."""
    n = sum(p.numel() for p in model.parameters())
    need = n * torch.tensor([], dtype=torch.get_default_dtype()).element_size() * MEMORY_COPIES
    if available is not None and need > available:
        raise OverrideError(
            f"model {spec.name!r} with width={spec.width}, depth={spec.depth} has {n:,} "
            f"parameters: training needs at least {need / 2**30:.3g} GiB, more than the "
            f"{available / 2**30:.3g} GiB of {where}"
        )


__all__ = ["MODELS", "Builder", "build_model", "check_memory", "meta_model", "scale_weights",
           "second_order"]

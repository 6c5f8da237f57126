r"""torchvision classification models as a model family (the ``vision`` extra).

``torchvision`` -- a classification model that ``torchvision.models.get_model`` builds by
name (``model.options.arch``, e.g. ``resnet18``, ``resnet50``, ``mobilenet_v3_small``),
randomly initialized as torchvision initializes it (``weights=None``), with ``num_classes``
set to the task's; the ViTs (``vit_*``) are built for the data's image size, GoogLeNet and
Inception v3 without their auxiliary heads (so that training returns one output).

The CIFAR adaptation (``model.options.cifar_stem``, default on), the form in which ResNets
are trained on 32x32 images since He et al. (2016, arXiv:1512.03385v1, section 4.2) and in
most CIFAR code since (e.g. Zagoruyko & Komodakis's wide ResNets, arXiv:1605.07146v4): a
ResNet's 7x7 stride-2 stem convolution becomes a 3x3 stride-1 convolution of the same width
and its max-pool is removed, so that a 32x32 image keeps its resolution into the first stage.
ResNet-18 so adapted has 11,173,962 parameters for 10 classes (a test pins it).  The stem also
takes the data's number of channels (1 for MNIST).  Other architectures are built as
torchvision defines them and need 3-channel input; ``cifar_stem`` applies to the ResNet
family only.

The models keep their own normalization layers (BatchNorm in the ResNets): ``model.width``,
``depth`` and ``batchnorm`` do not apply and are refused.  Cost on this project's 2-core CPU
(one thread, torch 2.14.1): a ResNet-18 training step on 8 CIFAR images 0.67 s, one
Hessian-vector product on 64 images 22 s and about 6 GB, so the tasks that use it
(``generalization-resnet18``) are registered for the GPU.
"""

from __future__ import annotations

from torch import nn

from ..errors import OverrideError, UserError
from ..task import ModelSpec

INSTALL = ("torchvision (its models and data readers) needs the vision extra: pip install "
           "'eosbench[vision]' (on x86_64 here: torch==2.14.1 torchvision==0.29.1)")  # fmt: skip


def import_torchvision():
    """torchvision, or one line saying how to install it (missing, or built for another torch)."""
    try:
        import torchvision
    except (ImportError, RuntimeError) as e:
        raise UserError(f"{INSTALL}; importing torchvision failed: {' '.join(str(e).split())}") from e
    return torchvision


def torchvision_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The torchvision model ``model.options.arch`` (module docstring)."""
    o = {**torchvision_model.OPTIONS, **dict(spec.options)}
    for key in ("width", "depth"):
        if getattr(spec, key) is not None:
            raise OverrideError(f"model.{key}: a torchvision model is built as torchvision "
                                f"defines {o['arch']!r}; use another arch instead")  # fmt: skip
    if spec.batchnorm:
        raise OverrideError("model.batchnorm: a torchvision model keeps its own normalization")
    tv = import_torchvision()
    arch = str(o["arch"])
    names = tv.models.list_models(module=tv.models)
    if arch not in names:
        close = [n for n in names if n.startswith(arch[:4])][:5]
        raise OverrideError(f"model.options.arch={arch!r} is not a torchvision classification "
                            f"model" + (f" (close: {', '.join(close)})" if close else ""))
    if len(input_shape) != 3:
        raise OverrideError(f"model {spec.name!r} takes images [C, H, W], not inputs of shape "
                            f"{tuple(input_shape)}")  # fmt: skip
    channels = int(input_shape[0])
    kw: dict = {}
    if arch.startswith("vit_"):
        kw["image_size"] = int(input_shape[1])  # torchvision's ViTs assert their input size
    if arch in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=True)  # one output tensor in training mode
    model = tv.models.get_model(arch, weights=None, num_classes=int(n_classes), **kw)
    is_resnet = isinstance(model, tv.models.ResNet)
    if is_resnet and (o["cifar_stem"] or channels != 3):
        old = model.conv1
        kernel, stride, padding = ((3, 1, 1) if o["cifar_stem"]
                                   else (old.kernel_size, old.stride, old.padding))
        model.conv1 = nn.Conv2d(channels, old.out_channels, kernel, stride, padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        if o["cifar_stem"]:
            model.maxpool = nn.Identity()
    elif channels != 3:
        raise OverrideError(f"model.options.arch={arch!r} takes 3-channel images; the data "
                            f"has {channels} (only the ResNets are adapted)")  # fmt: skip
    return model


torchvision_model.OPTIONS = {"arch": "resnet18", "cifar_stem": True}
torchvision_model.REQUIRES = "torchvision"  # the optional package (models.available)

BUILDERS = {"torchvision": torchvision_model}

"""Tests of the model zoo: every registered model builds, runs and has a pinned size."""

from __future__ import annotations

import math
import sys
import types
from dataclasses import replace
from importlib import metadata

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eosbench import registry
from eosbench.errors import OverrideError, UnknownNameError
from eosbench.models import MODELS, available, build_model, scale_weights
from eosbench.models.resnet import BasicBlock
from eosbench.models.vit import Attention
from eosbench.task import ModelSpec

DIGITS, CIFAR, SCALAR, SUPPORT, STREAM = (64,), (3, 32, 32), (1,), (15,), (1000,)


def natural(name: str) -> tuple[tuple[int, ...], int]:
    """The input shape and number of outputs a model is meant for."""
    if name == "linear2":
        return SCALAR, 1
    if name == "deep-linear":
        return SUPPORT, 1
    if name == "linear":
        return STREAM, 1
    if name.startswith(("quadratic", "deq-")):
        return DIGITS, 10
    if name.startswith("fc-"):
        return DIGITS, 10
    return CIFAR, 10


# Exact parameter counts (natural input shape, default width/depth, no BatchNorm).
# fc on digits: 64*200+200 + 200*200+200 + 200*10+10 = 55,210.
# cnn on CIFAR: conv 3*32*9+32 = 896, conv 32*32*9+32 = 9,248, linear 32*8*8*10+10 = 20,490.
# resnet20 (BN-free: every conv has a bias): conv weights 432 + 6*2,304 + (4,608 + 5*9,216)
#   + (18,432 + 5*36,864) = 267,696, conv biases 16+6*16+6*32+6*64 = 688, head 64*10+10 = 650.
# resnet32: 432 + 10*2,304 + (4,608+9*9,216) + (18,432+9*36,864) = 461,232 + 1,136 + 650.
# vgg11: convs 1,792 + 73,856 + 295,168 + 590,080 + 1,180,160 + 3*2,359,808 = 9,220,480;
#   classifier 2*(512*512+512) + 512*10+10 = 530,442.
# vit (192 wide, 6 blocks): patch 3*192*16+192 = 9,408, cls 192, pos 65*192 = 12,480,
#   per block 2*384 + (192*576+576) + (192*192+192) + (192*768+768) + (768*192+192) = 444,864,
#   final LayerNorm 384, head 192*10+10 = 1,930.
# deep-linear on the support teacher: 15*15 + 2*15*15 + 15 = 690, no biases.
PARAMS = {
    **{f"fc-{a}": 55_210 for a in ("tanh", "relu", "elu", "softplus")},
    **{f"cnn-{a}": 30_634 for a in ("tanh", "relu", "elu", "softplus")},
    **{f"cnn-avgpool-{a}": 30_634 for a in ("tanh", "relu", "elu", "softplus")},
    "resnet20": 267_696 + 688 + 650,
    "resnet32": 461_232 + 1_136 + 650,
    "vgg11": 9_220_480 + 530_442,
    "vit": 9_408 + 192 + 12_480 + 6 * 444_864 + 384 + 1_930,
    "linear2": 2,
    "deep-linear": 690,
    "linear": 1000,  # on the stream-* data (d = 1000), no bias
    "quadratic": 512,  # theta only (G, U, a are fixed buffers)
    "quadratic-linearized": 512,
    # deq on digits: inject 64*64+64, W 64*64, head 64*10+10
    **{f"deq-{f}": 64 * 64 + 64 + 64 * 64 + 64 * 10 + 10 for f in ("gaussian", "orthogonal", "symmetric")},
    # torchvision's ResNet-18 with the CIFAR stem, 10 classes: 11,689,512 for 1,000 classes,
    # minus the head's 513,000 plus 5,130, minus the 7x7 stem's 9,408 plus the 3x3 stem's 1,728
    "torchvision": 11_173_962,
}
# With BatchNorm: 2 parameters per normalized channel; the ResNet convs lose their biases.
PARAMS_BN = {
    "fc-tanh": 55_210 + 2 * 400,
    "cnn-relu": 30_634 + 2 * 64,
    "resnet20": 267_696 + 2 * 688 + 650,  # 269,722 = He et al.'s "0.27M"
    "resnet32": 461_232 + 2 * 1_136 + 650,
    "vgg11": 9_750_922 + 2 * (64 + 128 + 2 * 256 + 4 * 512),
}


def buildable(names: list[str]) -> list:
    """``names`` as parameters, those whose optional package is missing marked to skip."""
    why = "needs its optional package (torchvision: the vision extra, nox -s tests_vision)"
    return [pytest.param(n, marks=pytest.mark.skipif(not available(n), reason=why)) for n in names]


BUILDABLE = buildable(MODELS.list())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_a_pinned_count():
    assert set(MODELS.list()) == set(PARAMS)


@pytest.mark.parametrize("name", BUILDABLE)
def test_builds_runs_and_has_pinned_size(name):
    shape, k = natural(name)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name), shape, k)
    assert n_params(model) == PARAMS[name]
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, k)
    assert torch.isfinite(out).all()
    (out - 1).square().sum().backward()  # a target: the zero-initialized linear model outputs 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(PARAMS_BN))
def test_batchnorm_variants(name):
    shape, k = natural(name)
    model = build_model(ModelSpec(name=name, batchnorm=True), shape, k)
    assert n_params(model) == PARAMS_BN[name]
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(3, *shape)).shape == (3, k)


def test_fc_flattens_cifar_images():
    # 3072*200+200 + 200*200+200 + 200*10+10 = 656,810
    model = build_model(ModelSpec(name="fc-tanh"), CIFAR, 10)
    assert n_params(model) == 656_810
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_cnn_on_8x8_images():
    # 1*32*9+32 + 32*32*9+32 + 32*2*2*10+10
    model = build_model(ModelSpec(name="cnn-tanh"), (1, 8, 8), 10)
    assert n_params(model) == 320 + 9_248 + 1_290
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_width_and_depth_options():
    fc = build_model(ModelSpec(name="fc-tanh", width=50, depth=3), DIGITS, 10)
    assert n_params(fc) == (64 * 50 + 50) + 2 * (50 * 50 + 50) + (50 * 10 + 10)
    cnn = build_model(ModelSpec(name="cnn-relu", depth=3), CIFAR, 10)
    assert n_params(cnn) == 896 + 2 * 9_248 + (32 * 4 * 4 * 10 + 10)
    r = build_model(ModelSpec(name="resnet20", depth=5), CIFAR, 10)
    assert n_params(r) == PARAMS["resnet32"]
    v = build_model(ModelSpec(name="vit", width=64, depth=1), CIFAR, 10)
    block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    assert n_params(v) == (3 * 64 * 16 + 64) + 64 + 65 * 64 + block + 128 + (64 * 10 + 10)
    v8 = build_model(ModelSpec(name="vit", width=64, depth=1, options=(("patch", 8),)),
                     CIFAR, 10)
    assert n_params(v8) == (3 * 64 * 64 + 64) + 64 + 17 * 64 + block + 128 + (64 * 10 + 10)
    assert v8(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_fc_tanh_matches_closed_form():
    torch.manual_seed(1)
    model = build_model(ModelSpec(name="fc-tanh"), DIGITS, 10)
    x = torch.randn(5, 64)
    w1, w2, w3 = (model[i] for i in (1, 3, 5))
    expected = w3(torch.tanh(w2(torch.tanh(w1(x)))))
    manual = torch.tanh(torch.tanh(x @ w1.weight.T + w1.bias) @ w2.weight.T + w2.bias)
    manual = manual @ w3.weight.T + w3.bias
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model(x), manual)


def test_cnn_uses_max_pooling_and_avgpool_variant_average():
    assert any(isinstance(m, nn.MaxPool2d) for m in build_model(ModelSpec("cnn-relu"), CIFAR, 10))
    avg = build_model(ModelSpec("cnn-avgpool-relu"), CIFAR, 10)
    assert any(isinstance(m, nn.AvgPool2d) for m in avg)
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg)


def test_resnet_option_a_shortcut():
    # with both convolutions zeroed, a block is relu(shortcut(x)): option A subsamples by 2
    # and pads the new channels with zeros
    block = BasicBlock(16, 32, stride=2, batchnorm=False)
    for p in block.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 16, 8, 8)
    expected = torch.cat([F.relu(x[:, :, ::2, ::2]), torch.zeros(2, 16, 4, 4)], dim=1)
    torch.testing.assert_close(block(x), expected)


def test_resnet_bn_free_fixup_scaling():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet32"), CIFAR, 10)
    block = model.blocks[-1]  # 64 -> 64 channels; He init std sqrt(2/(9*64)), conv2 / sqrt(15)
    he = math.sqrt(2 / (9 * 64))
    assert block.conv1.weight.std().item() == pytest.approx(he, rel=0.03)
    assert block.conv2.weight.std().item() == pytest.approx(he / math.sqrt(15), rel=0.03)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_vgg_initialization():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="vgg11"), CIFAR, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and [c.out_channels for c in convs][-1] == 512
    last = convs[-1]
    assert last.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.01)
    assert torch.count_nonzero(last.bias) == 0


def test_vit_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    att = Attention(dim=32, heads=4)
    ref = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(att.qkv.weight)
        ref.in_proj_bias.copy_(att.qkv.bias)
        ref.out_proj.weight.copy_(att.proj.weight)
        ref.out_proj.bias.copy_(att.proj.bias)
    z = torch.randn(3, 7, 32)
    torch.testing.assert_close(att(z), ref(z, z, z, need_weights=False)[0])


def test_written_out_layer_norm_equals_torch_layer_norm():
    from eosbench.models.norms import LayerNorm, fused_norms

    torch.manual_seed(0)
    ours, ref = LayerNorm(16), nn.LayerNorm(16)
    with torch.no_grad():
        for p in (*ours.parameters(), *ref.parameters()):
            p.copy_(torch.linspace(-1, 2, 16))
    z = 3 * torch.randn(4, 5, 16) + 1
    torch.testing.assert_close(ours(z), ref(z), rtol=1e-5, atol=1e-5)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    vit = build_model(ModelSpec(name="vit", width=32, depth=1), CIFAR, 10)
    assert fused_norms(vit) == []
    assert fused_norms(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))) == ["1"]


def test_vit_supports_double_backward():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="vit", width=32, depth=1), CIFAR, 10)
    params = list(model.parameters())
    loss = model(torch.randn(2, *CIFAR)).square().mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    vs = [torch.randn_like(p) for p in params]
    hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs, strict=True)), params)
    assert all(torch.isfinite(h).all() for h in hvp)


def test_linear2_hessian_closed_form():
    # on the minimum manifold ab = c* the nonzero Hessian eigenvalue of
    # (1/n) sum (abx - y)^2 is (2/n) sum x^2 (a^2 + b^2)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="linear2"), SCALAR, 1)
    x = torch.tensor([[1.0], [2.0], [-1.5]], dtype=torch.float64)
    y = 0.7 * x
    model = model.double()
    a = torch.tensor(2.0, dtype=torch.float64)
    theta = {"a": a, "b": 0.7 / a}

    def loss(p):
        return (torch.func.functional_call(model, p, (x,)) - y).square().mean()

    h = torch.func.hessian(loss)(theta)
    dense = torch.stack([torch.stack([h[i][j] for j in "ab"]) for i in "ab"])
    expected = 2 * x.square().mean() * (a**2 + (0.7 / a) ** 2)
    torch.testing.assert_close(torch.linalg.eigvalsh(dense).max(), expected)
    # the documented unbalanced initialization: a = 1 +- 5%, b = 0.025 (1 +- 5%)
    torch.manual_seed(0)
    fresh = build_model(ModelSpec(name="linear2"), SCALAR, 1)
    assert 0.95 <= fresh.a.item() <= 1.05 and 0.02375 <= fresh.b.item() <= 0.02625
    scaled = build_model(ModelSpec(name="linear2", init_scale=4.0), SCALAR, 1)
    assert 3.8 <= scaled.a.item() <= 4.2 and 0.095 <= scaled.b.item() <= 0.105


@pytest.mark.parametrize("name", BUILDABLE)
def test_init_scale_multiplies_weights_only(name):
    shape, k = natural(name)
    small = name in ("vgg11", "vit", "resnet20", "resnet32")
    spec = ModelSpec(name=name, width=8 if small else None)
    torch.manual_seed(3)
    base = build_model(spec, shape, k)
    torch.manual_seed(3)
    scaled = dict(build_model(replace(spec, init_scale=2.5), shape, k).named_parameters())
    norms = {f"{m}.{p}".lstrip(".") for m, mod in base.named_modules()
             if isinstance(mod, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
             for p, _ in mod.named_parameters()}  # fmt: skip
    for pname, p in base.named_parameters():
        factor = 1.0 if pname.endswith("bias") or pname in norms else 2.5
        torch.testing.assert_close(scaled[pname], factor * p, msg=pname)
    assert any(pname.endswith("bias") for pname in scaled) or name in ("linear2", "deep-linear", "linear", "quadratic", "quadratic-linearized")


def test_scale_weights_skips_batchnorm():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="cnn-relu", batchnorm=True), CIFAR, 10)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    scale_weights(model, 3.0)
    assert torch.equal(bn.weight, torch.ones(32)) and torch.equal(bn.bias, torch.zeros(32))


def test_determinism_under_manual_seed():
    def build(seed):
        torch.manual_seed(seed)
        return build_model(ModelSpec(name="resnet20"), CIFAR, 10).state_dict()

    a, b, c = build(0), build(0), build(1)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_batchnorm_works_with_functional_call():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="fc-relu", batchnorm=True), DIGITS, 10)
    x = torch.randn(8, 64)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = {k: v.detach().clone() for k, v in state.items()}
    out = torch.func.functional_call(model, state, (x,))
    torch.testing.assert_close(out, model(x))
    params = {k: v for k, v in state.items() if k in dict(model.named_parameters())}
    buffers = {k: v for k, v in state.items() if k not in params}

    def loss(p, b):  # buffers are inputs, so BatchNorm may update its running stats
        return torch.func.functional_call(model, (p, b), (x,)).square().sum()

    grads = torch.func.grad(loss)(params, buffers)
    reference = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    for (name, g), r in zip(grads.items(), reference, strict=True):
        torch.testing.assert_close(g, r, msg=name)


@pytest.mark.parametrize("spec, shape, k", [
    (ModelSpec(name="vit", batchnorm=True), CIFAR, 10),
    (ModelSpec(name="vit", options=(("patch", 5),)), CIFAR, 10),
    (ModelSpec(name="vit", options=(("patch", 0),)), CIFAR, 10),
    (ModelSpec(name="vit", options=(("depth", 2),)), CIFAR, 10),
    (ModelSpec(name="vgg11", depth=4), CIFAR, 10),
    (ModelSpec(name="linear2"), DIGITS, 10),
    (ModelSpec(name="linear2", width=3), SCALAR, 1),
    (ModelSpec(name="cnn-relu"), DIGITS, 10),
    (ModelSpec(name="fc-tanh", width=0), DIGITS, 10),
    (ModelSpec(name="fc-tanh", depth=1.5), DIGITS, 10),
    (ModelSpec(name="fc-tanh", init_scale=float("nan")), DIGITS, 10),
])
def test_invalid_options_are_user_errors(spec, shape, k):
    with pytest.raises(OverrideError, match="model"):
        build_model(spec, shape, k)


def test_unknown_model_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'fc-tanh'"):
        build_model(ModelSpec(name="fc-tahn"), DIGITS, 10)


def test_entry_point_model_is_found(monkeypatch):
    plugin = types.ModuleType("eosbench_toy_plugin")

    def toy(spec, input_shape, n_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes))

    plugin.toy = toy
    monkeypatch.setitem(sys.modules, "eosbench_toy_plugin", plugin)
    ep = metadata.EntryPoint(name="toy-linear", value="eosbench_toy_plugin:toy",
                             group="eosbench.models")

    def entry_points(group=None, **kw):
        return [ep] if group == "eosbench.models" else []

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    with MODELS.rescanning():
        assert "toy-linear" in MODELS.list()
        model = build_model(ModelSpec(name="toy-linear", init_scale=2.0), DIGITS, 10)
        assert model(torch.randn(4, 64)).shape == (4, 10)
        assert n_params(model) == 650


@pytest.mark.skipif(available("torchvision"), reason="torchvision is installed")
def test_without_the_vision_extra_a_torchvision_model_or_reader_says_how_to_install(tmp_path):
    from eosbench.data import load_dataset
    from eosbench.errors import UserError
    from eosbench.task import DataSpec

    with pytest.raises(UserError, match=r"pip install 'eosbench\[vision\]'"):
        build_model(ModelSpec(name="torchvision"), (3, 32, 32), 10)
    with pytest.raises(UserError, match=r"pip install 'eosbench\[vision\]'"):
        load_dataset(DataSpec(name="tv-mnist"), tmp_path)

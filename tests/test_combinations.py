"""Every registered model x loss x optimizer trains one step through the runner's closure
(BatchNorm on where the model has it), with finite loss and parameters that moved."""

from __future__ import annotations

import pytest
import torch

from eosbench.losses import LOSSES
from eosbench.models import MODELS, build_model
from eosbench.optim import OPTIMIZERS, build_optimizer
from eosbench.runner import Objective
from eosbench.task import ModelSpec, OptimizerSpec
from tests.test_models import buildable, natural

SPECS = {
    "sgd": OptimizerSpec(name="sgd", lr=0.01),
    "heavy-ball": OptimizerSpec(name="sgd", lr=0.01, momentum=0.9),
    "nesterov": OptimizerSpec(name="sgd", lr=0.01, momentum=0.9, nesterov=True),
    "adam": OptimizerSpec(name="adam", lr=1e-3),
    "rmsprop": OptimizerSpec(name="rmsprop", lr=1e-3),
    "sam": OptimizerSpec(name="sam", lr=0.01, rho=0.05),
    "usam-adam": OptimizerSpec(name="sam", lr=1e-3, rho=0.05, normalized=False, base="adam"),
    "sgd-tracer": OptimizerSpec(name="tracer", lr=0.01, momentum=0.9, rho=1e-6),
    "adam-tracer": OptimizerSpec(name="tracer", lr=1e-3, rho=1e-6, base="adam"),
    "armijo": OptimizerSpec(name="armijo", lr=0.01),
    "polyak": OptimizerSpec(name="polyak", lr=0.01),
    "cdat": OptimizerSpec(name="cdat", lr=0.01, cdat_sigma=2.0),
    "signsgd": OptimizerSpec(name="signsgd", lr=1e-3),
    "clipped-sgd": OptimizerSpec(name="sgd", lr=0.01, clip_norm=0.5),
    "linf": OptimizerSpec(name="linf", lr=1e-6),
    "spectral": OptimizerSpec(name="spectral", lr=1e-3),
    "block_cd": OptimizerSpec(name="block_cd", lr=0.01),
    "muon": OptimizerSpec(name="muon", lr=0.01),
    "muon-nesterov-ns": OptimizerSpec(name="muon", lr=0.01, momentum=0.9, nesterov=True,
                                      orthogonalizer="newton-schulz"),
    "lion": OptimizerSpec(name="lion", lr=1e-4, weight_decay=0.1),
}
pytestmark = pytest.mark.slow  # 232 training steps, VGG-11 and ViT among them (about a minute)
BN_MODELS = {"resnet20", "resnet32", "vgg11"} | {m for m in MODELS.list("cnn-*")}


def test_every_registered_optimizer_is_covered():
    assert {s.name for s in SPECS.values()} == set(OPTIMIZERS.list())


@pytest.mark.parametrize("opt", list(SPECS))
@pytest.mark.parametrize("loss", LOSSES.list())
@pytest.mark.parametrize("model", buildable(MODELS.list()))
def test_one_step(model, loss, opt):
    shape, k = natural(model)
    if k == 1 and loss == "ce":
        pytest.skip("scalar regression model: MSE only")
    torch.manual_seed(0)
    spec = ModelSpec(name=model, batchnorm=model in BN_MODELS)
    net = build_model(spec, shape, k)
    x = torch.randn(6, *shape)
    y = torch.randn(6) if k == 1 else torch.arange(6) % k
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = build_optimizer(SPECS[opt], net.parameters())
    closure, stats = Objective(net, LOSSES.get(loss), physical_batch_size=4).closure(x, y)
    optimizer.step(closure)
    assert torch.isfinite(stats["loss"])
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))

"""Pilot (issue 20): the BatchNorm CNN of the architectures suite under GD at lr 0.01, seed 0:
the training loss, the sharpness and where the top Hessian eigenvector lives (its squared norm
per parameter tensor, shares >= 0.05) over the first 40 steps; about 40 s on one core.

    EOSBENCH_DATA=../shared/data python scripts/pilot_bn_catapult.py
"""
from __future__ import annotations

import os

import torch

from eosbench.curvature import LossOperator, top_eigenpairs
from eosbench.data import load_dataset
from eosbench.losses import LOSSES
from eosbench.models import build_model
from eosbench.runner import seed_everything
from eosbench.suites import TASKS

torch.set_num_threads(1)
task = TASKS.get("cifar10-4class-1k/cnn-relu-w8-bn/mse/gd/lr=0.01")
data = load_dataset(task.data, os.environ.get("EOSBENCH_DATA"))
seed_everything(0, torch.device("cpu"))
model = build_model(task.model, data.input_shape, data.n_classes)
model.train()
loss_fn = LOSSES.get(task.loss)
x, y = data.x_train, data.y_train
opt = torch.optim.SGD(model.parameters(), lr=task.optimizer.lr)
names = [k for k, p in model.named_parameters()]
sizes = [p.numel() for p in model.parameters()]
print([(k, tuple(p.shape)) for k, p in model.named_parameters()])
for t in range(41):
    loss = loss_fn(model(x), y)
    if t % 5 == 0 or t < 12:
        op = LossOperator(model, loss_fn, x, y)
        r = top_eigenpairs(op, k=1, tol=1e-3)
        v = r.eigenvectors[:, 0]
        parts = zip(names, torch.split(v, sizes), strict=True)
        share = {k: round(float(c.pow(2).sum()), 2) for k, c in parts}
        print(t, round(float(loss.detach()), 4), round(float(r.eigenvalues[0]), 1),
              {k: s for k, s in share.items() if s >= 0.05}, flush=True)
    opt.zero_grad()
    loss.backward()
    opt.step()

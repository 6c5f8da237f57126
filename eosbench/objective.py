"""The training objective: the loss over a batch, its gradient accumulated in chunks.

Full-batch gradients are accumulated over chunks of at most ``physical_batch_size``
examples (each chunk's mean loss weighted by its share of the data), so memory stays
bounded and the gradient is that of the mean loss over all examples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .losses import accuracy_count


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics) on exit."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _chunks(n: int, size: int | None) -> list[slice]:
    size = size or n
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class Objective:
    """The training loss over a batch of data, evaluated in chunks."""

    def __init__(self, model: nn.Module, loss_fn, physical_batch_size: int | None):
        self.model = model
        self.loss_fn = loss_fn
        self.pbs = physical_batch_size
        self.gradient_evaluations = 0  # closure calls: one gradient of the loss over a batch
        self.gradient_examples = 0  # examples those gradients were taken over, in total

    def closure(self, x: Tensor, y: Tensor):
        """A closure ``closure(update_bn=True) -> loss`` filling ``.grad`` (optimizer contract)."""
        stats: dict[str, Any] = {}

        def closure(update_bn: bool = True) -> Tensor:
            ctx = contextlib.nullcontext() if update_bn else preserved_buffers(self.model)
            with ctx:
                self.model.zero_grad(set_to_none=False)
                n = x.shape[0]
                self.gradient_evaluations += 1
                self.gradient_examples += n
                total = torch.zeros((), device=x.device)
                correct = torch.zeros((), device=x.device)
                has_acc = True
                for s in _chunks(n, self.pbs):
                    out = self.model(x[s])
                    loss = self.loss_fn(out, y[s])
                    (loss * ((s.stop - s.start) / n)).backward()
                    total += loss.detach() * (s.stop - s.start)
                    c = accuracy_count(out.detach(), y[s])
                    has_acc = has_acc and c is not None
                    if c is not None:
                        correct += c
            if "loss" not in stats:  # the first call is at the unperturbed parameters
                stats["loss"] = total / n
                stats["acc"] = correct / n if has_acc else None
            return total / n

        return closure, stats

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, train_mode: bool) -> dict[str, float]:
        """Mean loss and accuracy; train mode uses batch statistics but keeps buffers."""
        was_training = self.model.training
        self.model.train(train_mode)
        with preserved_buffers(self.model):
            total, correct, has_acc = 0.0, 0.0, True
            for s in _chunks(x.shape[0], self.pbs):
                out = self.model(x[s])
                total += float(self.loss_fn(out, y[s])) * (s.stop - s.start)
                c = accuracy_count(out, y[s])
                has_acc = has_acc and c is not None
                correct += float(c) if c is not None else 0.0
        self.model.train(was_training)
        n = x.shape[0]
        return {"loss": total / n, "acc": correct / n if has_acc else float("nan")}

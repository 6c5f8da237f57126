"""Curvature engine: Hessian/GGN operators, top eigenpairs, traces, spectral densities and
mini-batch sharpness.  Every estimate states its cost in Hessian-vector products (HVPs).

Typical use (sharpness of the full-batch training loss, warm-started across steps)::

    op = LossOperator(model, loss_fn, x, y, physical_batch_size=1000)
    res = top_eigenpairs(op, k=1, tol=1e-3, init=previous_vector)
    sharpness, previous_vector = float(res.eigenvalues[0]), res.eigenvectors
"""

from __future__ import annotations

from .eigen import EigResult, top_eigenpairs
from .generalized import GeneralizedResult, generalized_sharpness
from .operators import LossOperator, MatrixOperator
from .stochastic import (
    GapResult,
    StochasticResult,
    batch_sharpness,
    minibatch_sharpness,
    noise_variance,
    sharpness_gap,
)
from .trace import (
    TraceResult,
    effective_dimension,
    hutchinson_trace,
    per_example_ntk_trace,
    slq_density,
)

__all__ = [
    "EigResult",
    "GapResult",
    "GeneralizedResult",
    "LossOperator",
    "MatrixOperator",
    "StochasticResult",
    "TraceResult",
    "batch_sharpness",
    "effective_dimension",
    "generalized_sharpness",
    "hutchinson_trace",
    "minibatch_sharpness",
    "noise_variance",
    "per_example_ntk_trace",
    "sharpness_gap",
    "slq_density",
    "top_eigenpairs",
]

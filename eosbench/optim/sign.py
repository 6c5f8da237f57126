r"""Sign descent / signSGD: :math:`\theta_{t+1} = \theta_t - \eta\,\operatorname{sign}(g_t)`,
coordinatewise, with :math:`g_t = \nabla L(\theta_t) + \omega\theta_t` on the step's batch
(full batch: sign descent, the steepest descent of the :math:`\ell_\infty` norm; a batch:
signSGD, Bernstein et al. 2018, arXiv:1802.04434).  The signSGD paper of the ``theory``
suite is Xiao, Marshall, Agarwala & Paquette, arXiv:2411.12135v3 (streaming least squares,
step :math:`\eta/d`).  No threshold on :math:`\lambda_{\max}`: full-batch sign descent is the
normalized :math:`\ell_\infty` steepest descent, whose edge is :math:`2/\eta` on
:math:`S_\infty/\lVert g\rVert_1` (Islamov et al., arXiv:2603.05002v1;
:func:`.steepest.sign_threshold`, measured by ``generalized_sharpness`` with ``norm: linf``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..task import OptimizerSpec
from .steepest import Steepest


def build(spec: OptimizerSpec, params: Iterable[Any]) -> Steepest:
    """:math:`\\theta \\leftarrow \\theta - \\eta\\,\\operatorname{sign}(g + \\omega\\theta)`:
    the normalized :math:`\\ell_\\infty` steepest descent (``torch.sign``: 0 where a
    coordinate's gradient is exactly 0)."""
    return Steepest(params, spec.lr, "linf", normalized=True, weight_decay=spec.weight_decay)

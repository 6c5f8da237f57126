"""``eosbench submit validate``, ``submit template`` and ``submit plan``, by their public
names where ``eosbench.cli`` imports them: :func:`validate` and :func:`accept` from
:mod:`.validator` (which reads the submission through :mod:`.sandbox`), :func:`template` and
:func:`plan` from :mod:`.builders`.
"""

from __future__ import annotations

from .builders import plan, template
from .validator import accept, validate

__all__ = ["accept", "plan", "template", "validate"]

"""Leaderboard submissions: ``eosbench submit validate``, ``submit template`` and ``submit plan``.

A submission is data only (a JSON manifest and run directories).  The work is split by
concern:

* :mod:`.sandbox` -- reading an untrusted submission: the ``lstat`` scan of its tree, the
  size limits, :func:`~.sandbox.read_limited` and the strict JSON-lines parser;
* :mod:`.validator` -- :func:`validate` (claims and scores re-derived from the submitted time
  series, judged by the declared threshold; no optimizer plug-in is imported) and
  :func:`accept`;
* :mod:`.builders` -- :func:`template` and :func:`plan`.

This module keeps their public names where ``eosbench.cli`` imports them.
"""

from __future__ import annotations

from .builders import plan, template
from .sandbox import Limits, read_limited, scan
from .validator import Result, accept, dumps_entry, validate

__all__ = [
    "Limits",
    "Result",
    "accept",
    "dumps_entry",
    "plan",
    "read_limited",
    "scan",
    "template",
    "validate",
]

"""eosbench: executable claims about the edge of stability.

A registry of standardized tasks (data, model, loss, optimizer, schedule,
measurements, claims, seeds), a deterministic runner, verified curvature
measurements and claims that turn published phenomena into PASS/FAIL checks.
"""

__version__ = "0.1.0"

"""Errors that reach the user.

:class:`UserError` and its subclasses describe a mistake in what the user asked
for (an unknown task, a bad override, a missing or corrupt data file).  The CLI
prints their message on one line of standard error and exits with status 2;
it never shows a traceback for them.  Every other exception is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input; exit status 2, no traceback."""

    exit_code = 2


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OverrideError(UserError):
    """A ``--set KEY=VALUE`` override that does not fit the task."""


class DataError(UserError):
    """A data set that is missing, too small, corrupt or of the wrong form."""


class RegistryError(Exception):
    """A programming error in a registry: a duplicate or malformed name."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b'?)`` for the closest candidates, or ``''``."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"

"""The leaderboard: tracks, submissions, their validation and verification, and the pages.

* :mod:`.tracks` -- the registered tracks (``TRACKS``): each a fixed set of tasks and seeds
  (registered in :mod:`eosbench.suites.leaderboard`), scored by its kind (a
  :class:`~.tracks.Track` subclass) from the runs (:class:`~eosbench.record.Run`); the
  built-in baselines' hyperparameters.
* :mod:`.manifest` -- the submission manifest (``manifest.json``) and its parser, which
  raises only :class:`~.manifest.SubmissionError`.
* :mod:`.submission` -- ``eosbench submit validate``, ``submit template`` and ``submit plan``
  (their public names), split into :mod:`.sandbox` (reading an untrusted submission: the
  ``lstat`` scan, size limits, strict JSON), :mod:`.validator` (data only: never unpickles or
  imports anything from the submission, nor any optimizer plug-in) and :mod:`.builders`.
* :mod:`.verify` -- ``eosbench submit verify``: re-runs a sample of the runs.
* :mod:`.render` -- ``eosbench leaderboard``: Markdown, LaTeX and a static HTML page.

``docs/leaderboard.md`` is the contributor guide.
"""

from __future__ import annotations

SUBMISSION_SCHEMA = "eosbench-submission/1"
ENTRY_SCHEMA = "eosbench-leaderboard-entry/1"

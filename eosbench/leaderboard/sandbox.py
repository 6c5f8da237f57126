"""Reading a submission without trusting it: the scan of its tree and the reading of a file.

Every file is looked at with ``lstat`` first -- size, type, place -- and read only when it is
a regular file within the :class:`Limits`, inside the submission directory
(``Path.resolve``), opened without following a symbolic link.  Nothing is followed,
unpickled, imported or run; what is read is bytes, parsed as strict JSON
(:func:`~.manifest.loads_strict`: no ``NaN``, ``Infinity``, out-of-range numbers or duplicate
keys) -- ``metrics.jsonl`` by :func:`loads_records`, the bytes form of the store's JSON-lines
reader (:func:`eosbench.store.read_records`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import LineError, json_lines  # noqa: F401 (LineError: re-exported)
from .manifest import MANIFEST, Problem, loads_strict

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib")


@dataclass(frozen=True)
class Limits:
    """What a submission may hold; checked with ``lstat`` before anything is read."""

    file_bytes: int = 16 * 2**20  # any one file
    manifest_bytes: int = 1 * 2**20
    total_bytes: int = 256 * 2**20  # all files together
    files: int = 5000
    depth: int = 10  # directory levels below the submission directory


DEFAULT_LIMITS = Limits()


def _mb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class _TooMany(Exception):
    pass


def scan(root: Path, limits: Limits) -> tuple[dict[str, int], list[Problem]]:
    """Regular files under ``root`` (relative POSIX path -> size) and the problems of the
    tree: symbolic links, special files, files over the size limits, too many, too deep.
    Nothing is followed or read."""
    files: dict[str, int] = {}
    problems: list[Problem] = []
    total = 0
    root_real = root.resolve()

    def bad(rel: str, message: str) -> None:
        problems.append(Problem(rel, "-", message))

    def walk(d: Path, rel: str, depth: int) -> None:
        nonlocal total
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            return bad(rel or ".", f"cannot list the directory ({e.strerror})")
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            if len(files) + len(problems) > limits.files:
                bad(r, f"more than {limits.files} files: stopped here")
                raise _TooMany
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = Path(d, e.name).resolve()
                except (OSError, RuntimeError):  # a loop
                    target = None
                where = (
                    "inside the submission"
                    if target is not None and target.is_relative_to(root_real)
                    else f"pointing outside the submission ({target or 'a loop'})"
                )
                bad(r, f"symbolic link {where}: a submission holds plain files only")
            elif stat.S_ISDIR(st.st_mode):
                if depth >= limits.depth:
                    bad(r, f"more than {limits.depth} levels deep")
                else:
                    walk(Path(d, e.name), r, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                files[r] = st.st_size
                total += st.st_size
                limit = limits.manifest_bytes if r == MANIFEST else limits.file_bytes
                if st.st_size > limit:
                    bad(r, f"{_mb(st.st_size)}, over the limit of {_mb(limit)}")
            else:
                bad(r, "not a regular file (device, pipe or socket)")

    with contextlib.suppress(_TooMany):
        walk(root, "", 0)
    if total > limits.total_bytes:
        bad(".", f"{_mb(total)} in all, over the limit of {_mb(limits.total_bytes)}")
    return files, problems


def read_limited(root: Path, rel: str, limit: int) -> bytes:
    """The bytes of the regular file ``root/rel`` (no symbolic link anywhere on the way,
    inside ``root``, at most ``limit`` bytes); :class:`ValueError` otherwise."""
    root_real = root.resolve()
    path = root_real / rel
    if not path.resolve().is_relative_to(root_real):
        raise ValueError("path escapes the submission directory")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{_mb(st.st_size)}, over the limit of {_mb(limit)}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"over the limit of {_mb(limit)} (grew while read)")
    return data


def loads_records(data: bytes) -> list[tuple[int, Any]]:
    """:func:`eosbench.store.json_lines` with each line strict JSON (:func:`loads_strict`)."""
    return json_lines(data, loads_strict)

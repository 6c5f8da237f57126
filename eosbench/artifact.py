"""The results artifact: every run of a report in one compressed, columnar file.

``eosbench report RUNS --publish --out FOLDER`` writes ``FOLDER/runs.parquet`` (Parquet,
zstd) beside the tables and figures, and ``eosbench report FOLDER`` / ``eosbench check
FOLDER`` work from that file alone.  It is a plain table, readable by pandas
(``pd.read_parquet``) and by Hugging Face ``datasets`` (``load_dataset("parquet",
data_files=...)``):

``run`` (string: the run's id, its path below the published roots), ``task`` (string),
``seed`` (int64), ``step`` (int64)
    one row per recorded step of every run, in the run's order;
one column per recorded key (``train_loss``, ``sharpness``, ...)
    float32 where every value of the column is exactly a float32 (the runner records most
    quantities in float32), else float64; null where the step did not record the key.

The run records -- ``run.json`` (task, hashes, status, provenance, cost) and the verdicts
(``claims.json``) of each run -- are the file's key-value metadata ``eosbench`` (JSON): a
list in the order of the rows, each with ``id``, ``record``, ``verdicts`` and ``series``
(False for a run kept without its time series, e.g. from a GPU session that cannot be
re-run here: it has no rows and only its recorded verdicts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import store
from .errors import UserError
from .record import Run, Series

ARTIFACT_FILE = "runs.parquet"
FORMAT = 1
META_KEY = b"eosbench"


def is_artifact(path: Path) -> bool:
    """A results folder (holding :data:`ARTIFACT_FILE`) or the file itself."""
    path = Path(path)
    return (path / ARTIFACT_FILE).is_file() or (path.name == ARTIFACT_FILE and path.is_file())


def _column(values: np.ndarray):
    import pyarrow as pa

    mask = ~np.isfinite(values)
    as32 = values.astype(np.float32)
    lossless = np.array_equal(as32.astype(np.float64)[~mask], values[~mask])
    return pa.array(as32 if lossless else values, mask=mask)


def write_artifact(path: Path, runs: Sequence[Run]) -> Path:
    """Write ``runs`` (ids unique) into the Parquet file ``path`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"two runs would be published as {dup!r}")
    with_series = [r for r in runs if r.has_series]
    keys = sorted({k for r in with_series for k in r.series.columns})
    n = [len(r.series.steps) for r in with_series]
    total = sum(n)
    cols = {
        "run": pa.array(np.repeat([r.id for r in with_series], n).astype(str), pa.string()),
        "task": pa.array(np.repeat([r.task.name for r in with_series], n).astype(str), pa.string()),
        "seed": pa.array(np.repeat([r.seed for r in with_series], n).astype(np.int64)),
        "step": pa.array(
            np.concatenate([r.series.steps for r in with_series]).astype(np.int64)
            if total
            else np.zeros(0, dtype=np.int64)
        ),
    }
    for k in keys:
        parts = [r.series.columns.get(k, np.full(len(r.series.steps), np.nan)) for r in with_series]
        cols[k] = _column(np.concatenate(parts) if total else np.zeros(0))
    meta = {
        "format": FORMAT,
        "runs": [
            {
                "id": r.id,
                "record": dict(r.record),
                "verdicts": [v.to_dict() for v in r.verdicts],
                "series": r.has_series,
            }
            for r in runs
        ],
    }
    table = pa.table(cols).replace_schema_metadata(
        {META_KEY: json.dumps(store.finite(meta), sort_keys=True, allow_nan=False).encode()}
    )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, tmp, compression="zstd", compression_level=19)
    tmp.replace(path)
    return path


def read_artifact(path: Path) -> list[Run]:
    """The runs of a results folder's (or the file's) artifact, in their published order."""
    import pyarrow.parquet as pq

    from .claims import Verdict

    path = Path(path)
    f = path if path.name == ARTIFACT_FILE else path / ARTIFACT_FILE
    try:
        table = pq.read_table(f)
    except FileNotFoundError:
        raise UserError(f"{f}: no such file") from None
    except Exception as e:  # pyarrow raises its own error types for a damaged file
        raise UserError(f"{f}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw)
        if meta["format"] != FORMAT:
            raise ValueError(f"format {meta['format']!r}, expected {FORMAT}")
        entries = meta["runs"]
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{f}: not an eosbench results artifact ({e})") from None
    run_col = table.column("run").to_numpy(zero_copy_only=False).astype(str)
    steps = table.column("step").to_numpy()
    keys = [c for c in table.column_names if c not in ("run", "task", "seed", "step")]
    data = {k: table.column(k).to_numpy(zero_copy_only=False).astype(np.float64) for k in keys}
    bounds: dict[str, tuple[int, int]] = {}
    if len(run_col):
        change = np.flatnonzero(run_col[1:] != run_col[:-1]) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(run_col)]])
        bounds = {run_col[s]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
    out = []
    for e in entries:
        series = None
        if e["series"]:
            lo, hi = bounds.get(e["id"], (0, 0))
            cols = {k: v[lo:hi] for k, v in data.items() if np.isfinite(v[lo:hi]).any()}
            series = Series(steps[lo:hi].astype(np.int64), cols)
        fields = Verdict.__dataclass_fields__
        verdicts = [Verdict(**{k: v[k] for k in fields if k in v}) for v in e["verdicts"]]
        try:
            out.append(Run.from_record(e["id"], e["record"], series, verdicts))
        except (UserError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"{f}: run {e.get('id')!r}: {err}") from None
    return out

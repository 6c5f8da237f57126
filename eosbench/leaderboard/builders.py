"""``eosbench submit template`` and ``submit plan``: building a submission.

``plan`` prints the ``eosbench run`` commands of a complete entry; ``template`` turns the
finished run directories they make into a submission directory (``manifest.json`` with the
scores and file hashes, the runs' ``run.json``, ``metrics.jsonl`` and ``claims.json``, and a
``README.md``), which :func:`~.validator.validate` then accepts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..task import OptimizerSpec, Task, slug
from . import SUBMISSION_SCHEMA
from .manifest import (
    MANIFEST,
    RUN_FILES,
    SubmissionError,
    ThresholdDecl,
    manifest_to_dict,
    parse_manifest,
)
from .tracks import TRACKS, Track, optimizer_spec
from .validator import README, builtin_optimizers


def _track_of(task_name: str) -> Track | None:
    """The track one of whose tasks is ``task_name``."""
    tracks = (TRACKS.get(n) for n in TRACKS.list())
    return next((t for t in tracks if task_name in (tt.task for tt in t.tasks)), None)


def _declared(track: Track, spec: OptimizerSpec) -> ThresholdDecl | None:
    """The installed optimizer's threshold, declared; None for a track that needs none."""
    from ..optim import threshold

    if not track.needs_threshold:
        return None
    try:
        t = threshold(spec)
    except UserError as e:
        raise UserError(f"the {track.name} track needs a stability threshold: {e}") from None
    return ThresholdDecl(t.quantity, float(t.value), t.formula)


def _distribution(optimizer: str) -> tuple[str, str] | None:
    """(package, version) of the installed distribution registering ``optimizer``."""
    from importlib import metadata

    if optimizer in builtin_optimizers():
        return "eosbench", __version__
    for ep in metadata.entry_points(group="eosbench.optimizers"):
        if ep.name == optimizer and ep.dist is not None:
            return ep.dist.name, ep.dist.version
    return None


def template(
    out: Path,
    runs: list[Path],
    method: str,
    entry_id: str,
    authors: list[str],
    paper: str,
    package: str | None = None,
    version: str | None = None,
) -> Path:
    """Build a submission in ``out`` from finished run directories of track tasks (made by
    ``eosbench run``): copies ``run.json`` and ``metrics.jsonl``, evaluates the claims into
    ``claims.json``, declares the optimizer's threshold (from the installed optimizer) and
    writes ``manifest.json`` with the scores and file hashes, and a ``README.md``."""
    from ..claims import evaluate
    from ..record import Run, Series
    from ..store import FINISHED, atomic_write_json, find_runs, read_json, read_records
    from ..task import from_dict
    from .tracks import hyperparameters_of

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory")
    found = find_runs(runs)
    if not found:
        raise UserError("no runs found under " + ", ".join(map(str, runs)))
    groups: dict[str, list[tuple[Path, dict, Task]]] = {}
    for rdir in found:
        meta = read_json(rdir / "run.json")
        task = from_dict(meta["task"])
        track = _track_of(task.name)
        if track is None:
            raise UserError(f"{rdir}: task {task.name!r} is not a task of a leaderboard track "
                            "(eosbench tasks --suite leaderboard)")  # fmt: skip
        if meta.get("status") not in FINISHED:
            raise UserError(f"{rdir}: the run did not finish (status {meta.get('status')!r})")
        groups.setdefault(track.name, []).append((rdir, meta, task))
    optimizers = {t.optimizer.name for g in groups.values() for _, _, t in g}
    if len(optimizers) != 1:
        raise UserError(f"the runs use several optimizers ({', '.join(sorted(optimizers))}): "
                        "a submission is one method")  # fmt: skip
    optimizer = optimizers.pop()
    if package is None or version is None:
        dist = _distribution(optimizer)
        if dist is None:
            raise UserError(f"optimizer {optimizer!r}: no installed package registers it; "
                            "give --package and --version")  # fmt: skip
        package, version = package or dist[0], version or dist[1]
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)

    def build() -> None:
        tracks: dict[str, Any] = {}
        for tname in sorted(groups):
            track = TRACKS.get(tname)
            specs = {t.optimizer for _, _, t in groups[tname]}
            if len(specs) != 1:
                raise UserError(f"the {tname} track's runs use different hyperparameters: "
                                + "; ".join(sorted(map(str, specs))))  # fmt: skip
            spec = specs.pop()
            decl = _declared(track, spec)
            judge_by = decl.threshold() if decl is not None else None  # as validate judges
            run_refs, data = [], []
            for rdir, meta, task in sorted(groups[tname], key=lambda g: (g[2].name, g[1]["seed"])):
                rel = f"runs/{tname}/{slug(task.name)}/seed-{meta['seed']}"
                dest = out / rel
                dest.mkdir(parents=True)
                for f in ("run.json", "metrics.jsonl"):
                    shutil.copyfile(rdir / f, dest / f)
                series = Series.from_records(read_records(dest / "metrics.jsonl"))
                run = Run.from_record(rel, meta, series)
                verdicts = evaluate(task, run, threshold=judge_by)
                atomic_write_json(dest / "claims.json", [v.to_dict() for v in verdicts])
                files = {f: hashlib.sha256((dest / f).read_bytes()).hexdigest() for f in RUN_FILES}
                run_refs.append(
                    {"task": task.name, "seed": meta["seed"], "path": rel, "files": files}
                )
                data.append(replace(run, verdicts=tuple(verdicts)))
            tracks[tname] = {
                "hyperparameters": hyperparameters_of(spec, track),
                "runs": run_refs,
                "scores": track.score(data, judge_by)["scores"],
                **({"threshold": asdict(decl)} if decl is not None else {}),
            }
        manifest = {
            "schema": SUBMISSION_SCHEMA,
            "id": entry_id,
            "method": method,
            "authors": authors,
            "paper": paper,
            "code": {"package": package, "version": version, "optimizer": optimizer},
            "tracks": tracks,
        }
        try:  # the manifest's own checks, before it is written
            manifest = manifest_to_dict(parse_manifest(manifest))
        except SubmissionError as e:
            raise UserError("the manifest would be invalid:\n" + str(e)) from None
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (out / README).write_text(_readme(manifest))

    try:
        build()
    except BaseException:  # leave no half-built submission behind
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise
    return out


def _readme(m: dict[str, Any]) -> str:
    lines = [
        f"# {m['method']}: an eosbench leaderboard submission",
        "",
        f"Authors: {', '.join(m['authors'])}. Paper: <{m['paper']}>.",
        f"Code: `pip install {m['code']['package']}=={m['code']['version']}`, optimizer "
        f"`{m['code']['optimizer']}` (entry point group `eosbench.optimizers`).",
        "",
        "Built by `eosbench submit template` from runs of `eosbench run`; check it with",
        "`eosbench submit validate .` and `eosbench submit verify . --sample 2`.",
        "",
    ]
    for name, t in sorted(m["tracks"].items()):
        hp = ", ".join(f"{k}={v}" for k, v in sorted(t["hyperparameters"].items())) or "defaults"
        lines.append(f"- **{name}**: {len(t['runs'])} runs; hyperparameters: {hp}")
        if "threshold" in t:
            th = t["threshold"]
            lines.append(f"  threshold: {th['quantity']} <= {th['value']:.6g} ({th['formula']})")
    return "\n".join(lines) + "\n"


def plan(
    optimizer: str,
    hyperparameters: dict[str, dict[str, Any]],
    out: Path,
    device: str | None = None,
) -> list[list[str]]:
    """The ``eosbench run`` command lines of a complete entry: for each track in
    ``hyperparameters`` (track -> fields), each task that applies, each registered seed."""
    from ..suites import TASKS
    from .tracks import spec_overrides

    cmds = []
    for tname, hp in hyperparameters.items():
        track = TRACKS.get(tname)
        bad = [k for k in hp if k in track.fixed or k == "name"]
        if bad:
            raise UserError(f"the {tname} track fixes {', '.join(bad)}")
        try:
            spec = optimizer_spec(track, optimizer, hp)
        except TypeError as e:
            raise UserError(f"hyperparameters of the {tname} track: {e}") from None
        decl = _declared(track, spec)
        for tn in track.tasks_for(decl.quantity if decl is not None else None):
            task = TASKS.get(tn)
            sets = [x for o in spec_overrides(task, spec) for x in ("--set", o)]
            for seed in task.seeds:
                cmd = ["eosbench", "run", tn, "--seed", str(seed), *sets]
                cmd += ["--out", str(Path(out) / tname), "--no-progress"]
                cmds.append(cmd + (["--device", device] if device else []))
    return cmds

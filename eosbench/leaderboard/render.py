"""``eosbench leaderboard``: the accepted entries as Markdown, LaTeX and a static HTML page.

Input: ``<entries>/*.json``, one per accepted entry (written by ``eosbench submit validate
DIR --accept LEADERBOARD``).  Output, from the Jinja templates in ``templates/``:
``README.md``, ``leaderboard.tex`` (booktabs tables to ``\\input``) and ``index.html`` (one
self-contained page: inline CSS and JavaScript, tables sortable by a click on a header,
per-entry plots of sharpness / threshold as inline SVG; nothing is fetched from the
network).  The same entries give byte-identical files: no dates, entries ordered by their
rank and id, numbers formatted at fixed precision.

The page's script also reads ``?click=<track>:<column>`` (repeatable) and clicks those
headers on load, and writes any script error into ``#page-errors``, so a headless browser
can check the sorting from the command line (``tests/test_leaderboard.py``).
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..latex import tex_escape
from . import ENTRY_SCHEMA
from .manifest import loads_strict
from .tracks import TRACKS, option_text

COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
ENTRY_LIMIT = 16 * 2**20


def load_entries(directory: Path) -> list[dict[str, Any]]:
    """The entries ``directory/*.json``, sorted by id; :class:`UserError` naming a bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory of leaderboard entries")
    entries = []
    for path in sorted(directory.glob("*.json")):
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}: not a regular file")
        if path.stat().st_size > ENTRY_LIMIT:
            raise UserError(f"{path}: larger than {ENTRY_LIMIT} bytes")
        try:
            e = loads_strict(path.read_bytes())
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        if not isinstance(e, dict) or e.get("schema") != ENTRY_SCHEMA:
            raise UserError(f"{path}: not a leaderboard entry (schema {ENTRY_SCHEMA!r})")
        if e.get("id") != path.stem:
            raise UserError(f"{path}: its id {e.get('id')!r} is not its file name")
        if missing := [k for k in ("method", "authors", "paper", "code", "tracks") if k not in e]:
            raise UserError(f"{path}: {missing[0]}: missing")
        entries.append(e)
    return entries


# --- formatting ---------------------------------------------------------------------------------


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; '-' for none."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return f"{x:.{digits}g}"


def _hyper(track: dict[str, Any]) -> str:
    hp = track.get("hyperparameters") or {}
    pairs = sorted(hp.items())
    return ", ".join(f"{k}={option_text(v, '{:g}'.format)}" for k, v in pairs) or "defaults"


def md_escape(s: str) -> str:
    s = html.escape(str(s), quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", s)


# --- rows ---------------------------------------------------------------------------------------


def _cost_cells(t: dict[str, Any]) -> dict[str, Any]:
    c = t.get("cost", {})
    return {
        "hvps": c.get("hvps"),
        "gradients": c.get("gradient_evaluations"),
        "examples": c.get("gradient_examples"),
        "wall": c.get("wall_seconds"),
        "device": "; ".join(c.get("devices", [])),
    }


def _row(track, entry: dict[str, Any], rank: int) -> dict[str, Any]:
    t = entry["tracks"][track.name]
    return {
        "rank": rank,
        "id": entry["id"],
        "method": entry["method"],
        "paper": entry["paper"],
        "optimizer": entry["code"]["optimizer"],
        "hyperparameters": _hyper(t),
        **_cost_cells(t),
        **track.cells(t),  # the track's scores
    }


LATEX_SKIPS = ("hyperparameters", "examples", "device")  # too wide for a page: in the caption


def _columns(track) -> list[tuple[str, str, str]]:
    """(key, header, kind) of the table of ``track``; kind: num | text."""
    common_end = [
        ("hvps", "HVPs", "num"),
        ("gradients", "Gradients", "num"),
        ("examples", "Grad. examples", "num"),
        ("wall", "Wall (s)", "num"),
        ("device", "Device", "text"),
    ]
    head = [
        ("rank", "#", "num"),
        ("method", "Method", "text"),
        ("hyperparameters", "Hyperparameters", "text"),
    ]
    return head + [c[:3] for c in track.columns] + common_end


def _cell_text(row: dict[str, Any], key: str) -> str:
    if key == "ratio":
        return (
            f"{fmt(row['ratio'], 4)} [{fmt(row['ratio_min'], 3)}, {fmt(row['ratio_max'], 3)}]"
            if row["ratio"] is not None
            else "-"
        )
    if key == "reached":
        return f"{fmt(row['reached'])}/{fmt(row['seeds'])}"
    if key == "claims":
        return f"{fmt(row['claims'])}/{fmt(row['claims_total'])}"
    if key == "threshold":
        return f"{row['quantity']} \u2264 {fmt(row['threshold'], 4)}"
    if key == "acc":
        return fmt(100 * row["acc"], 4) + "%" if row["acc"] is not None else "-"
    if key == "se":
        return fmt(100 * row["se"], 2) + "%" if row["se"] is not None else "-"
    if key == "wall":
        return fmt(row["wall"], 3)
    v = row[key]
    return fmt(v, 4) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


TEX_HEADERS = {"rank": "\\#", "ratio": "$q/T$ (median)", "t_star": "$t^*$ (median)"}


def _cell_tex(row: dict[str, Any], key: str) -> str:
    if key == "threshold":
        q = tex_escape(str(row["quantity"]).replace("_", " "))
        return f"{q} $\\le$ {fmt(row['threshold'], 4)}"
    return tex_escape(_cell_text(row, key))


def _sort_value(row: dict[str, Any], key: str) -> str:
    v = row["claims_fraction"] if key == "claims" else row.get(key)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int | float):
        return repr(float(v))
    return str(v)


def tables(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per track: its description, columns and ranked rows (cells as text and sort values)."""
    out = []
    for name in TRACKS.list():
        track = TRACKS.get(name)
        members = [e for e in entries if name in e.get("tracks", {})]
        members.sort(key=lambda e: track.rank_key(e["id"], e["tracks"][name]["scores"]))
        cols = _columns(track)
        rows = []
        for i, e in enumerate(members, 1):
            row = _row(track, e, i)
            row["cells"] = [
                {
                    "key": k,
                    "text": _cell_text(row, k),
                    "sort": _sort_value(row, k),
                    "kind": kind,
                    "tex": k not in LATEX_SKIPS,
                    "tex_text": _cell_tex(row, k),
                }
                for k, _, kind in cols
            ]
            rows.append(row)
        out.append(
            {
                "name": name,
                "title": track.title,
                "scoring": track.scoring,
                "description": track.description,
                "columns": [
                    {
                        "key": k,
                        "header": h,
                        "kind": kind,
                        "tex": k not in LATEX_SKIPS,
                        "tex_header": TEX_HEADERS.get(k, tex_escape(h)),
                    }
                    for k, h, kind in cols
                ],
                "devices": sorted({r["device"] for r in rows}),
                "rows": rows,
                "tasks": [t.task for t in track.tasks],
            }
        )
    # tracks with entries first, in registry order otherwise
    return sorted(out, key=lambda t: (not t["rows"], TRACKS.get(t["name"]).order, t["name"]))


# --- plots --------------------------------------------------------------------------------------


SVG_YMAX = 3.0  # q/T above this is drawn at the top edge (as figures.NORMALIZED_YMAX)


def sharpness_svg(entry: dict[str, Any], width: int = 420, height: int = 200) -> str | None:
    """Inline SVG of q/T against the step, one line per seed, the threshold dashed."""
    with_series = [t for _, t in sorted(entry.get("tracks", {}).items()) if t.get("series")]
    if not with_series:
        return None
    t = with_series[0]
    series = [s for s in t["series"] if s.get("points")]
    if not series:
        return None
    left, right, top, bottom = 52, 90, 12, 34
    pw, ph = width - left - right, height - top - bottom
    xmax = max(p[0] for s in series for p in s["points"]) or 1
    finite = [p[1] for s in series for p in s["points"] if math.isfinite(p[1])]
    # a diverging run's q/T is clipped at SVG_YMAX, so the axis (and its ticks) stay bounded
    ymax = min(SVG_YMAX, max([1.5, *finite]))
    ymax = math.ceil(ymax * 2) / 2

    def X(v: float) -> str:
        return f"{left + pw * v / xmax:.1f}"

    def Y(v: float) -> str:
        v = ymax if math.isnan(v) else v
        return f"{top + ph * (1 - min(max(v, 0.0), ymax) / ymax):.1f}"

    q = (t.get("threshold") or {}).get("quantity", "q").replace("_", " ")
    title = f"{entry['method']}: {q} / T over training"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    y = 0.0
    while y <= ymax + 1e-9:
        parts.append(_label(left - 6, f"{float(Y(y)) + 4:.1f}", f"{y:g}", "end"))
        y += 0.5
    parts += [_label(X(v), top + ph + 14, v, "middle") for v in (0, xmax // 2, xmax)]
    mid = f"{top + ph / 2:.1f}"
    parts.append(_label(f"{left + pw / 2:.1f}", height - 4, "step", "middle"))
    parts.append(_label(12, mid, "q / T", "middle", f' transform="rotate(-90 12 {mid})"'))
    parts.append(
        f'<line x1="{left}" y1="{Y(1)}" x2="{left + pw}" y2="{Y(1)}" stroke="#000" '
        f'stroke-dasharray="5,4"/>' + _label(left + pw + 4, f"{float(Y(1)) + 4:.1f}", "T")
    )
    for i, s in enumerate(sorted(series, key=lambda s: (s["task"], s["seed"]))):
        color, y = COLORS[i % len(COLORS)], top + 14 + 14 * i
        pts = " ".join(f"{X(p[0])},{Y(p[1])}" for p in s["points"])
        line = f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{pts}"/>'
        seed = f"seed {int(s['seed'])}"
        parts.append(line + _label(left + pw + 4, y, seed, more=f' fill="{color}"'))
    parts.append("</svg>")
    return "".join(parts)


def _label(x: Any, y: Any, text: Any, anchor: str | None = None, more: str = "") -> str:
    """An SVG ``<text>`` of font size 11 at ``(x, y)``; ``more``: attributes after the size."""
    a = f' text-anchor="{anchor}"' if anchor else ""
    return f'<text x="{x}" y="{y}"{a} font-size="11"{more}>{text}</text>'


# --- output -------------------------------------------------------------------------------------


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("eosbench.leaderboard", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tex"] = tex_escape
    env.filters["md"] = md_escape
    env.filters["fmt"] = fmt
    return env


def render(entries: list[dict[str, Any]]) -> dict[str, str]:
    """``{file name: text}`` of the three outputs for ``entries``."""
    from markupsafe import Markup

    env = _environment()
    data = {
        "tracks": tables(entries),
        "entries": [
            {
                **e,
                "svg": Markup(svg) if (svg := sharpness_svg(e)) is not None else None,
                "track_list": sorted(e.get("tracks", {})),
                "hyper": {k: _hyper(v) for k, v in sorted(e.get("tracks", {}).items())},
            }
            for e in sorted(entries, key=lambda e: e["id"])
        ],
    }
    return {
        "README.md": env.get_template("leaderboard.md.j2").render(**data),
        "leaderboard.tex": env.get_template("leaderboard.tex.j2").render(**data),
        "index.html": env.get_template("index.html.j2").render(**data),
    }


def write(entries_dir: Path, out: Path) -> list[Path]:
    """Render the entries of ``entries_dir`` into ``out``; the files written."""
    from ..store import atomic_write_text

    written = []
    for name, text in render(load_entries(entries_dir)).items():
        atomic_write_text(Path(out) / name, text)
        written.append(Path(out) / name)
    return written

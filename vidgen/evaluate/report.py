"""Evaluation reports: a JSON file with every number, an HTML page with GIFs, TensorBoard.

The report is generic: `write_report(out_dir, sections, clips)` where
- `sections` maps a section title to a table: a list of rows, each a dict column -> cell.
  The first column names the row. A cell is a number, a string, None, or an estimate with
  a confidence interval: a dict with "accuracy" (or "value"/"mean"), "ci_low", "ci_high"
  (and optionally "n"), shown as `0.91 [0.88, 0.94]`;
- `clips` is a list of (prompt, generated, real): uint8 videos [T, H, W, 3] (generated may be
  a list of videos, one per seed; real may be None).

`out_dir` becomes a self-contained folder: report.json, report.html and clips/*.gif.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

Table = list[dict[str, Any]]
Clip = tuple[str, Any, Any]
_ESTIMATE_KEYS = ("accuracy", "value", "mean")
_MIN_DISPLAY_PX = 128  # GIFs are shown at least this tall (nearest-neighbour upscaling in CSS).


# ------------------------------------------------------------------------------- cells
def estimate_value(cell: Any) -> float | None:
  """The point value of an estimate cell (a dict with accuracy/value/mean), else None."""
  if isinstance(cell, Mapping):
    for key in _ESTIMATE_KEYS:
      if key in cell:
        return cell[key]
  return None


def is_estimate(cell: Any) -> bool:
  return isinstance(cell, Mapping) and any(k in cell for k in _ESTIMATE_KEYS)


def _format_number(x: Any) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  if isinstance(x, (float, np.floating)):
    x = float(x)
    return f"{x:.3f}" if 0.01 <= abs(x) < 1 else f"{x:.4g}"
  return str(x)


def format_cell(cell: Any) -> str:
  """A table cell as text: numbers to 4 significant digits, estimates with their 95% CI."""
  if is_estimate(cell):
    values = [estimate_value(cell), cell.get("ci_low"), cell.get("ci_high")]
    # Accuracies (all in [0, 1]) keep three decimals so a column lines up.
    unit = all(_is_number(v) and 0 <= v <= 1 for v in values if v is not None)
    fmt = lambda v: f"{float(v):.3f}" if unit and _is_number(v) else _format_number(v)
    text = fmt(values[0])
    if values[0] is not None and values[1] is not None and values[2] is not None:
      text += f" [{fmt(values[1])}, {fmt(values[2])}]"
    return text
  return _format_number(cell)


def columns(table: Table) -> list[str]:
  """Every column of a table, in order of first appearance."""
  cols: list[str] = []
  for row in table:
    cols.extend(c for c in row if c not in cols)
  return cols


# ------------------------------------------------------------------------------- JSON
def to_jsonable(x: Any) -> Any:
  """numpy scalars/arrays to Python, non-finite floats to None (JSON has no NaN)."""
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return to_jsonable(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(float(x)) else None
  return x


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "_"


def flatten_scalars(sections: Mapping[str, Table]) -> dict[str, float]:
  """Every number as `section/row/column` (estimates add `.../ci_low` and `.../ci_high`)."""
  out: dict[str, float] = {}
  for title, table in sections.items():
    for i, row in enumerate(table):
      items = list(row.items())
      label = str(items[0][1]) if items and isinstance(items[0][1], str) else str(i)
      for col, cell in items:
        key = f"{_slug(title)}/{_slug(label)}/{_slug(col)}"
        if is_estimate(cell):
          for suffix, value in (("", estimate_value(cell)), ("/ci_low", cell.get("ci_low")),
                                ("/ci_high", cell.get("ci_high"))):
            if _is_number(value):
              out[key + suffix] = float(value)
        elif _is_number(cell):
          out[key] = float(cell)
  return out


def _is_number(x: Any) -> bool:
  return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
          and math.isfinite(float(x)))


# ------------------------------------------------------------------------------- GIFs
def write_gif(path: str, video: np.ndarray, fps: float = 8.0) -> str:
  """Writes a uint8 video [T, H, W, 3] (or one image [H, W, 3]) as a looping GIF."""
  video = np.asarray(video)
  if video.ndim == 3:
    video = video[None]
  if video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"expected a video [T, H, W, 3], got shape {video.shape}")
  if video.dtype != np.uint8:
    video = np.clip(np.round(video), 0, 255).astype(np.uint8)
  frames = [Image.fromarray(f) for f in video]
  frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                 duration=max(20, int(round(1000.0 / fps))), optimize=False)
  return path


def _videos(x: Any) -> list[np.ndarray]:
  if x is None:
    return []
  if isinstance(x, np.ndarray) and x.ndim in (3, 4):
    return [x]
  return [np.asarray(v) for v in x]


def write_clip_gifs(out_dir: str, clips: Sequence[Clip], fps: float = 8.0
                    ) -> list[dict[str, Any]]:
  """GIFs of every (prompt, generated, real) under out_dir/clips; paths relative to out_dir."""
  os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
  entries = []
  for i, (prompt, generated, real) in enumerate(clips):
    entry: dict[str, Any] = {"prompt": prompt, "generated": [], "real": None}
    for s, video in enumerate(_videos(generated)):
      rel = f"clips/{i:04d}_gen{s}.gif"
      write_gif(os.path.join(out_dir, rel), video, fps)
      entry["generated"].append(rel)
    reals = _videos(real)
    if reals:
      rel = f"clips/{i:04d}_real.gif"
      write_gif(os.path.join(out_dir, rel), reals[0], fps)
      entry["real"] = rel
    entry["height"] = int((_videos(generated) or reals or [np.zeros((1, 1, 1, 3))])[0].shape[-3])
    entries.append(entry)
  return entries


# ------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.note { color: #555; font-size: 13px; max-width: 60em; }
.grid td { text-align: center; vertical-align: top; }
.grid td.prompt { text-align: left; max-width: 24em; }
img.clip { image-rendering: pixelated; margin: 2px; }
"""


def _table_html(table: Table) -> str:
  if not table:
    return "<p class='note'>(empty)</p>"
  cols = columns(table)
  head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(format_cell(row.get(c)))}</td>" for c in cols)
      + "</tr>" for row in table)
  return f"<table><tr>{head}</tr>{body}</table>"


def _grid_html(entries: Sequence[Mapping[str, Any]]) -> str:
  if not entries:
    return ""
  rows = []
  for e in entries:
    scale = max(1, math.ceil(_MIN_DISPLAY_PX / max(1, e.get("height", _MIN_DISPLAY_PX))))
    h = e.get("height", _MIN_DISPLAY_PX) * scale
    img = lambda src: f"<img class='clip' src='{html.escape(src)}' height='{h}'>"
    gen = "".join(img(g) for g in e["generated"]) or "-"
    real = img(e["real"]) if e.get("real") else "-"
    rows.append(f"<tr><td class='prompt'>{html.escape(e['prompt'])}</td>"
                f"<td>{gen}</td><td>{real}</td></tr>")
  return ("<h2>Clips</h2><table class='grid'><tr><th>prompt</th><th>generated</th>"
          "<th>real</th></tr>" + "".join(rows) + "</table>")


def render_html(title: str, sections: Mapping[str, Table], entries: Sequence[Mapping[str, Any]],
                notes: Mapping[str, str] | None = None) -> str:
  """The report page: one table per section (with its note), then the clip grid."""
  notes = notes or {}
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
  if "" in notes:
    parts.append(f"<p class='note'>{html.escape(notes[''])}</p>")
  for name, table in sections.items():
    parts.append(f"<h2>{html.escape(name)}</h2>")
    if name in notes:
      parts.append(f"<p class='note'>{html.escape(notes[name])}</p>")
    parts.append(_table_html(table))
  parts.append(_grid_html(entries))
  parts.append("</body></html>")
  return "\n".join(parts)


def write_report(out_dir: str, sections: Mapping[str, Table], clips: Sequence[Clip] = (), *,
                 title: str = "vidgen evaluation", notes: Mapping[str, str] | None = None,
                 fps: float = 8.0, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes out_dir/report.json, out_dir/report.html and out_dir/clips/*.gif.

  notes: optional text per section title ("" for the page). extra: more JSON-only data.
  Returns the paths written.
  """
  os.makedirs(out_dir, exist_ok=True)
  entries = write_clip_gifs(out_dir, clips, fps)
  doc = {"title": title, "sections": to_jsonable(sections),
         "scalars": flatten_scalars(sections), "notes": dict(notes or {}),
         "clips": [{k: v for k, v in e.items() if k != "height"} for e in entries],
         **to_jsonable(dict(extra or {}))}
  json_path, html_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir,
                                                                            "report.html")
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=2, allow_nan=False)
  with open(html_path, "w", encoding="utf-8") as f:
    f.write(render_html(title, sections, entries, notes))
  return {"json": json_path, "html": html_path, "clips": os.path.join(out_dir, "clips")}


# ------------------------------------------------------------------------------- TensorBoard
def log_scalars(writer: Any, sections: Mapping[str, Table], step: int,
                prefix: str = "eval") -> dict[str, float]:
  """Logs every number of the report to TensorBoard as `prefix/section/row/column`.

  writer: a tensorboardX SummaryWriter (anything with add_scalar), or a log directory.
  """
  scalars = flatten_scalars(sections)
  own = isinstance(writer, (str, os.PathLike))
  if own:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    writer = SummaryWriter(os.fspath(writer))
  try:
    for key, value in scalars.items():
      writer.add_scalar(f"{prefix}/{key}" if prefix else key, value, step)
  finally:
    if own:
      writer.close()
  return scalars

"""Hard-edged rendering of a scene's metadata into uint8 frames (numpy only)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vidgen.world import palette as P


def shape_mask(shape: str, cx: float, cy: float, size: float, xs: np.ndarray,
               ys: np.ndarray) -> np.ndarray:
  """bool [len(ys), len(xs)]: pixel centers (xs, ys) inside the shape's region.

  `size` is the bounding-box edge in pixels and (cx, cy) the bounding-box center.
  """
  h = size / 2
  dx = np.abs(xs[None, :] - cx)
  dy = ys[:, None] - cy
  if shape == "circle":
    return dx * dx + dy * dy <= h * h
  if shape == "square":
    return (dx <= h) & (np.abs(dy) <= h)
  if shape == "triangle":  # apex at the top of the box, base along its bottom edge
    return (dy <= h) & (dx <= (dy + h) / 2)
  if shape == "cross":
    arm = h * P.CROSS_ARM
    ady = np.abs(dy)
    return ((dx <= h) & (ady <= arm)) | ((ady <= h) & (dx <= arm))
  raise ValueError(f"unknown shape {shape!r}")


def _window(lo: float, hi: float, n: int) -> slice:
  """Pixel indices whose centers may lie in [lo, hi], clipped to [0, n)."""
  return slice(max(int(np.floor(lo)), 0), min(int(np.ceil(hi)) + 1, n))


def paint_shape(labels: np.ndarray, value: int, shape: str, cx: float, cy: float,
                size: float) -> None:
  """Set labels[y, x] = value inside the shape, touching only its bounding window."""
  h = size / 2
  rows = _window(cy - h, cy + h, labels.shape[0])
  cols = _window(cx - h, cx + h, labels.shape[1])
  xs = np.arange(cols.start, cols.stop, dtype=np.float64)
  ys = np.arange(rows.start, rows.stop, dtype=np.float64)
  if xs.size and ys.size:
    labels[rows, cols][shape_mask(shape, cx, cy, size, xs, ys)] = value


def paint_segment(mask: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
  """Set mask True within width / 2 of the segment a-b (round caps)."""
  r = width / 2
  rows = _window(min(a[1], b[1]) - r, max(a[1], b[1]) + r, mask.shape[0])
  cols = _window(min(a[0], b[0]) - r, max(a[0], b[0]) + r, mask.shape[1])
  xs = np.arange(cols.start, cols.stop, dtype=np.float64)[None, :]
  ys = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None]
  d = b - a
  dd = float(d @ d)
  if dd > 0:
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / dd, 0.0, 1.0)
  else:
    t = np.zeros((1, 1))
  px, py = xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1])
  mask[rows, cols] |= px * px + py * py <= r * r


def render_labels(meta: dict[str, Any]) -> np.ndarray:
  """Palette indices int8 [T, H, W] for a scene's metadata (draw order: background,
  trails, objects, pillar)."""
  height, width, frames, fps = meta["height"], meta["width"], meta["frames"], meta["fps"]
  s = min(height, width)
  centers = np.asarray(meta["centers"], dtype=np.float64).reshape(frames, -1, 2)
  objects = meta["objects"]
  colors = [P.PALETTE_INDEX[o["color"]] for o in objects]
  sizes = [P.SIZES[o["size"]] * s for o in objects]
  trails = [np.zeros((height, width), bool) if o.get("trail") else None for o in objects]
  pillar_cols = None
  if meta.get("pillar"):
    pillar = meta["pillar"]
    pillar_cols = _window(pillar["x"] - pillar["width"] / 2, pillar["x"] + pillar["width"] / 2,
                          width)
    xs = np.arange(pillar_cols.start, pillar_cols.stop)
    keep = np.abs(xs - pillar["x"]) <= pillar["width"] / 2
    pillar_cols = xs[keep]

  labels = np.empty((frames, height, width), np.int8)
  background = P.PALETTE_INDEX[meta["background"]]
  for k in range(frames):
    frame = labels[k]
    frame.fill(background)
    for i, obj in enumerate(objects):
      if trails[i] is None:
        continue
      # The trail follows the exact path, through any bounce points since the last frame.
      t_prev, t_now = (k - 1) / fps, k / fps
      points = [centers[max(k - 1, 0), i]]
      points += [np.asarray(b["position"]) for b in obj["bounces"]
                 if k > 0 and t_prev < b["time"] <= t_now]
      points.append(centers[k, i])
      for a, b in zip(points[:-1], points[1:]):
        paint_segment(trails[i], a, b, P.TRAIL_WIDTH * s)
      frame[trails[i]] = colors[i]
    for i, obj in enumerate(objects):
      paint_shape(frame, colors[i], obj["shape"], centers[k, i, 0], centers[k, i, 1], sizes[i])
    if pillar_cols is not None:
      frame[:, pillar_cols] = P.PALETTE_INDEX["brown"]
  return labels


# Palette colors packed as little-endian RGBA words: one 4-byte gather per pixel is several
# times faster than fancy-indexing a [12, 3] table.
_PACKED = np.zeros((len(P.PALETTE_RGB), 4), np.uint8)
_PACKED[:, :3] = P.PALETTE_RGB
_PACKED = _PACKED.view(np.uint32)[:, 0]


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] palette colors of palette indices."""
  words = _PACKED[labels.astype(np.intp)]
  return np.ascontiguousarray(words.view(np.uint8).reshape(labels.shape + (4,))[..., :3])


def render(meta: dict[str, Any]) -> np.ndarray:
  """uint8 [T, H, W, 3] frames of a scene's metadata; every pixel a palette color."""
  return labels_to_rgb(render_labels(meta))

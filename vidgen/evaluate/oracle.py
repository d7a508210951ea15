"""The Shapes World oracle (WORLD.md): score a clip's pixels against a prompt's metadata.

Every pixel is snapped to the nearest palette color; each expected object is found by its
color and measured per frame:
- shape and size: IoU with templates drawn by the world's rasteriser over a grid of sub-pixel
  placements (this measures fill ratio and moments at once, and is exact on real clips), on
  the cleanest early frames (frame 0 never shows a trail: the trail starts under the object);
- trajectory: a template of the measured shape is matched per frame against the color map
  (+1 own color, -1 background, 0 pillar and other objects, so occlusion is not penalised),
  then refined to sub-pixel by the placement agreeing with most unoccluded pixels; trail
  pixels do not drag it back as they would a centroid;
- direction from the first 0.15 S of travel (the world never bounces sooner), speed from the
  median frame-to-frame step;
- persistence: the object is found in every frame, behind the pillar included;
- trail: paint outside the object's footprint grows as expected and stays;
- background: the dominant background color, and its stability across frames (flicker).

`score_clip(video, metadata)` gives one bool (or None where not applicable) per attribute plus
`all_correct`; `summarize` gives per-attribute accuracy with bootstrap 95% intervals; the
reference rows (real clips = ceiling, shuffled metadata = chance, a static first frame = no
motion) come from `reference_rows`.

  .venv/bin/python -m vidgen.evaluate.oracle --split heldout --clips 200 --height 32
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage, signal

from vidgen import world
from vidgen.world import palette as P

ATTRIBUTES: tuple[str, ...] = ("background", "flicker", "count", "color", "shape", "size",
                               "moves", "direction", "speed", "persistence", "trail")
_BG = np.array([P.PALETTE_INDEX[n] for n in P.BACKGROUNDS])
_OBJ = np.array([P.PALETTE_INDEX[n] for n in P.OBJECT_COLORS])
_BROWN = P.PALETTE_INDEX["brown"]
_FRAME_ONLY = np.zeros((3, 3, 3), bool)
_FRAME_ONLY[1] = True  # 8-connected within a frame, never across time

# Decision thresholds, in S and S/s (midpoints between the contract's values).
MIN_AREA = 0.3 * P.SIZES["small"] ** 2  # of S^2: smaller regions are noise
SIZE_SPLIT = 0.25                       # between small 0.18 and large 0.32
STILL_SPEED = 0.1                       # below: not moving (slow is 0.25)
SPEED_SPLIT = float(np.sqrt(P.SPEEDS["slow"] * P.SPEEDS["fast"]))  # ~0.39
DETECT = 0.5            # normalised template score for "the object is here"
MIN_VISIBLE = 0.2       # share of the template that must be unoccluded to judge a position
INITIAL_TRAVEL = 0.15    # S: real clips never bounce this early (scene.MIN_TRAVEL_TO_BOUNCE)
FLICKER_LEVELS = 6.0    # max change of the mean background color between frames (0..255)
FLICKER_SHARE = 0.03    # max share of pixels in a second background color


def snap(video: np.ndarray) -> np.ndarray:
  """int8 [T, H, W] index of the nearest palette color of every pixel."""
  pal = P.PALETTE_RGB.astype(np.int32)
  out = np.empty(np.shape(video)[:-1], np.int8)
  for k, frame in enumerate(np.asarray(video)):  # per frame: distances are [H, W, 12]
    d = ((frame.astype(np.int32)[..., None, :] - pal) ** 2).sum(-1)
    out[k] = d.argmin(-1)
  return out


# ---------------------------------------------------------------------------- shapes
_STEPS = np.linspace(-0.5, 0.5, 5)
_SIZE_STEPS = np.linspace(-1.0, 1.0, 9)


def shape_fits(mask: np.ndarray) -> dict[str, tuple[float, float, int]]:
  """Per shape, (best IoU, its size in px, how many placements reach it) of templates fitted
  to one region (bool [H, W]).

  Templates are drawn with the world's own rasteriser around the region's bounding box, over
  a grid of sub-pixel centers and sizes: sampling can drop an apex row or a circle's extreme
  pixels, so the box alone does not fix them.
  """
  ys, xs = np.nonzero(mask)
  x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
  ext = ((x1 - x0 + 1) + (y1 - y0 + 1)) / 2
  gx = np.arange(x0 - 2, x1 + 3, dtype=np.float64)
  gy = np.arange(y0 - 2, y1 + 3, dtype=np.float64)
  crop = np.zeros((gy.size, gx.size), bool)
  crop[ys - y0 + 2, xs - x0 + 2] = True
  size, dx, dy = (a.ravel()[:, None, None] for a in np.meshgrid(
    ext + _SIZE_STEPS, _STEPS, _STEPS, indexing="ij"))
  cx, cy = (x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy
  n = crop.sum()
  out = {}
  for shape in P.SHAPES:
    m = world.shape_mask(shape, cx, cy, size, gx, gy)  # [N, h, w]
    inter = np.count_nonzero(m & crop, axis=(1, 2))
    iou = inter / (np.count_nonzero(m, axis=(1, 2)) + n - inter)
    # Among equal fits the size nearest the box extent (sizes are ordered around it).
    best = np.flatnonzero(iou >= iou.max() - 1e-9)
    pick = best[np.argmin(np.abs(size.ravel()[best] - ext))]
    out[shape] = (float(iou.max()), float(size.ravel()[pick]), int(best.size))
  return out


def classify_shape(mask: np.ndarray) -> tuple[str, float, float]:
  """(shape, size in px, IoU) of the template that best fits one region (bool [H, W])."""
  fits = shape_fits(mask)
  shape = max(P.SHAPES, key=lambda k: fits[k][0])
  return shape, fits[shape][1], fits[shape][0]


def _templates(shape: str, size: float) -> tuple[np.ndarray, np.ndarray]:
  """(core, hull): pixels inside the shape for every / for some sub-pixel placement of its
  center within the middle pixel, as bool [2R+1, 2R+1] masks.

  Matching the core makes detection indifferent to where in a pixel the center falls, which
  matters for small crosses whose arms are under two pixels wide.
  """
  r = int(np.ceil(size / 2)) + 2
  g = np.arange(-r, r + 1, dtype=np.float64)
  offsets = np.linspace(-0.5, 0.5, 5)
  masks = [world.shape_mask(shape, dx, dy, size, g, g) for dx in offsets for dy in offsets]
  core, hull = np.logical_and.reduce(masks), np.logical_or.reduce(masks)
  if not core.any():  # a shape too small to have a sure pixel: match its centered raster
    core = world.shape_mask(shape, 0.0, 0.0, size, g, g)
  return core, hull


# ---------------------------------------------------------------------------- per object
def _largest_components(mask: np.ndarray) -> list[np.ndarray | None]:
  """Per frame, the largest 8-connected region of a bool [T, H, W] mask (or None)."""
  comp, n = ndimage.label(mask, structure=_FRAME_ONLY)
  out: list[np.ndarray | None] = []
  if n == 0:
    return [None] * mask.shape[0]
  sizes = np.bincount(comp.ravel(), minlength=n + 1)
  sizes[0] = 0
  for k in range(mask.shape[0]):
    ids = np.unique(comp[k])
    ids = ids[ids > 0]
    out.append(comp[k] == ids[np.argmax(sizes[ids])] if ids.size else None)
  return out


def _measure_shape(labels: np.ndarray, color: int, s: int) -> dict[str, Any]:
  """Shape and size of one color's region from its cleanest frames."""
  own = labels == color
  occluder = ~np.isin(labels, _BG) & ~own  # pillar and other objects
  comps = _largest_components(own)
  clean, fallback = [], []
  for k, comp in enumerate(comps):
    if comp is None or comp.sum() < MIN_AREA * s * s:
      continue
    fallback.append(k)
    ys, xs = np.nonzero(comp)
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    touches = (ndimage.binary_dilation(comp, np.ones((3, 3), bool)) & occluder[k]).any()
    if abs(int(w) - int(h)) <= max(1, 0.15 * max(w, h)) and not touches:
      clean.append(k)
  frames = (clean or fallback)[:4]
  if not frames:
    return {"shape": None, "size_px": None, "iou": 0.0}
  fits = [shape_fits(comps[k]) for k in frames]
  top = max(max(f[0] for f in fit.values()) for fit in fits)
  votes = dict.fromkeys(P.SHAPES, 0.0)
  sizes: dict[str, list[float]] = {k: [] for k in P.SHAPES}
  for fit in fits:
    best = max(f[0] for f in fit.values())
    if best < top - 0.1:  # frames polluted by a trail fit every template badly: skip them
      continue
    tied = {k: f[2] for k, f in fit.items() if f[0] >= best - 1e-9}
    for shape, n_placements in tied.items():
      # A tie (a 5x5 block is a small square, or a small circle centered just so) is split
      # by how many placements give that picture: how likely each shape is to draw it.
      votes[shape] += n_placements / sum(tied.values())
      sizes[shape].append(fit[shape][1])
  shape = max(P.SHAPES, key=lambda k: votes[k])
  return {"shape": shape, "size_px": float(np.median(sizes[shape])), "iou": top}


def _track(labels: np.ndarray, color: int, shape: str, size_px: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray | None]]:
  """Per frame: center (x, y) [T, 2], found [T], occluded [T], footprint mask (or None)."""
  frames, height, width = labels.shape
  core, hull = _templates(shape, size_px)
  kernel, kernel_hull = core.astype(np.float64), hull.astype(np.float64)
  area = kernel.sum()
  r = kernel.shape[0] // 2
  halo = ndimage.binary_dilation(hull, np.ones((3, 3), bool))
  centers = np.full((frames, 2), np.nan)
  found = np.zeros(frames, bool)
  occluded = np.zeros(frames, bool)
  footprints: list[np.ndarray | None] = []
  own_all = labels == color
  unknown_all = ~own_all & ~np.isin(labels, _BG)  # pillar, other objects: could hide it
  weight = own_all.astype(np.float64) - (~own_all & ~unknown_all)
  seen = (~unknown_all).astype(np.float64)

  # Off the canvas counts as background: hiding a template there must not pay.
  pad = ((0, 0), (r, r), (r, r))
  weight = np.pad(weight, pad, constant_values=-1.0)
  seen = np.pad(seen, pad, constant_values=1.0)

  def fit(kern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and position: mean agreement of the template's visible pixels, and their
    count (FFT correlation over all frames at once, rounded to drop its float noise)."""
    flipped = kern[None, ::-1, ::-1]
    score = np.round(signal.fftconvolve(weight, flipped, mode="valid", axes=(1, 2)), 6)
    visible = np.round(signal.fftconvolve(seen, flipped, mode="valid", axes=(1, 2)), 6)
    return score / np.maximum(visible, 1e-9), visible

  norm_all, visible_all = fit(kernel)
  # The hull's score is not normalised: sliding under an occluder must not look better.
  norm_hull_all, visible_hull = fit(kernel_hull)
  norm_hull_all = norm_hull_all * visible_hull / kernel_hull.sum()
  for k in range(frames):
    own, unknown = own_all[k], unknown_all[k]
    visible, norm_hull = visible_all[k], norm_hull_all[k]
    norm = np.where(visible >= MIN_VISIBLE * area, norm_all[k], -np.inf)
    # The core says whether the object is here, discounted when mostly hidden (a sliver of
    # template beside the pillar fits anything); the whole shape then breaks ties (a small
    # core also fits inside a trail), then visibility.
    share = visible / area
    key = norm_all[k] * np.minimum(1.0, share / 0.5) + 0.1 * norm_hull + 1e-4 * share
    key = np.where(np.isfinite(norm), key, -np.inf)
    y, x = np.unravel_index(np.argmax(key), norm.shape)
    if not norm[y, x] >= DETECT:
      footprints.append(None)
      continue
    found[k] = True
    foot = np.zeros((height, width), bool)
    # Paste the dilated template at (x, y), clipped to the canvas.
    y0, x0 = y - r, x - r
    hy0, hx0 = max(0, -y0), max(0, -x0)
    fy0, fx0 = max(0, y0), max(0, x0)
    hy1 = min(halo.shape[0], height - y0)
    hx1 = min(halo.shape[1], width - x0)
    foot[fy0:fy0 + hy1 - hy0, fx0:fx0 + hx1 - hx0] = halo[hy0:hy1, hx0:hx1]
    footprints.append(foot)
    occluded[k] = bool((foot & unknown).any())
    centers[k] = _refine(own, ~unknown, shape, size_px, float(x), float(y))
  return centers, found, occluded, footprints


_OFFSETS = np.arange(-2.0, 2.0 + 1e-9, 0.2)


def _refine(own: np.ndarray, seen: np.ndarray, shape: str, size: float, x: float, y: float
            ) -> np.ndarray:
  """Sub-pixel box center near (x, y): the placements of the shape that agree with the most
  unoccluded pixels, averaged. Hidden pixels do not vote, so the pillar biases nothing."""
  r = int(np.ceil(size / 2)) + 4
  rows = slice(max(int(y) - r, 0), min(int(y) + r + 1, own.shape[0]))
  cols = slice(max(int(x) - r, 0), min(int(x) + r + 1, own.shape[1]))
  gx = np.arange(cols.start, cols.stop, dtype=np.float64)
  gy = np.arange(rows.start, rows.stop, dtype=np.float64)
  dx, dy = (a.ravel()[:, None, None] for a in np.meshgrid(_OFFSETS, _OFFSETS, indexing="ij"))
  masks = world.shape_mask(shape, x + dx, y + dy, size, gx, gy)  # [N, h, w]
  agree = ((masks == own[rows, cols]) & seen[rows, cols]).sum(axis=(1, 2))
  best = agree >= agree.max()
  return np.array([x + dx.ravel()[best].mean(), y + dy.ravel()[best].mean()])


def _direction_name(vec: np.ndarray) -> str:
  """The nearest of the 8 directions to a displacement (image coordinates)."""
  names = list(P.DIRECTIONS)
  units = np.array([P.DIRECTIONS[n] for n in names])
  return names[int(np.argmax(units @ (vec / (np.linalg.norm(vec) + 1e-12))))]


def _motion(centers: np.ndarray, found: np.ndarray, occluded: np.ndarray, fps: float,
            s: int) -> dict[str, Any]:
  """Speed (S/s): the median frame-to-frame step, over unoccluded frames where there are
  enough; direction: the displacement over the first INITIAL_TRAVEL of motion."""
  idx = np.nonzero(found)[0]
  if idx.size < 2:
    return {"speed": None, "direction": None}
  pairs = [(k, k + 1) for k in idx[:-1] if found[k + 1]]
  clean = [(a, b) for a, b in pairs if not occluded[a] and not occluded[b]]
  use = clean if len(clean) >= 2 else pairs or list(zip(idx[:-1], idx[1:]))
  steps = np.array([(centers[b] - centers[a]) / (b - a) for a, b in use]) * fps / s
  speed = float(np.median(np.linalg.norm(steps, axis=1)))
  # Initial direction: over the first INITIAL_TRAVEL of motion, before which real clips never
  # bounce (positions of occluded frames are fine: hidden pixels do not vote in _refine).
  window = max(INITIAL_TRAVEL / max(speed, 1e-9) * fps, 1.0)  # frames
  first = idx[0]
  ends = idx[(idx > first) & (idx - first <= window + 1e-9)]
  last = ends[-1] if ends.size else idx[1]
  initial = (centers[last] - centers[first]) * fps / ((last - first) * s)
  direction = _direction_name(initial) if speed >= STILL_SPEED else P.STILL
  return {"speed": speed, "direction": direction, "initial": initial.tolist()}


def _persists(labels: np.ndarray, color: int, found: np.ndarray,
              footprints: list[np.ndarray | None], speed: float | None, size_px: float,
              fps: float, s: int) -> bool:
  """Every run of frames without the object is a pass behind the pillar: it starts and ends
  beside the pillar, and one at the clip's end is no longer than crossing the pillar takes."""
  pillar = labels == _BROWN
  if not pillar.any():
    return bool(found.all())
  # What can hide an object: the pillar, or another object (drawn over it).
  cover = ~np.isin(labels, _BG) & (labels != color)
  near = [f is not None and bool((ndimage.binary_dilation(f) & cover[k]).any())
          for k, f in enumerate(footprints)]
  pillar_w = pillar.any(axis=(0, 1)).sum()
  step = max((speed or 0.0) * s / fps, 0.5)  # pixels per frame
  max_hidden = int(np.ceil((pillar_w + size_px) / step)) + 1
  frames = len(found)
  k = 0
  while k < frames:
    if found[k]:
      k += 1
      continue
    end = k
    while end < frames and not found[end]:
      end += 1
    before_ok = k > 0 and near[k - 1]
    after_ok = end < frames and near[end]
    if k == 0 and not after_ok:
      return False
    if end == frames and not (before_ok and end - k <= max_hidden):
      return False
    if 0 < k and end < frames and not (before_ok and after_ok):
      return False
    k = end
  return True


def _expected_trail_px(meta: dict[str, Any], j: int) -> int:
  """Pixels of object j's trail (had it one) visible in the real last frame, more than two
  pixels away from the object: what the pillar, later trails and objects leave uncovered."""
  obj = meta["objects"][j]
  color = P.PALETTE_INDEX[obj["color"]]
  objects = [dict(o, trail=o["trail"] or i == j) for i, o in enumerate(meta["objects"])]
  last = world.render_labels({**meta, "objects": objects})[-1] == color
  solo = {**meta, "frames": 1, "pillar": None, "objects": [{**obj, "trail": False}],
          "centers": [[np.asarray(meta["centers"])[-1, j].tolist()]]}
  body = world.render_labels(solo)[0] == color
  return int((last & ~ndimage.binary_dilation(body, iterations=2)).sum())


def _crosses_pillar(meta: dict[str, Any], j: int) -> bool:
  """Whether the object's true path takes it (partly) behind the pillar."""
  pillar = meta.get("pillar")
  if not pillar:
    return False
  half = P.SIZES[meta["objects"][j]["size"]] * min(meta["height"], meta["width"]) / 2
  xs = np.asarray(meta["centers"])[:, j, 0]
  return bool(np.any(np.abs(xs - pillar["x"]) < half + pillar["width"] / 2))


def _score_trail(labels: np.ndarray, color: int, footprints: list[np.ndarray | None],
                 size_px: float, expected_px: int, has_trail: bool) -> bool:
  """With a trail: paint outside the object appears and stays; without: no such paint."""
  own = labels == color
  cover = ~np.isin(labels, _BG) & ~own
  reach = int(np.ceil(size_px))
  outside = []
  for k in range(len(own)):
    if footprints[k] is not None:
      outside.append(own[k] & ~ndimage.binary_dilation(footprints[k]))
    else:  # hidden: a sliver of it beside what hides it would pass for paint
      near = ndimage.binary_dilation(cover[k], iterations=reach) if cover[k].any() else cover[k]
      outside.append(own[k] & ~near)
  # Judge at the last frame, or at the last one showing the object (a hidden object's
  # paint may be under what hides it): whichever favours the prompt; both must be wrong for
  # the clip to fail, so a hidden object is not penalised and a wrong trail still shows.
  seen = [k for k, f in enumerate(footprints) if f is not None]
  candidates = {len(own) - 1, seen[-1] if seen else len(own) - 1}
  pick = max if has_trail else min
  last = pick(candidates, key=lambda k: int(outside[k].sum()))
  final = outside[last].sum()
  if not has_trail:
    return bool(final <= 0.25 * expected_px)
  if final < 0.3 * expected_px:
    return False
  # Paint once laid stays to the end (unless something is drawn over it there).
  covered = own[last] | ~np.isin(labels[last], _BG)
  laid = sum(int(o.sum()) for o in outside[:last])
  kept = sum(int((o & covered).sum()) for o in outside[:last])
  return bool(laid == 0 or kept >= 0.8 * laid)


def _background(labels: np.ndarray, video: np.ndarray, expected: str
                ) -> tuple[bool, bool | None]:
  """(right background color, stable background) from the background-colored pixels."""
  is_bg = np.isin(labels, _BG)
  counts = np.array([(labels == b).sum(axis=(1, 2)) for b in _BG])  # [3, T]
  dominant = _BG[counts.sum(1).argmax()]
  right = P.PALETTE_NAMES[dominant] == expected
  if labels.shape[0] < 2:
    return right, None
  per_frame = _BG[counts.argmax(0)]
  second = (is_bg.sum(axis=(1, 2)) - counts.max(0)) / labels[0].size
  means = np.array([video[k][labels[k] == per_frame[k]].mean(0) if (labels[k] == per_frame[k]
                    ).any() else np.zeros(3) for k in range(labels.shape[0])])
  jump = np.abs(np.diff(means, axis=0)).max() if len(means) > 1 else 0.0
  stable = bool(np.all(per_frame == per_frame[0]) and np.all(second <= FLICKER_SHARE)
                and jump <= FLICKER_LEVELS)
  return right, stable


def _present_colors(labels: np.ndarray, s: int) -> dict[int, int]:
  """Object colors seen as a region of at least MIN_AREA in a quarter of the frames (another
  object may cover one for a while): color -> largest area."""
  frames = labels.shape[0]
  out = {}
  for c in _OBJ:
    comps = _largest_components(labels == c)
    areas = np.array([0 if m is None else int(m.sum()) for m in comps])
    if (areas >= MIN_AREA * s * s).sum() >= max(1, frames / 4):
      out[int(c)] = int(areas.max())
  return out


def _all(values: Iterable[bool | None]) -> bool | None:
  vals = [v for v in values if v is not None]
  return None if not vals else bool(all(vals))


def score_clip(video: np.ndarray, meta: dict[str, Any], *, details: bool = False
               ) -> dict[str, Any]:
  """One bool per attribute (None where not applicable) and `all_correct`.

  With details=True the measurements are added under "details".
  """
  video = np.asarray(video)
  labels = snap(video)
  frames = labels.shape[0]
  s = min(labels.shape[1], labels.shape[2])
  fps = float(meta["fps"])
  expected = meta["objects"]
  present = _present_colors(labels, s)

  # Match expected objects to colors: same color first, then the largest unclaimed ones.
  match: dict[int, int | None] = {}
  free = dict(present)
  for j, obj in enumerate(expected):
    c = P.PALETTE_INDEX[obj["color"]]
    if c in free:
      match[j] = c
      free.pop(c)
  for j in range(len(expected)):
    if j not in match:
      match[j] = max(free, key=free.get) if free else None
      if match[j] is not None:
        free.pop(match[j])

  per_object = []
  for j, obj in enumerate(expected):
    c = match[j]
    moving = obj["direction"] != P.STILL
    res: dict[str, Any] = {"color": c == P.PALETTE_INDEX[obj["color"]]}
    has_motion = frames >= 2
    crosses = _crosses_pillar(meta, j) and moving and has_motion
    trail_px = _expected_trail_px(meta, j) if moving and has_motion else 0
    trail_applies = trail_px >= max(4, 0.01 * s * s)
    if c is None:  # nothing to measure: every applicable attribute fails
      res.update(shape=False, size=False, moves=False if has_motion else None,
                 direction=(False if moving else None) if has_motion else None,
                 speed=(False if moving else None) if has_motion else None,
                 persistence=False if crosses else None,
                 trail=False if trail_applies else None)
      per_object.append(res)
      continue
    measured = _measure_shape(labels, c, s)
    shape, size_px = measured["shape"], measured["size_px"]
    res["shape"] = shape == obj["shape"]
    res["size"] = (size_px is not None
                   and (size_px / s < SIZE_SPLIT) == (obj["size"] == "small"))
    if shape is None:
      shape, size_px = obj["shape"], P.SIZES[obj["size"]] * s  # track with the prompt's
    centers, found, occluded, footprints = _track(labels, c, shape, size_px)
    motion = _motion(centers, found, occluded, fps, s) if has_motion else {}
    speed = motion.get("speed")
    if has_motion:
      observed_moving = speed is not None and speed >= STILL_SPEED
      res["moves"] = observed_moving == moving
      res["direction"] = (motion["direction"] == obj["direction"]) if moving else None
      res["speed"] = (observed_moving and (speed >= SPEED_SPLIT) == (obj["speed"] == "fast")
                      ) if moving else None
    else:
      res.update(moves=None, direction=None, speed=None)
    res["persistence"] = (_persists(labels, c, found, footprints, speed, size_px, fps, s)
                          if crosses else None)
    res["trail"] = (_score_trail(labels, c, footprints, size_px, trail_px, obj["trail"])
                    if trail_applies else None)
    if details:
      res["measured"] = {"color": P.PALETTE_NAMES[c], "shape": measured["shape"],
                         "size_s": None if size_px is None else size_px / s,
                         "iou": measured["iou"], "found": found.tolist(), **motion}
    per_object.append(res)

  background, stable = _background(labels, video, meta["background"])
  out: dict[str, Any] = {"background": background, "flicker": stable,
                         "count": len(present) == len(expected)}
  for attr in ATTRIBUTES[3:]:
    out[attr] = _all(o[attr] for o in per_object)
  out["all_correct"] = bool(all(out[a] for a in ATTRIBUTES if out[a] is not None))
  if details:
    out["details"] = {"present": [P.PALETTE_NAMES[c] for c in present],
                      "objects": per_object}
  return out


# ---------------------------------------------------------------------------- aggregates
def summarize(results: Sequence[dict[str, Any]], *, n_boot: int = 1000, seed: int = 0
              ) -> dict[str, dict[str, float | int | None]]:
  """Per attribute (and all_correct): accuracy, bootstrap 95% CI and n applicable clips."""
  rng = np.random.default_rng(seed)
  out = {}
  for attr in ATTRIBUTES + ("all_correct",):
    vals = np.array([r[attr] for r in results if r.get(attr) is not None], np.float64)
    if vals.size == 0:
      out[attr] = {"accuracy": None, "ci_low": None, "ci_high": None, "n": 0}
      continue
    boots = vals[rng.integers(0, vals.size, (n_boot, vals.size))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    out[attr] = {"accuracy": float(vals.mean()), "ci_low": float(lo), "ci_high": float(hi),
                 "n": int(vals.size)}
  return out


# Scene groups for the breakdown rows of a report: a clip-level score hides that one large
# object is far easier to draw than one small object or two (docs/benchmarks.md).
SCENE_GROUPS = ("one large object", "one small object", "two objects")


def scene_group(meta: dict[str, Any]) -> str:
  """Which of SCENE_GROUPS a clip's metadata falls in."""
  objects = meta["objects"]
  if len(objects) > 1:
    return SCENE_GROUPS[2]
  return SCENE_GROUPS[0] if objects[0]["size"] == "large" else SCENE_GROUPS[1]


def real_clips(split: str, n: int, *, seed: int, height: int, width: int, frames: int,
               fps: float) -> list[dict[str, Any]]:
  """The first n clips of a Shapes World split."""
  return [world.generate_clip(split, i, seed=seed, height=height, width=width, frames=frames,
                              fps=fps) for i in range(n)]


def score_real(clips: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Ceiling: each real clip against its own metadata."""
  return [score_clip(c["video"], c["metadata"]) for c in clips]


def score_shuffled(clips: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
  """Chance: clip i against the metadata of another clip (a random derangement)."""
  n = len(clips)
  order = np.random.default_rng(seed).permutation(n)
  partner = {int(order[k]): int(order[(k + 1) % n]) for k in range(n)}  # a single n-cycle
  return [score_clip(clips[i]["video"], clips[partner[i] if n > 1 else i]["metadata"])
          for i in range(n)]


def static_video(video: np.ndarray) -> np.ndarray:
  """The first frame held for the whole clip."""
  return np.repeat(np.asarray(video)[:1], len(video), axis=0)


def score_static(clips: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """No motion: the first frame, held, against the clip's own metadata."""
  return [score_clip(static_video(c["video"]), c["metadata"]) for c in clips]


REFERENCES: dict[str, Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]] = {
  "real": score_real, "shuffled": score_shuffled, "static": score_static}


def reference_rows(split: str = "heldout", n: int = 200, *, seed: int = 0, height: int = 32,
                   width: int = 32, frames: int = 16, fps: float = 8.0
                   ) -> dict[str, dict[str, dict[str, float | int | None]]]:
  """The oracle's reference rows (real / shuffled / static) on n clips of a split."""
  clips = real_clips(split, n, seed=seed, height=height, width=width, frames=frames, fps=fps)
  return {name: summarize(fn(clips)) for name, fn in REFERENCES.items()}


def format_rows(rows: dict[str, dict[str, dict[str, Any]]]) -> str:
  """A plain-text table: one row per reference, one column per attribute."""
  cols = ATTRIBUTES + ("all_correct",)
  lines = ["row      " + " ".join(f"{c[:11]:>11}" for c in cols)]
  for name, summary in rows.items():
    cells = []
    for c in cols:
      acc = summary[c]["accuracy"]
      cells.append(f"{'n/a' if acc is None else f'{acc:.3f}':>11}")
    lines.append(f"{name:<8} " + " ".join(cells))
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description="Shapes World oracle reference rows")
  parser.add_argument("--split", default="heldout", choices=world.SPLITS)
  parser.add_argument("--clips", type=int, default=200)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--height", type=int, default=32)
  parser.add_argument("--width", type=int, default=None, help="defaults to --height")
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--fps", type=float, default=8.0)
  parser.add_argument("--out", default=None, help="also write the rows to this JSON")
  args = parser.parse_args()
  rows = reference_rows(args.split, args.clips, seed=args.seed, height=args.height,
                        width=args.width or args.height, frames=args.frames, fps=args.fps)
  print(f"{args.split}, {args.clips} clips, {args.height}x{args.width or args.height}, "
        f"{args.frames} frames at {args.fps} fps")
  print(format_rows(rows))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()

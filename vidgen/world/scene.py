"""Scene sampling and exact trajectories (with mirror bounces) for the Shapes World.

Coordinates are pixels with x to the right and y down; pixel (row i, column j) has its center
at (x=j, y=i), so the canvas spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. An object's center is the
center of its bounding box (for a triangle that is not its centroid).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from vidgen.world import palette as P

SPLITS: tuple[str, ...] = ("train", "validation", "test", "heldout")

# Scene statistics (shares of clips); not part of the contract, only of this sampler.
P_TWO_OBJECTS = 0.5
P_STILL = 0.15
P_TRAIL = 0.3
P_PILLAR = 0.3
# When a path does not fit, the first bounce comes only after this much travel (in S), so the
# initial direction is visible before any reflection.
MIN_TRAVEL_TO_BOUNCE = 0.15


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """A generator seeded by a stable hash of (seed, split, index); never Python's hash()."""
  digest = hashlib.sha256(f"shapes-world-v1/{seed}/{split}/{index}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def object_extent_px(size: str, height: int, width: int) -> float:
  """Bounding-box edge of an object in pixels."""
  return P.SIZES[size] * min(height, width)


def center_bounds(size: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Lowest and highest (x, y) a center may take so the object stays on the canvas."""
  half = object_extent_px(size, height, width) / 2
  lo = np.array([half - 0.5, half - 0.5])
  hi = np.array([width - 0.5 - half, height - 0.5 - half])
  return lo, hi


def velocity_px(direction: str, speed: str | None, height: int, width: int) -> np.ndarray:
  """Velocity in pixels per second; zero for a still object."""
  if direction == P.STILL:
    return np.zeros(2)
  return np.array(P.DIRECTIONS[direction]) * P.SPEEDS[speed] * min(height, width)


def _fold(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Mirror-reflect unbounded positions u into [lo, hi]."""
  span = hi - lo
  r = np.mod(u - lo, 2 * span)
  return lo + np.where(r <= span, r, 2 * span - r)


def _axis_bounces(x0: float, v: float, lo: float, hi: float, t_end: float,
                  edges: tuple[str, str]) -> list[tuple[float, str]]:
  """(time, edge) of every wall contact on one axis in (0, t_end]."""
  if v == 0:
    return []
  span = hi - lo
  out = []
  # Wall contacts happen where the unfolded path crosses lo + m * span.
  m = 1 if v > 0 else 0
  step = 1 if v > 0 else -1
  while True:
    t = (lo + m * span - x0) / v
    if t > t_end + 1e-9:
      return out
    if t > 1e-9:
      out.append((float(t), edges[1] if m % 2 else edges[0]))
    m += step


def trajectory(start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               frames: int, fps: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """Centers [T, 2] at times k / fps and the bounce events, in time order."""
  times = np.arange(frames) / fps
  unfolded = start[None, :] + velocity[None, :] * times[:, None]
  centers = np.stack([_fold(unfolded[:, a], lo[a], hi[a]) for a in range(2)], axis=1)
  t_end = (frames - 1) / fps
  events = (_axis_bounces(start[0], velocity[0], lo[0], hi[0], t_end, ("left", "right"))
            + _axis_bounces(start[1], velocity[1], lo[1], hi[1], t_end, ("top", "bottom")))
  bounces = []
  for t, edge in sorted(events):
    pos = [float(_fold(np.array(start[a] + velocity[a] * t), lo[a], hi[a])) for a in range(2)]
    bounces.append({"edge": edge, "time": t, "position": pos})
  return centers, bounces


def _draw_start(rng: np.random.Generator, velocity: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, duration: float, s: float) -> np.ndarray:
  """A start position: no bounce if the path fits on an axis, else no early bounce."""
  start = np.zeros(2)
  speed = float(np.linalg.norm(velocity))
  min_time = MIN_TRAVEL_TO_BOUNCE * s / speed if speed > 0 else 0.0
  for a in range(2):
    v = velocity[a]
    travel = abs(v) * duration
    span = hi[a] - lo[a]
    if abs(v) < 1e-12:
      room = span
    elif travel <= span:
      room = span - travel
    else:
      room = max(span - abs(v) * min_time, 0.0)
    offset = rng.uniform(0.0, room)
    start[a] = lo[a] + offset if v >= 0 else hi[a] - offset
  return start


def _draw_attributes(rng: np.random.Generator, colors: list[str]) -> dict[str, Any]:
  """Color, shape, size, direction, speed and trail of one object, any combination."""
  color = str(rng.choice(colors))
  direction = P.STILL if rng.random() < P_STILL else str(rng.choice(list(P.DIRECTIONS)))
  moving = direction != P.STILL
  return {
    "color": color,
    "shape": str(rng.choice(P.SHAPES)),
    "size": str(rng.choice(list(P.SIZES))),
    "direction": direction,
    "speed": str(rng.choice(list(P.SPEEDS))) if moving else None,
    "trail": bool(moving and rng.random() < P_TRAIL),
  }


def _is_heldout(obj: dict[str, Any]) -> bool:
  return bool(P.heldout_combinations(obj["color"], obj["shape"], obj["direction"]))


def _draw_heldout(rng: np.random.Generator) -> dict[str, Any]:
  """An object that shows one held-out combination (other attributes free)."""
  combos = ([("shape", c, s) for c, s in sorted(P.HELDOUT_COLOR_SHAPE)]
            + [("motion", c, d) for c, d in sorted(P.HELDOUT_COLOR_MOTION)])
  kind, color, value = combos[rng.integers(len(combos))]
  obj = _draw_attributes(rng, [color])
  if kind == "shape":
    obj["shape"] = value
  else:
    obj["direction"] = value
    obj["speed"] = str(rng.choice(list(P.SPEEDS)))
  return obj


def _overlap(a_lo: np.ndarray, a_hi: np.ndarray, b_lo: np.ndarray, b_hi: np.ndarray) -> bool:
  return bool(np.all(a_lo < b_hi) and np.all(b_lo < a_hi))


def sample_scene(split: str, index: int, *, seed: int, height: int, width: int,
                 frames: int, fps: float) -> dict[str, Any]:
  """The full metadata of one clip (WORLD.md's list), deterministic in every argument."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  if min(height, width) < 16 or frames < 1 or fps <= 0:
    raise ValueError(f"need height, width >= 16, frames >= 1, fps > 0; got "
                     f"{height}x{width}, {frames} frames, fps {fps}")
  rng = clip_rng(seed, split, index)
  s = min(height, width)
  duration = (frames - 1) / fps
  n_objects = 2 if rng.random() < P_TWO_OBJECTS else 1

  objects: list[dict[str, Any]] = []
  if split == "heldout":
    objects.append(_draw_heldout(rng))
  while len(objects) < n_objects:
    free = [c for c in P.OBJECT_COLORS if c not in {o["color"] for o in objects}]
    obj = _draw_attributes(rng, free)
    if split != "heldout" and _is_heldout(obj):
      continue  # rejection keeps train/validation/test free of held-out combinations
    objects.append(obj)
  rng.shuffle(objects)  # the held-out object is not always listed first

  boxes = []  # frame-0 bounding boxes, to keep objects apart at the start
  for obj in objects:
    lo, hi = center_bounds(obj["size"], height, width)
    half = object_extent_px(obj["size"], height, width) / 2
    # A path that barely fits pins the start to a corner; if another object holds that
    # corner, try other directions that keep the object's held-out status.
    directions = [obj["direction"]] + [d for d in rng.permutation(list(P.DIRECTIONS))
                                       if d != obj["direction"] and obj["direction"] != P.STILL]
    placed = False
    for direction in directions:
      if (P.heldout_combinations(obj["color"], obj["shape"], direction)
          != P.heldout_combinations(obj["color"], obj["shape"], obj["direction"])):
        continue
      vel = velocity_px(direction, obj["speed"], height, width)
      for _ in range(30):
        start = _draw_start(rng, vel, lo, hi, duration, s)
        box = (start - half, start + half)
        if not any(_overlap(*box, *b) for b in boxes):
          placed = True
          break
      if placed:
        obj["direction"] = str(direction)
        break
    if not placed:  # give up on separation (vanishingly rare): keep the first direction
      vel = velocity_px(obj["direction"], obj["speed"], height, width)
      start = _draw_start(rng, vel, lo, hi, duration, s)
      box = (start - half, start + half)
    boxes.append(box)
    centers, bounces = trajectory(start, vel, lo, hi, frames, fps)
    obj.update(start=[float(v) for v in start], start_s=[float(v / s) for v in start],
               bounces=bounces, centers=centers)

  pillar = None
  if rng.random() < P_PILLAR:
    w = P.PILLAR_WIDTH * s
    for _ in range(50):
      x = rng.uniform(w / 2 - 0.5, width - 0.5 - w / 2)
      # Objects never start behind the pillar, so their first frame shows them whole.
      if not any(b_lo[0] < x + w / 2 and x - w / 2 < b_hi[0] for b_lo, b_hi in boxes):
        pillar = {"x": float(x), "x_s": float(x / s), "width": float(w)}
        break

  centers = np.stack([o.pop("centers") for o in objects], axis=1)  # [T, n, 2]
  heldout = sorted({h for o in objects
                    for h in P.heldout_combinations(o["color"], o["shape"], o["direction"])})
  return {
    "version": 1, "split": split, "index": int(index), "seed": int(seed),
    "height": int(height), "width": int(width), "frames": int(frames), "fps": float(fps),
    "background": str(rng.choice(list(P.BACKGROUNDS))),
    "objects": objects, "pillar": pillar, "heldout": heldout,
    "centers": centers.tolist(),
  }

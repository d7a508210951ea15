"""The Shapes World's fixed vocabulary: colors, shapes, sizes, motions (WORLD.md)."""
from __future__ import annotations

import numpy as np

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
  "black": (0, 0, 0),
  "gray": (110, 110, 110),
  "navy": (15, 20, 70),
}
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
  "red": (230, 30, 30),
  "green": (30, 200, 50),
  "blue": (50, 90, 255),
  "yellow": (250, 220, 30),
  "cyan": (30, 220, 230),
  "magenta": (220, 40, 220),
  "orange": (250, 140, 20),
  "white": (245, 245, 245),
}
PILLAR_COLOR: tuple[int, int, int] = (120, 70, 30)

# Every pixel of a rendered clip is one of these; index order is fixed (the oracle's labels).
PALETTE: dict[str, tuple[int, int, int]] = {
  **BACKGROUNDS, **OBJECT_COLORS, "brown": PILLAR_COLOR}
PALETTE_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_RGB: np.ndarray = np.array(list(PALETTE.values()), dtype=np.uint8)  # [12, 3]
PALETTE_INDEX: dict[str, int] = {name: i for i, name in enumerate(PALETTE_NAMES)}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Bounding-box edge in units of the canvas's shorter side S.
SIZES: dict[str, float] = {"small": 0.18, "large": 0.32}
# Speeds in S per second of video time.
SPEEDS: dict[str, float] = {"slow": 0.25, "fast": 0.6}
# Unit vectors in image coordinates (x right, y down).
_D = float(np.sqrt(0.5))
DIRECTIONS: dict[str, tuple[float, float]] = {
  "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
  "up-left": (-_D, -_D), "up-right": (_D, -_D),
  "down-left": (-_D, _D), "down-right": (_D, _D),
}
STILL = "still"
TRAIL_WIDTH = 0.06   # S
PILLAR_WIDTH = 0.12  # S
CROSS_ARM = 1.0 / 3.0  # arm width as a fraction of the cross's size

# Held-out combinations: never in train/validation/test, at least one in every heldout clip.
HELDOUT_COLOR_SHAPE: frozenset[tuple[str, str]] = frozenset({
  ("yellow", "square"), ("blue", "triangle"), ("green", "cross"), ("white", "circle")})
HELDOUT_COLOR_MOTION: frozenset[tuple[str, str]] = frozenset({
  ("magenta", "down"), ("cyan", "left")})


def heldout_combinations(color: str, shape: str, direction: str) -> list[str]:
  """The held-out combinations one object shows, as readable strings."""
  found = []
  if (color, shape) in HELDOUT_COLOR_SHAPE:
    found.append(f"{color} {shape}")
  if (color, direction) in HELDOUT_COLOR_MOTION:
    found.append(f"{color} moving {direction}")
  return found

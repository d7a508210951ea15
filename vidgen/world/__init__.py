"""The Shapes World (WORLD.md): a procedural, captioned video world with exact ground truth.

`generate_clip(split, index, seed=..., height=..., width=..., frames=..., fps=...)` gives
`{"video": uint8 [T, H, W, 3], "captions": [detailed, short, paraphrases...], "metadata": {...}}`.

Metadata (JSON-serialisable): version, split, index, seed, height, width, frames, fps,
background, pillar ({x, x_s, width} in px / S, or None), heldout (the held-out combinations
shown), objects (per object: color, shape, size, direction ("still" or one of 8), speed
("slow" | "fast" | None), trail, start (x, y px), start_s (in S), bounces ([{edge, time (s),
position (x, y px)}] in time order)) and centers [T][n_objects][2]: each object's bounding-box
center (x, y) in pixels per frame, where pixel (row i, column j) has its center at (j, i).
`render(metadata)` redraws a clip from its metadata alone; `captions_for(metadata)` rebuilds
its captions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vidgen.world import captions as _captions
from vidgen.world.captions import detailed_caption, short_caption
from vidgen.world.palette import (BACKGROUNDS, DIRECTIONS, HELDOUT_COLOR_MOTION,
                                  HELDOUT_COLOR_SHAPE, OBJECT_COLORS, PALETTE, PALETTE_INDEX,
                                  PALETTE_NAMES, PALETTE_RGB, PILLAR_COLOR, SHAPES, SIZES,
                                  SPEEDS, STILL)
from vidgen.world.draw import render, render_labels, shape_mask
from vidgen.world.scene import SPLITS, clip_rng, sample_scene

__all__ = [
  "SPLITS", "PALETTE", "PALETTE_NAMES", "PALETTE_RGB", "PALETTE_INDEX", "BACKGROUNDS",
  "OBJECT_COLORS", "PILLAR_COLOR", "SHAPES", "SIZES", "SPEEDS", "DIRECTIONS", "STILL",
  "HELDOUT_COLOR_SHAPE", "HELDOUT_COLOR_MOTION", "generate_clip", "sample_scene", "render",
  "render_labels", "shape_mask", "captions_for", "detailed_caption",
  "short_caption",
]


def captions_for(metadata: dict[str, Any], n_paraphrases: int = 4) -> list[str]:
  """The captions of a clip from its metadata alone (same as generate_clip's)."""
  rng = clip_rng(metadata["seed"], metadata["split"], metadata["index"])
  rng = np.random.default_rng(rng.integers(2**63))  # a stream apart from the scene's
  return _captions.captions(metadata, rng, n_paraphrases)


def generate_clip(split: str, index: int, *, seed: int, height: int, width: int,
                  frames: int, fps: float) -> dict[str, Any]:
  """One clip of a split: video, captions and JSON-serialisable metadata; deterministic."""
  metadata = sample_scene(split, index, seed=seed, height=height, width=width,
                          frames=frames, fps=fps)
  return {"video": render(metadata), "captions": captions_for(metadata),
          "metadata": metadata}

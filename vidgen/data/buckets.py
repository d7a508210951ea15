"""Buckets: which (frames, height, width) shape each clip trains at, and per-epoch batch plans.

A bucket is `(frames, height, width, global_batch_size)`. Every clip gets one bucket, fixed
for the whole run (so every epoch has the same number of batches per bucket): among the
buckets its length allows (after the frame stride), those closest in aspect ratio, drawn by
bucket weight. An epoch's plan is a list of global batches, each holding clips of one bucket;
every process takes its own slice of every global batch, so all processes step through the
same bucket shapes in lockstep, read disjoint clips, and together read the whole epoch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

Bucket = tuple[int, int, int, int]


def balanced_batch_sizes(shapes: Sequence[tuple[int, int, int]], tokens_per_batch: int,
                         multiple: int = 1) -> list[int]:
  """Batch sizes giving each bucket about `tokens_per_batch` frames*height*width.

  Each is a multiple of `multiple` (e.g. the process count) and at least `multiple`.
  """
  sizes = []
  for frames, height, width in shapes:
    b = tokens_per_batch / (frames * height * width)
    sizes.append(max(multiple, int(round(b / multiple)) * multiple))
  return sizes


def frame_stride(src_fps: float, frame_stride_: int, target_fps: float) -> int:
  """Stride between taken frames: from a target fps when one is set, else the fixed stride."""
  if target_fps > 0:
    return max(1, int(round(src_fps / target_fps)))
  return frame_stride_


def available_frames(src_frames: int, stride: int) -> int:
  """How many frames a clip of `src_frames` yields at `stride`."""
  return (int(src_frames) - 1) // stride + 1


def assign_buckets(table: np.ndarray, buckets: Sequence[Bucket], *,
                   weights: Sequence[float] = (), aspect_tolerance: float = 0.25,
                   stride: int = 1, target_fps: float = 0.0, seed: int = 0) -> np.ndarray:
  """int32 [N] bucket id per clip (-1: too short for every bucket).

  table: [N, 4] (frames, height, width, fps) of the source clips. An image (frames = 1) only
  fits one-frame buckets; a video fits every bucket its strided length covers.
  """
  n = table.shape[0]
  weights = np.asarray(weights if len(weights) else [1.0] * len(buckets), np.float64)
  shapes = np.asarray([b[:3] for b in buckets], np.float64)
  log_aspect_b = np.log(shapes[:, 2] / shapes[:, 1])
  draws = np.random.default_rng([seed, 7]).random(n)  # Fixed per clip, not per epoch.
  ids = np.full(n, -1, np.int32)
  groups, inverse = np.unique(table, axis=0, return_inverse=True)
  for g, (frames, height, width, fps) in enumerate(groups):
    s = frame_stride(fps, stride, target_fps)
    fits = shapes[:, 0] <= available_frames(frames, s)
    if frames == 1:
      fits &= shapes[:, 0] == 1
    fits &= weights > 0
    if not fits.any():
      continue
    distance = np.abs(log_aspect_b - math.log(width / height))
    close = fits & (distance <= aspect_tolerance + 1e-9)
    if not close.any():  # Nothing close enough: fall back to the closest that fits.
      close = fits & (distance <= distance[fits].min() + 1e-9)
    candidates = np.flatnonzero(close)
    cdf = np.cumsum(weights[candidates]) / weights[candidates].sum()
    members = np.flatnonzero(inverse.reshape(-1) == g)
    picks = np.minimum(np.searchsorted(cdf, draws[members], side="right"), len(cdf) - 1)
    ids[members] = candidates[picks]
  return ids


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
  """One global batch: its bucket, the clip indices, and which entries are real (not padding)."""
  bucket: int
  indices: np.ndarray
  valid: np.ndarray


def plan_epoch(bucket_ids: np.ndarray, batch_sizes: Sequence[int], *, seed: int, epoch: int,
               shuffle: bool, drop_remainder: bool) -> list[PlannedBatch]:
  """The global batches of one epoch, in the order a bucketing reader would emit them.

  Clips are visited in a global shuffled order (a fresh permutation per epoch); a bucket's
  batch is emitted as soon as it fills. Without drop_remainder the last partial batch of each
  bucket is padded (repeating its first clip) and marked by `valid`.
  """
  n = bucket_ids.shape[0]
  order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
           else np.arange(n))
  buckets_in_order = bucket_ids[order]
  batches = []  # (emit position, PlannedBatch)
  for b, size in enumerate(batch_sizes):
    positions = np.flatnonzero(buckets_in_order == b)
    full = len(positions) // size
    for k in range(full):
      chunk = positions[k * size:(k + 1) * size]
      batches.append((chunk[-1], PlannedBatch(b, order[chunk], np.ones(size, bool))))
    rest = positions[full * size:]
    if len(rest) and not drop_remainder:
      indices = np.concatenate([order[rest], np.full(size - len(rest), order[rest[0]])])
      valid = np.arange(size) < len(rest)
      batches.append((rest[-1], PlannedBatch(b, indices, valid)))
  batches.sort(key=lambda item: item[0])
  return [batch for _, batch in batches]


def batches_per_epoch(bucket_ids: np.ndarray, batch_sizes: Sequence[int]) -> int:
  """Full batches per epoch (the same every epoch, since buckets are fixed per clip)."""
  counts = np.bincount(bucket_ids[bucket_ids >= 0], minlength=len(batch_sizes))
  return int(sum(c // s for c, s in zip(counts, batch_sizes)))

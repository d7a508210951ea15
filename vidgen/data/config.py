"""The `data` section every config embeds (at `config.data`), and its validation.

Buckets are `(frames, height, width, batch_size)` tuples; `batch_size` is the global batch
(all processes together), split evenly over JAX processes. Choose batch sizes so that
`frames * height * width * batch_size` is about equal across buckets (see
`vidgen.data.buckets.balanced_batch_sizes`), so every batch carries similar token counts.
"""
from __future__ import annotations

import math
import os

import ml_collections

from vidgen.errors import VidgenError

DATASETS = ("shapes_world", "video_folder")
RESIZE_POLICIES = ("crop", "pad", "stretch")
WINDOWS = ("center", "start")
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "area")


def get_config() -> ml_collections.ConfigDict:
  """Default data section: a small Shapes World at 16 frames of 32x32."""
  c = ml_collections.ConfigDict()
  c.dataset = "shapes_world"        # "shapes_world" | "video_folder"
  c.data_dir = "data"               # TFDS data_dir; the tokenizer and build reports live here.

  c.world = ml_collections.ConfigDict()
  c.world.height = 32
  c.world.width = 32
  c.world.frames = 16
  c.world.fps = 8.0
  c.world.seed = 0
  c.world.train_size = 4096
  c.world.validation_size = 256
  c.world.test_size = 256
  c.world.heldout_size = 256

  c.folder = ml_collections.ConfigDict()
  c.folder.path = ""                # Videos/images with .txt sidecars or a captions.jsonl.
  c.folder.min_frames = 8           # Videos with fewer frames are skipped (images are kept).
  c.folder.validation_fraction = 0.0  # Files whose name hashes below this go to `validation`.

  c.clip = ml_collections.ConfigDict()
  c.clip.frame_stride = 1           # Take every k-th frame; ignored when target_fps > 0.
  c.clip.target_fps = 0.0           # > 0: stride = round(source fps / target_fps), at least 1.
  c.clip.resize = "crop"            # crop (cover, then crop) | pad | stretch
  c.clip.resize_method = "bilinear"  # nearest | bilinear | bicubic | area
  c.clip.random_crop = True         # Train: random temporal/spatial crop windows; eval: fixed.
  # Where a fixed temporal window starts (eval, cached latents, random_crop off): center |
  # start. `start` makes a one-frame bucket train on first frames, as image-first sampling
  # (text to image, then image to video) generates them.
  c.clip.window = "center"

  # (frames, height, width, global batch size); an image is frames = 1.
  c.buckets = [(16, 32, 32, 16)]
  # Each clip goes to one bucket it fits, drawn by these weights (fixed per clip): they split
  # the clips, not the steps. Empty: equal weights among equally good buckets.
  c.bucket_weights = []
  c.aspect_tolerance = 0.25         # |log(aspect ratio)| a clip may differ from its bucket's.

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.path = ""             # Empty: tokenizer.model next to the dataset.
  c.tokenizer.vocab_size = 512
  c.tokenizer.max_len = 32

  c.train_split = "train"
  c.eval_split = "validation"
  c.shuffle_seed = 0
  c.worker_count = 0                # grain worker processes (0: read in the main process).
  c.read_threads = 2                # Threads per process reading/decoding batches.
  c.prefetch = 2                    # Batches prefetched per reader.
  return c


def check(condition: bool, message: str) -> None:
  if not condition:
    raise VidgenError(f"bad data config: {message}")


def _positive_int(value, name: str) -> None:
  check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}")


def validate(data: ml_collections.ConfigDict, process_count: int = 1) -> None:
  """Refuses a data config that cannot work, with a message that names the fix."""
  check(data.dataset in DATASETS,
        f"data.dataset={data.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
  check(bool(data.data_dir), "data.data_dir must name a folder")
  if data.dataset == "shapes_world":
    for key in ("height", "width", "frames", "train_size", "validation_size", "test_size",
                "heldout_size"):
      _positive_int(data.world[key], f"data.world.{key}")
    check(data.world.height >= 16 and data.world.width >= 16,
          "data.world.height and width must be at least 16 (the world's smallest canvas)")
    check(data.world.fps > 0, f"data.world.fps must be positive, got {data.world.fps}")
  else:
    check(bool(data.folder.path), "data.dataset='video_folder' needs data.folder.path=DIR")
    _positive_int(data.folder.min_frames, "data.folder.min_frames")
    check(0.0 <= data.folder.validation_fraction < 1.0,
          "data.folder.validation_fraction must be in [0, 1)")
  _positive_int(data.clip.frame_stride, "data.clip.frame_stride")
  check(data.clip.target_fps >= 0, "data.clip.target_fps must be >= 0 (0 = use frame_stride)")
  check(data.clip.resize in RESIZE_POLICIES,
        f"data.clip.resize={data.clip.resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
  check(data.clip.resize_method in RESIZE_METHODS,
        f"data.clip.resize_method={data.clip.resize_method!r}; choose one of "
        f"{', '.join(RESIZE_METHODS)}")
  check(data.clip.window in WINDOWS,
        f"data.clip.window={data.clip.window!r}; choose one of {', '.join(WINDOWS)}")
  _positive_int(process_count, "process count")
  check(len(data.buckets) > 0, "data.buckets is empty; give at least one "
        "(frames, height, width, batch_size)")
  for i, bucket in enumerate(data.buckets):
    check(isinstance(bucket, (tuple, list)) and len(bucket) == 4,
          f"data.buckets[{i}]={bucket!r} must be (frames, height, width, batch_size)")
    for name, value in zip(("frames", "height", "width", "batch_size"), bucket):
      _positive_int(value, f"data.buckets[{i}] {name}")
    check(bucket[3] % process_count == 0,
          f"data.buckets[{i}] batch_size {bucket[3]} is not divisible by the "
          f"{process_count} JAX processes; use a multiple of {process_count}")
  shapes = [tuple(b[:3]) for b in data.buckets]
  check(len(set(shapes)) == len(shapes), f"data.buckets repeats a shape: {shapes}")
  if len(data.bucket_weights):
    check(len(data.bucket_weights) == len(data.buckets),
          f"data.bucket_weights has {len(data.bucket_weights)} entries for "
          f"{len(data.buckets)} buckets")
    check(all(w >= 0 for w in data.bucket_weights) and sum(data.bucket_weights) > 0,
          "data.bucket_weights must be non-negative and not all zero")
  check(data.aspect_tolerance >= 0 and math.isfinite(data.aspect_tolerance),
        "data.aspect_tolerance must be >= 0")
  _positive_int(data.tokenizer.vocab_size, "data.tokenizer.vocab_size")
  _positive_int(data.tokenizer.max_len, "data.tokenizer.max_len")
  check(data.worker_count >= 0, "data.worker_count must be >= 0")
  _positive_int(data.read_threads, "data.read_threads")
  _positive_int(data.prefetch, "data.prefetch")


def tokenizer_path(data: ml_collections.ConfigDict) -> str:
  """Where the caption tokenizer of this dataset lives."""
  if data.tokenizer.path:
    return data.tokenizer.path
  from vidgen.data import datasets  # Deferred: pulls in TFDS.
  return os.path.join(datasets.dataset_root(data), "tokenizer.model")

"""From a `data` config to a TFDS builder, a build, and random-access sources.

Builders are constructed directly (never looked up by name), so the same code reads a
dataset in the main process and in grain worker processes.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np

from vidgen.errors import VidgenError

REPORT_FILE = "build_report.json"


_BUILDERS: dict[str, object] = {}


def _builder_key(data: ml_collections.ConfigDict) -> str:
  part = data.world if data.dataset == "shapes_world" else data.folder
  return json.dumps([data.dataset, os.path.abspath(data.data_dir), part.to_dict()],
                    sort_keys=True)


def make_builder(data: ml_collections.ConfigDict):
  """The TFDS builder that the config names (one per settings, cached)."""
  key = _builder_key(data)
  if key not in _BUILDERS:
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # TFDS warns about every custom config; it is normal here.
    try:
      _BUILDERS[key] = _new_builder(data)
    finally:
      absl_logger.setLevel(level)
  return _BUILDERS[key]


def _new_builder(data: ml_collections.ConfigDict):
  if data.dataset == "shapes_world":
    from vidgen.data import shapes_world
    w = data.world
    config = shapes_world.make_config(
        height=w.height, width=w.width, frames=w.frames, fps=w.fps, seed=w.seed,
        train_size=w.train_size, validation_size=w.validation_size, test_size=w.test_size,
        heldout_size=w.heldout_size)
    return shapes_world.VidgenShapesWorld(data_dir=data.data_dir, config=config,
                                          file_format="array_record")
  if data.dataset == "video_folder":
    from vidgen.data import video_folder
    config = video_folder.make_config(data.folder.path, min_frames=data.folder.min_frames,
                                      validation_fraction=data.folder.validation_fraction)
    return video_folder.VidgenVideoFolder(data_dir=data.data_dir, config=config,
                                          file_format="array_record")
  raise VidgenError(f"unknown dataset {data.dataset!r}")


def dataset_root(data: ml_collections.ConfigDict) -> str:
  """The folder of this dataset's config (above the version folder): tokenizer, report."""
  builder = make_builder(data)
  return os.path.join(data.data_dir, builder.name, builder.builder_config.name)


def is_built(data: ml_collections.ConfigDict) -> bool:
  return make_builder(data).is_prepared()


def build(data: ml_collections.ConfigDict) -> dict:
  """Builds the dataset if it is not built yet; returns a summary (and, for folders, the report)."""
  builder = make_builder(data)
  root = os.path.join(data.data_dir, builder.name, builder.builder_config.name)
  summary = {"dataset": data.dataset, "path": builder.data_dir, "already_built": False}
  if builder.is_prepared():
    summary["already_built"] = True
  else:
    try:
      builder.download_and_prepare(file_format="array_record")
    finally:
      report = getattr(builder, "report", None)
      if report is not None:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, REPORT_FILE), "w") as f:
          json.dump(report, f, indent=2)
        summary["report"] = report
        summary["report_path"] = os.path.join(root, REPORT_FILE)
  summary["splits"] = split_sizes(data)
  return summary


def split_sizes(data: ml_collections.ConfigDict) -> dict[str, int]:
  builder = make_builder(data)
  if builder.is_prepared() and not builder.info.splits:  # Built since we made it: reload.
    _BUILDERS.pop(_builder_key(data), None)
    builder = make_builder(data)
  if not builder.is_prepared():
    raise VidgenError(f"dataset not built at {builder.data_dir}; run "
                      "`vidgen data build --config=...` with the same data settings")
  return {name: info.num_examples for name, info in builder.info.splits.items()}


def split_size(data: ml_collections.ConfigDict, split: str) -> int:
  """Clips in one split (a clear error when the dataset lacks it)."""
  sizes = split_sizes(data)
  if split not in sizes:
    raise VidgenError(f"split {split!r} not in the {data.dataset} dataset; it has "
                      f"{', '.join(sorted(sizes))} (set data.train_split / data.eval_split)")
  return sizes[split]


def open_source(data: ml_collections.ConfigDict, split: str):
  """A random-access source (tfds data_source) of one split."""
  split_size(data, split)
  return make_builder(data).as_data_source(split=split)


def as_text(value) -> str:
  """TFDS returns text as bytes."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def shape_table(data: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """float64 [N, 4]: (frames, height, width, fps) of every record of a split.

  The Shapes World's clips all share one shape; a folder's are read once from the
  records' stored scalars and cached next to the dataset.
  """
  n = split_size(data, split)
  if data.dataset == "shapes_world":
    w = data.world
    return np.tile(np.array([[w.frames, w.height, w.width, w.fps]], np.float64), (n, 1))
  cache = os.path.join(dataset_root(data), f"shapes_{split}.npy")
  if os.path.isfile(cache):
    table = np.load(cache)
    if table.shape == (n, 4):
      return table
  source = open_source(data, split)
  table = np.array([[r["frames"], r["height"], r["width"], r["fps"]]
                    for r in (source[i] for i in range(n))], np.float64).reshape(n, 4)
  np.save(cache, table)
  return table

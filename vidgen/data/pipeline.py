"""The grain input pipeline: random-access TFDS source -> bucketed, tokenized batches.

    source (tfds.data_source) -> bucket per clip -> per epoch: global shuffle, one-bucket
    global batches (buckets.plan_epoch) -> this process's slice of each batch -> read, decode,
    sample frames, resize/crop, draw a caption, tokenize -> read threads, worker processes,
    prefetch.

The whole plan is a pure function of (config, epoch), so the pipeline is a `grain.MapDataset`
over batch numbers: its iterator state is just a position, `get_state()/set_state()` (and
`grain.checkpoint.CheckpointSave/Restore` with Orbax) resume exactly, and any number of
processes read disjoint slices that together are the whole epoch.

Batches (docs/design.md): `video` uint8 [B, T, H, W, 3], `tokens` int32 [B, L],
`text_mask` bool [B, L], `fps` float32 [B]; eval batches add `valid` bool [B] (False on the
padding that fills each bucket's last batch).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
from typing import Any

import grain
import ml_collections
import numpy as np

from vidgen.data import buckets as buckets_lib
from vidgen.data import config as config_lib
from vidgen.data import datasets, video_io
from vidgen.errors import VidgenError


def sample_clip(video: np.ndarray, src_fps: float, shape: tuple[int, int, int],
                clip: ml_collections.ConfigDict, rng: np.random.Generator | None
                ) -> tuple[np.ndarray, float]:
  """Takes `frames` frames at the configured stride and fits them to (height, width).

  rng None: the fixed temporal window (clip.window: centered, or from the first frame) and a
  centered spatial one (eval); else random windows when clip.random_crop is set.
  """
  frames, height, width = shape
  stride = buckets_lib.frame_stride(src_fps, clip.frame_stride, clip.target_fps)
  span = (frames - 1) * stride + 1
  if span > video.shape[0]:
    raise ValueError(f"clip of {video.shape[0]} frames is shorter than {span}")
  random = rng is not None and clip.random_crop
  slack = video.shape[0] - span
  if random:
    start = int(rng.integers(0, slack + 1))
  else:
    start = 0 if clip.window == "start" else slack // 2
  offset = tuple(rng.random(2)) if random else (0.5, 0.5)
  taken = video[start:start + span:stride]
  out = video_io.fit_frames(taken, height, width, policy=clip.resize,
                            method=clip.resize_method, offset=offset)
  return np.ascontiguousarray(out, np.uint8), float(src_fps) / stride


class LoadBatch(grain.transforms.Map):
  """Batch number -> this process's part of that global batch (picklable; opens lazily)."""

  def __init__(self, data: ml_collections.ConfigDict, split: str, bucket_ids: np.ndarray,
               *, training: bool, process_index: int, process_count: int,
               tokenizer_path: str):
    self._data = data.to_dict()
    self._split = split
    self._bucket_ids = bucket_ids
    self._training = training
    self._process_index = process_index
    self._process_count = process_count
    self._tokenizer_path = tokenizer_path
    self._batch_sizes = [int(b[3]) for b in data.buckets]
    self._per_epoch = (buckets_lib.batches_per_epoch(bucket_ids, self._batch_sizes)
                       if training else len(self._plan(0)))
    self._source = None
    self._tokenizer = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = state["_tokenizer"] = None  # Reopened in each worker.
    for key in ("_plans", "_lock", "config"):
      state.pop(key, None)
    return state

  @property
  def batches_per_epoch(self) -> int:
    return self._per_epoch

  @functools.cached_property
  def config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(self._data)

  def _plan(self, epoch: int) -> list[buckets_lib.PlannedBatch]:
    plans = self.__dict__.setdefault("_plans", {})
    with self.__dict__.setdefault("_lock", threading.Lock()):  # Read threads share it.
      return self._plan_locked(plans, epoch)

  def _plan_locked(self, plans: dict, epoch: int) -> list[buckets_lib.PlannedBatch]:
    if epoch not in plans:
      if len(plans) >= 2:  # Keep the current and the previous epoch only.
        plans.pop(min(plans))
      plans[epoch] = buckets_lib.plan_epoch(
          self._bucket_ids, self._batch_sizes, seed=self.config.shuffle_seed, epoch=epoch,
          shuffle=self._training, drop_remainder=self._training)
    return plans[epoch]

  def _open(self):
    if self._source is None:
      from vidgen.data.tokenizer import Tokenizer
      self._source = datasets.open_source(self.config, self._split)
      self._tokenizer = Tokenizer(self._tokenizer_path)
    return self._source, self._tokenizer

  def local_part(self, element: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Batch number -> (epoch, bucket, this process's clip indices, their valid flags)."""
    epoch, k = divmod(int(element), self._per_epoch)
    batch = self._plan(epoch)[k]
    local = len(batch.indices) // self._process_count
    part = slice(self._process_index * local, (self._process_index + 1) * local)
    return epoch, batch.bucket, batch.indices[part], batch.valid[part]

  def map(self, element: int) -> dict[str, np.ndarray]:
    epoch, bucket, indices, valid = self.local_part(element)
    source, tokenizer = self._open()
    shape = tuple(int(x) for x in self.config.buckets[bucket][:3])
    videos, fps, captions = [], [], []
    for index in indices:
      rng = (np.random.default_rng([self.config.shuffle_seed, epoch, int(index)])
             if self._training else None)
      video, clip_fps, texts = self._read(source[int(index)])
      clip_video, out_fps = sample_clip(video, clip_fps, shape, self.config.clip, rng)
      videos.append(clip_video)
      fps.append(out_fps)
      captions.append(texts[int(rng.integers(len(texts)))] if rng is not None else texts[0])
    tokens, mask = tokenizer.encode(captions, self.config.tokenizer.max_len)
    out = {"video": np.stack(videos), "tokens": tokens, "text_mask": mask,
           "fps": np.asarray(fps, np.float32)}
    if not self._training:
      out["valid"] = valid.copy()
    return out

  def _read(self, record: dict[str, Any]) -> tuple[np.ndarray, float, list[str]]:
    """A record -> (frames uint8 [T, H, W, 3], source fps, captions)."""
    texts = json.loads(datasets.as_text(record["captions"]))
    if self.config.dataset == "shapes_world":
      return np.asarray(record["video"]), float(record["fps"]), texts
    video, _ = video_io.decode(record["video"], datasets.as_text(record["kind"]))
    return video, float(record["fps"]), texts


def _resolve(config: ml_collections.ConfigDict, process_index: int | None,
             process_count: int | None) -> tuple[ml_collections.ConfigDict, int, int]:
  data = config.data if "data" in config else config
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  config_lib.validate(data, process_count)
  if not 0 <= process_index < process_count:
    raise VidgenError(f"process_index {process_index} is not in [0, {process_count})")
  return data, process_index, process_count


def _bucket_ids(data: ml_collections.ConfigDict, split: str) -> np.ndarray:
  table = datasets.shape_table(data, split)
  return buckets_lib.assign_buckets(
      table, [tuple(b) for b in data.buckets], weights=list(data.bucket_weights),
      aspect_tolerance=data.aspect_tolerance, stride=data.clip.frame_stride,
      target_fps=data.clip.target_fps, seed=data.shuffle_seed)


def make_loader(config: ml_collections.ConfigDict, split: str, *, training: bool,
                process_index: int | None = None, process_count: int | None = None
                ) -> LoadBatch:
  """The batch-number -> batch transform the iterators map (tests inspect its plan)."""
  data, process_index, process_count = _resolve(config, process_index, process_count)
  return _loader(data, split, training=training, process_index=process_index,
                 process_count=process_count)


def _loader(data, split, *, training, process_index, process_count) -> LoadBatch:
  path = config_lib.tokenizer_path(data)
  if not os.path.isfile(path):
    raise VidgenError(f"no caption tokenizer at {path}; run `vidgen data tokenizer "
                      "--config=...` with the same data settings (or set data.tokenizer.path)")
  ids = _bucket_ids(data, split)
  load = LoadBatch(data, split, ids, training=training, process_index=process_index,
                   process_count=process_count,
                   tokenizer_path=config_lib.tokenizer_path(data))
  if load.batches_per_epoch == 0:
    counts = np.bincount(ids[ids >= 0], minlength=len(data.buckets)).tolist()
    raise VidgenError(
        f"split {split!r} gives no full batch: clips per bucket {counts} (and "
        f"{int((ids < 0).sum())} too short for any bucket) for batch sizes "
        f"{[b[3] for b in data.buckets]}; lower the batch sizes or add data")
  return load


def _finish(ds: grain.MapDataset, data: ml_collections.ConfigDict) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.read_threads,
                                            prefetch_buffer_size=data.prefetch))
  if data.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.worker_count,
                                                     per_worker_buffer_size=data.prefetch))
  return it


def make_train_dataset(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                       process_count: int | None = None, split: str | None = None
                       ) -> grain.IterDataset:
  """The endless training stream of this process (shuffled anew every epoch)."""
  data, process_index, process_count = _resolve(config, process_index, process_count)
  load = _loader(data, split or data.train_split, training=True,
                 process_index=process_index, process_count=process_count)
  return _finish(grain.MapDataset.range(sys.maxsize).map(load), data)


def make_train_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                        process_count: int | None = None, split: str | None = None
                        ) -> grain.DatasetIterator:
  """Endless iterator of this process's training batches; has get_state()/set_state().

  Save it with the train state via `grain.checkpoint.CheckpointSave(iterator)` in Orbax.
  """
  return iter(make_train_dataset(config, process_index=process_index,
                                 process_count=process_count, split=split))


def make_eval_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                       process_count: int | None = None, split: str | None = None
                       ) -> grain.DatasetIterator:
  """One pass over a split, in order, fixed windows (data.clip.window), captions[0]; finite.

  Each bucket's last batch is padded to full size; `valid` marks the real clips, and the
  valid clips of all processes together are exactly the split (minus clips too short for
  every bucket).
  """
  data, process_index, process_count = _resolve(config, process_index, process_count)
  load = _loader(data, split or data.eval_split, training=False,
                 process_index=process_index, process_count=process_count)
  return iter(_finish(grain.MapDataset.range(load.batches_per_epoch).map(load), data))


def train_batches_per_epoch(config: ml_collections.ConfigDict, split: str | None = None) -> int:
  """Global batches in one training epoch (for logging epochs)."""
  data = config.data if "data" in config else config
  split = split or data.train_split
  return buckets_lib.batches_per_epoch(_bucket_ids(data, split),
                                       [int(b[3]) for b in data.buckets])

"""Latents and text embeddings encoded once, ahead of training, and batches that read them.

  vidgen data cache --config=configs/t2v_tiny.py --config.model.vae.workdir=VAE_WORKDIR

`write_cache(config)` encodes every clip of the train and eval splits with the frozen
autoencoder of `config.model.vae.workdir` (latent mean, normalised with its statistics) and,
when the text encoder is frozen (`config.model.text.checkpoint`, or `text.frozen`: its random
init), every caption of every clip (embeddings + padding mask). Clips are taken at their
bucket's shape with the fixed windows of the eval pipeline (`data.clip.window`: centered or
from the first frame; `sample_clip(..., rng=None)`), so a clip has one cached latent.

Layout, next to the dataset (`datasets.dataset_root(data)/cache/`):
    latents-KEY/  manifest.json, SPLIT_buckets.npy int32 [N] (bucket per clip, -1: none),
                  SPLIT_rows.npy int32 [N] (row in its bucket's array), SPLIT_fps.npy [N],
                  SPLIT_captions.json, SPLIT_bK.npy float32 [n_K, T', H', W', C] per bucket K
    text-KEY/     manifest.json, SPLIT_offsets.npy int64 [N + 1] (clip i's captions are rows
                  offsets[i]:offsets[i + 1]), SPLIT_embeddings.npy [M, L, D], SPLIT_mask.npy
                  bool [M, L]
KEY hashes everything the stored values depend on (dataset, clip and bucket settings, the
autoencoder's files; the tokenizer and text encoder), so a changed setting never reads a stale
cache. Arrays are .npy files read as memory maps; the manifest is written last and marks a
cache complete.

The batches (`make_train_iterator`, `make_eval_iterator`) follow the pipeline's plan exactly
(vidgen.data.pipeline: buckets, per-epoch shuffle, process slices, iterator state for resume);
they carry `latents` [B, T', H', W', C] instead of `video` when `config.model.latent =
"cached"`, and `text_embeddings` [B, L, D] (with `text_mask` from the cache) when
`config.model.text.cached`. Captions are drawn as the pipeline draws them (per seed, epoch and
clip; captions[0] for eval); random crop windows are not used: latents are the fixed ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any

import grain
import ml_collections
import numpy as np

from vidgen.data import config as config_lib
from vidgen.data import datasets, pipeline
from vidgen.errors import VidgenError

CACHE_DIR = "cache"
MANIFEST = "manifest.json"
VERSION = 1


# ----------------------------------------------------------------------------- what and where

def uses_cache(config: ml_collections.ConfigDict) -> bool:
  """Whether this (t2v) config trains on cached latents or cached text embeddings."""
  if "model" not in config:
    return False
  m = config.model
  return m.get("latent") == "cached" or bool("text" in m and m.text.get("cached"))


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()[:16]


def _data_identity(data: ml_collections.ConfigDict) -> dict:
  """The data settings that decide which pixels each clip's latent encodes."""
  source = data.world.to_dict() if data.dataset == "shapes_world" else data.folder.to_dict()
  return {"dataset": data.dataset, "root": os.path.abspath(datasets.dataset_root(data)),
          "source": source, "clip": data.clip.to_dict(),
          "buckets": [list(b[:3]) for b in data.buckets],
          "bucket_weights": list(data.bucket_weights),
          "aspect_tolerance": data.aspect_tolerance, "shuffle_seed": data.shuffle_seed}


def latent_key(config: ml_collections.ConfigDict) -> str:
  """Hash of the data settings and the autoencoder's exported files."""
  from vidgen.train import t2v_task, vae_task
  export = os.path.join(t2v_task.vae_workdir(config.model), vae_task.EXPORT_DIR)
  files = {}
  for name in ("params.msgpack", "vae_config.json", vae_task.STATS_FILE):
    path = os.path.join(export, name)
    if not os.path.isfile(path):
      raise VidgenError(f"no trained autoencoder with latent statistics in {export} "
                        f"({name} is missing); train and export it first (vidgen train "
                        "--config=configs/vae_tiny.py, then vidgen evaluate)")
    files[name] = _file_digest(path)
  return _digest({"v": VERSION, "data": _data_identity(config.data), "vae": files})


def text_key(config: ml_collections.ConfigDict) -> str:
  """Hash of the dataset, tokenizer, caption length and frozen text encoder (its checkpoint's
  files, or its random init's seed)."""
  data, text = config.data, config.model.text
  tokenizer = config_lib.tokenizer_path(data)
  if not os.path.isfile(tokenizer):
    raise VidgenError(f"no caption tokenizer at {tokenizer}; run `vidgen data tokenizer "
                      "--config=...` first")
  if text.checkpoint:
    ckpt = os.path.abspath(text.checkpoint)
    stamp = [(p, os.path.getsize(p), os.path.getmtime(p)) for p in _files_under(ckpt)]
  else:  # Frozen at its random init: the seed, the vocabulary and the PRNG's implementation.
    import jax
    stamp = {"random_init": int(text.get("seed", 0)), "jax": jax.__version__,
             "vocab": int(data.tokenizer.vocab_size)}
    if text.get("relpos_slopes"):  # Only when set: earlier caches keep their keys.
      stamp["relpos"] = [list(text.relpos_slopes), bool(text.get("relpos_causal", False))]
  identity = {"v": VERSION, "root": os.path.abspath(datasets.dataset_root(data)),
              "source": _data_identity(data)["source"],
              "tokenizer": _file_digest(tokenizer), "max_len": data.tokenizer.max_len,
              "checkpoint": stamp, "variant": text.variant, "dit": config.model.variant}
  from vidgen.train import t2v_task
  boundaries = t2v_task.clause_boundaries(config)
  if boundaries:  # Only with clause bags: earlier caches keep their keys.
    identity["clause_bags"] = list(boundaries)
  return _digest(identity)


def _files_under(path: str) -> list[str]:
  if os.path.isdir(path):
    return sorted(os.path.join(path, f) for f in os.listdir(path))
  if os.path.isfile(path):
    return [path]
  raise VidgenError(f"config.model.text.checkpoint={path!r} does not exist")


def cache_root(data: ml_collections.ConfigDict) -> str:
  return os.path.join(datasets.dataset_root(data), CACHE_DIR)


def latent_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.join(cache_root(config.data), f"latents-{latent_key(config)}")


def text_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.join(cache_root(config.data), f"text-{text_key(config)}")


def read_manifest(path: str, what: str) -> dict:
  """The manifest of a complete cache directory (a clear error when it is not there)."""
  manifest = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest):
    raise VidgenError(f"no cached {what} at {path} for these settings; run `vidgen data "
                      "cache --config=...` with the same config (and overrides) first")
  with open(manifest) as f:
    return json.load(f)


# ----------------------------------------------------------------------------- writing

def _splits(data: ml_collections.ConfigDict) -> list[str]:
  sizes = datasets.split_sizes(data)
  return [s for s in dict.fromkeys((data.train_split, data.eval_split)) if s in sizes]


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  if x.shape[0] == n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)])


def _finish_dir(tmp: str, final: str, manifest: dict) -> None:
  with open(os.path.join(tmp, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  if os.path.isdir(final):
    shutil.rmtree(final)
  os.replace(tmp, final)


def write_latents(config: ml_collections.ConfigDict, *, batch_size: int = 16,
                  log=print) -> str:
  """Encodes every clip of the train and eval splits; returns the cache directory."""
  import jax
  import jax.numpy as jnp
  from vidgen.train import t2v_task
  data = config.data
  final = latent_dir(config)
  if os.path.isfile(os.path.join(final, MANIFEST)):
    log(f"latents already cached at {final}")
    return final
  module, params, stats = t2v_task.load_frozen_vae(t2v_task.vae_workdir(config.model))
  encode = jax.jit(lambda p, v: stats.normalize(
      module.apply({"params": p}, v.astype(jnp.float32) / 127.5 - 1.0,
                   method="encode")[0].astype(jnp.float32)))
  tmp = final + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  manifest = {"version": VERSION, "kind": "latents", "key": os.path.basename(final),
              "vae_workdir": os.path.abspath(t2v_task.vae_workdir(config.model)),
              "data": _data_identity(data), "splits": {}}
  load = pipeline.LoadBatch  # For its record reader (_read).
  for split in _splits(data):
    start = time.time()
    ids = pipeline._bucket_ids(data, split)
    source = datasets.open_source(data, split)
    reader = load(data, split, ids, training=False, process_index=0, process_count=1,
                  tokenizer_path="")
    rows = np.full(len(ids), -1, np.int32)
    fps = np.zeros(len(ids), np.float32)
    captions: list[list[str]] = [[] for _ in range(len(ids))]
    shapes = {}
    for bucket, spec in enumerate(data.buckets):
      members = np.flatnonzero(ids == bucket)
      if not len(members):
        continue
      shape = tuple(int(x) for x in spec[:3])
      out = None
      for lo in range(0, len(members), batch_size):
        chunk = members[lo:lo + batch_size]
        videos = []
        for index in chunk:
          video, src_fps, texts = reader._read(source[int(index)])
          clip, fps[index] = pipeline.sample_clip(video, src_fps, shape, data.clip, None)
          videos.append(clip)
          captions[index] = texts
        z = np.asarray(encode(params, jnp.asarray(_pad_to(np.stack(videos), batch_size))))
        if out is None:
          out = np.lib.format.open_memmap(os.path.join(tmp, f"{split}_b{bucket}.npy"), "w+",
                                          np.float32, (len(members),) + z.shape[1:])
        out[lo:lo + len(chunk)] = z[:len(chunk)]
      rows[members] = np.arange(len(members), dtype=np.int32)
      out.flush()
      shapes[bucket] = list(out.shape)
      del out
    for index in np.flatnonzero(ids < 0):  # Too short for every bucket: captions only.
      captions[index] = reader._read(source[int(index)])[2]
    np.save(os.path.join(tmp, f"{split}_buckets.npy"), ids.astype(np.int32))
    np.save(os.path.join(tmp, f"{split}_rows.npy"), rows)
    np.save(os.path.join(tmp, f"{split}_fps.npy"), fps)
    with open(os.path.join(tmp, f"{split}_captions.json"), "w") as f:
      json.dump(captions, f)
    manifest["splits"][split] = {"clips": len(ids), "cached": int((ids >= 0).sum()),
                                 "shapes": {str(k): v for k, v in shapes.items()}}
    log(f"  {split:<11} {int((ids >= 0).sum())} clips encoded in {time.time() - start:.1f}s "
        f"(latents {', '.join(str(tuple(v[1:])) for v in shapes.values())})")
  _finish_dir(tmp, final, manifest)
  log(f"latents cached at {final}")
  return final


def write_text(config: ml_collections.ConfigDict, *, batch_size: int = 64, dtype: str = "float32",
               log=print) -> str:
  """Embeds every caption of every clip of the train and eval splits with the frozen text
  encoder; returns the cache directory."""
  import jax
  import jax.numpy as jnp
  from vidgen.data.tokenizer import Tokenizer
  from vidgen.models import text as text_lib
  from vidgen.train import t2v_task
  data = config.data
  if not t2v_task.text_is_frozen(config.model):
    raise VidgenError("text embeddings are cached only for a frozen encoder: set "
                      "config.model.text.checkpoint or config.model.text.frozen=True (the "
                      "tiny encoder trains jointly)")
  final = text_dir(config)
  if os.path.isfile(os.path.join(final, MANIFEST)):
    log(f"text embeddings already cached at {final}")
    return final
  module, variables = t2v_task.frozen_text_encoder(config)
  encode = jax.jit(lambda v, t, m: text_lib.encode_text(module, v, t, m)[0])
  tokenizer = Tokenizer(config_lib.tokenizer_path(data))
  max_len = int(data.tokenizer.max_len)
  tmp = final + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  manifest = {"version": VERSION, "kind": "text", "key": os.path.basename(final),
              "checkpoint": (os.path.abspath(config.model.text.checkpoint)
                             if config.model.text.checkpoint else ""),
              "seed": int(config.model.text.get("seed", 0)), "max_len": max_len,
              "dim": int(module.config.output_dim), "dtype": dtype, "splits": {}}
  for split in _splits(data):
    start = time.time()
    source = datasets.open_source(data, split)
    texts = [json.loads(datasets.as_text(source[i]["captions"])) for i in range(len(source))]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
    flat = [c for t in texts for c in t]
    emb = np.lib.format.open_memmap(os.path.join(tmp, f"{split}_embeddings.npy"), "w+",
                                    np.dtype(dtype), (len(flat), max_len, module.config.output_dim))
    masks = np.zeros((len(flat), max_len), bool)
    for lo in range(0, len(flat), batch_size):
      ids, mask = tokenizer.encode(flat[lo:lo + batch_size], max_len)
      n = ids.shape[0]
      e = encode(variables, jnp.asarray(_pad_to(ids, batch_size)),
                 jnp.asarray(_pad_to(mask, batch_size)))
      emb[lo:lo + n] = np.asarray(e[:n]).astype(dtype)
      masks[lo:lo + n] = mask
    emb.flush()
    del emb
    np.save(os.path.join(tmp, f"{split}_mask.npy"), masks)
    np.save(os.path.join(tmp, f"{split}_offsets.npy"), offsets)
    manifest["splits"][split] = {"clips": len(texts), "captions": len(flat)}
    log(f"  {split:<11} {len(flat)} captions of {len(texts)} clips embedded in "
        f"{time.time() - start:.1f}s")
  _finish_dir(tmp, final, manifest)
  log(f"text embeddings cached at {final}")
  return final


def write_cache(config: ml_collections.ConfigDict, log=print) -> dict[str, str]:
  """Caches what `config` can use: latents (latent "vae" or "cached") and, for a frozen text
  encoder, text embeddings. Returns {"latents": dir, "text": dir} for what it wrote."""
  if "model" not in config or config.get("task") not in (None, "t2v"):
    raise VidgenError("`vidgen data cache` needs a text-to-video config (config.task='t2v', "
                      "e.g. configs/t2v_tiny.py)")
  out = {}
  if config.model.latent in ("vae", "cached"):
    out["latents"] = write_latents(config, log=log)
  from vidgen.train import t2v_task
  if t2v_task.text_is_frozen(config.model):
    out["text"] = write_text(config, log=log)
  if not out:
    raise VidgenError("nothing to cache: config.model.latent is 'pixel' and the text encoder "
                      "trains jointly (set config.model.latent=vae and "
                      "config.model.vae.workdir, or config.model.text.checkpoint or "
                      "config.model.text.frozen=True)")
  return out


# ----------------------------------------------------------------------------- reading

class CachedLoadBatch(pipeline.LoadBatch):
  """The pipeline's batch-number -> batch map, reading cached arrays by clip index.

  Same plan, process slice and per-clip rng as LoadBatch; `latents` replaces `video` when
  `latents_path` is set, `text_embeddings` (+ cached `text_mask`) are added when `text_path`
  is set.
  """

  def __init__(self, data, split, bucket_ids, *, latents_path: str | None,
               text_path: str | None, **kwargs):
    super().__init__(data, split, bucket_ids, **kwargs)
    self._latents_path = latents_path
    self._text_path = text_path
    self._arrays = None

  def __getstate__(self):
    state = super().__getstate__()
    state["_arrays"] = None  # Memory maps are reopened in each worker.
    return state

  def _cached(self) -> dict[str, Any]:
    if self._arrays is None:
      arrays, split = {}, self._split
      if self._latents_path:
        p = self._latents_path
        arrays["rows"] = np.load(os.path.join(p, f"{split}_rows.npy"))
        arrays["fps"] = np.load(os.path.join(p, f"{split}_fps.npy"))
        with open(os.path.join(p, f"{split}_captions.json")) as f:
          arrays["captions"] = json.load(f)
        for b in range(len(self.config.buckets)):
          path = os.path.join(p, f"{split}_b{b}.npy")
          if os.path.isfile(path):
            arrays[f"b{b}"] = np.load(path, mmap_mode="r")
      if self._text_path:
        p = self._text_path
        arrays["offsets"] = np.load(os.path.join(p, f"{split}_offsets.npy"))
        arrays["embeddings"] = np.load(os.path.join(p, f"{split}_embeddings.npy"),
                                       mmap_mode="r")
        arrays["mask"] = np.load(os.path.join(p, f"{split}_mask.npy"), mmap_mode="r")
      self._arrays = arrays
    return self._arrays

  def _open_tokenizer(self):
    if self._tokenizer is None:
      from vidgen.data.tokenizer import Tokenizer
      self._tokenizer = Tokenizer(self._tokenizer_path)
    return self._tokenizer

  def map(self, element: int) -> dict[str, np.ndarray]:
    epoch, bucket, indices, valid = self.local_part(element)
    cached = self._cached()
    tokenizer = self._open_tokenizer()
    shape = tuple(int(x) for x in self.config.buckets[bucket][:3])
    latents, videos, fps, captions, picks = [], [], [], [], []
    for index in indices:
      index = int(index)
      rng = (np.random.default_rng([self.config.shuffle_seed, epoch, index])
             if self._training else None)
      if self._latents_path:
        latents.append(cached[f"b{bucket}"][cached["rows"][index]])
        fps.append(cached["fps"][index])
        texts = cached["captions"][index]
      else:  # Video on the fly, exactly as the pipeline reads it (same rng draws).
        if self._source is None:
          self._source = datasets.open_source(self.config, self._split)
        video, clip_fps, texts = self._read(self._source[index])
        clip, out_fps = pipeline.sample_clip(video, clip_fps, shape, self.config.clip, rng)
        videos.append(clip)
        fps.append(out_fps)
      pick = int(rng.integers(len(texts))) if rng is not None else 0
      captions.append(texts[pick])
      picks.append(pick)
    tokens, mask = tokenizer.encode(captions, self.config.tokenizer.max_len)
    out = {"tokens": tokens, "text_mask": mask, "fps": np.asarray(fps, np.float32)}
    if self._latents_path:
      out["latents"] = np.stack(latents).astype(np.float32)
    else:
      out["video"] = np.stack(videos)
    if self._text_path:
      rows = [int(cached["offsets"][int(i)]) + p for i, p in zip(indices, picks)]
      out["text_embeddings"] = np.asarray(cached["embeddings"][rows], np.float32)
      out["text_mask"] = np.asarray(cached["mask"][rows], bool)
    if not self._training:
      out["valid"] = valid.copy()
    return out


def make_loader(config: ml_collections.ConfigDict, split: str, *, training: bool,
                process_index: int | None = None, process_count: int | None = None
                ) -> CachedLoadBatch:
  """The cached counterpart of pipeline.make_loader (checks the cache matches the config)."""
  data, process_index, process_count = pipeline._resolve(config, process_index, process_count)
  plain = pipeline._loader(data, split, training=training, process_index=process_index,
                           process_count=process_count)  # Checks tokenizer and batches.
  ids = plain._bucket_ids
  m = config.model
  latents_path = text_path = None
  if m.latent == "cached":
    latents_path = latent_dir(config)
    manifest = read_manifest(latents_path, "latents")
    if split not in manifest["splits"]:
      raise VidgenError(f"the latent cache at {latents_path} has no split {split!r}; "
                        f"it has {sorted(manifest['splits'])}")
    stored = np.load(os.path.join(latents_path, f"{split}_buckets.npy"))
    if not np.array_equal(stored, ids):
      raise VidgenError(f"the latent cache at {latents_path} was written for other bucket "
                        "assignments; rerun `vidgen data cache`")
  if m.text.get("cached"):
    from vidgen.train import t2v_task
    t2v_task.check_text_config(m)
    text_path = text_dir(config)
    manifest = read_manifest(text_path, "text embeddings")
    if split not in manifest["splits"]:
      raise VidgenError(f"the text cache at {text_path} has no split {split!r}")
  return CachedLoadBatch(data, split, ids, training=training, process_index=process_index,
                         process_count=process_count,
                         tokenizer_path=config_lib.tokenizer_path(data),
                         latents_path=latents_path, text_path=text_path)


def make_train_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                        process_count: int | None = None, split: str | None = None
                        ) -> grain.DatasetIterator:
  """pipeline.make_train_iterator with cached arrays (same plan, same resume state)."""
  data = config.data
  load = make_loader(config, split or data.train_split, training=True,
                     process_index=process_index, process_count=process_count)
  return iter(pipeline._finish(grain.MapDataset.range(sys.maxsize).map(load), data))


def make_eval_iterator(config: ml_collections.ConfigDict, *, process_index: int | None = None,
                       process_count: int | None = None, split: str | None = None
                       ) -> grain.DatasetIterator:
  """pipeline.make_eval_iterator with cached arrays (fixed windows, captions[0], `valid`)."""
  data = config.data
  load = make_loader(config, split or data.eval_split, training=False,
                     process_index=process_index, process_count=process_count)
  return iter(pipeline._finish(grain.MapDataset.range(load.batches_per_epoch).map(load), data))

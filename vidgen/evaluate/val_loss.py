"""Validation loss of the text-to-video transformer at fixed timesteps, per bucket.

The cheap signal that tracks quality during training: for every clip of a split (the eval
iterator: one pass, in order, captions[0]) and every t in `timesteps`, the rectified-flow
velocity MSE ||v(x_t, t) - (eps - x0)||^2 of the plain text-to-video mode (no conditioning
frames, no caption dropout), with noise drawn from a key fixed per (batch, timestep), so the
same params always give the same numbers. Rows per bucket shape (frames x height x width of
the video) and one "all" row, each with one column per t and their mean.

  rows = val_loss(task, params, config)                       # a table for reports
  task.evaluate = hook(task, config)                          # the trainer's eval hook
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen import diffusion
from vidgen.errors import VidgenError

TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)
# eval_fn(params, batch, key) -> per-clip MSE f32 [len(timesteps), B]
EvalFn = Callable[[Any, Mapping[str, Any], jax.Array], jax.Array]


def column(t: float) -> str:
  """The table column of timestep t, e.g. "t=0.50"."""
  return f"t={t:.2f}"


def make_eval_fn(task: Any, timesteps: Sequence[float] = TIMESTEPS) -> EvalFn:
  """A jitted (params, batch, key) -> per-clip MSE [len(timesteps), B] of a T2V task.

  jit keys its cache on the batch shapes, so each bucket shape compiles once; the timesteps
  run as one `lax.map` over a single traced forward pass.
  """
  ts = jnp.asarray(timesteps, jnp.float32)

  def per_clip(params, batch, key):
    x0 = task.latents(batch)
    mask = jnp.asarray(batch["text_mask"], bool)
    if "text_embeddings" in batch:
      text = jnp.asarray(batch["text_embeddings"], jnp.float32)
    else:
      text = task.text(params, batch["tokens"], mask)
    b, frames = x0.shape[:2]
    fps = batch.get("fps")

    def at(i):
      eps = jax.random.normal(jax.random.fold_in(key, i), x0.shape, jnp.float32)
      # Plain text-to-video: every frame is generated (no conditioning), t is fixed.
      t_frames = jnp.full((b, frames), ts[i], jnp.float32)
      v = task.velocity(params, diffusion.add_noise(x0, eps, t_frames), t_frames, text, mask,
                        fps)
      err = jnp.square(v.astype(jnp.float32) - diffusion.velocity_target(x0, eps))
      return jnp.mean(err.reshape(b, -1), axis=1)

    return jax.lax.map(at, jnp.arange(len(timesteps)))

  return jax.jit(per_clip)


def eval_batches(config: Any, split: str) -> Iterable[Mapping[str, np.ndarray]]:
  """The split's eval batches, this process only: cached latents / text embeddings where the
  trainer reads them (vidgen.data.cache), else the plain pipeline's video and tokens."""
  from vidgen.data import cache, pipeline  # pylint: disable=g-import-not-at-top
  source = cache if cache.uses_cache(config) else pipeline
  return source.make_eval_iterator(config, process_index=0, process_count=1, split=split)


def val_loss(task: Any, params: Any, config: Any, *, split: str = "validation",
             timesteps: Sequence[float] = TIMESTEPS, max_batches: int | None = None,
             seed: int = 0, batches: Iterable[Mapping[str, Any]] | None = None,
             eval_fn: EvalFn | None = None) -> list[dict[str, Any]]:
  """Velocity MSE at fixed timesteps per bucket shape, then over all clips.

  batches: an iterable of batches instead of the split's eval iterator (tests); clips with
  `valid` False are left out. eval_fn: a `make_eval_fn(task, timesteps)` to reuse (its
  compiled programs survive between calls). Returns rows {"bucket": "TxHxW" (of the video,
  or of the latents for cached batches), "clips": n, "t=0.10": mse, ..., "mean": mean over
  t}, buckets in order of appearance, "all" last.
  """
  timesteps = tuple(float(t) for t in timesteps)
  if not timesteps:
    raise VidgenError("val_loss needs at least one timestep")
  eval_fn = eval_fn or make_eval_fn(task, timesteps)
  params = nn.meta.unbox(params)
  if batches is None:
    batches = eval_batches(config, split)
  key = jax.random.key(seed)
  sums: dict[str, np.ndarray] = {}
  counts: dict[str, int] = {}
  for index, batch in enumerate(batches):
    if max_batches is not None and index >= max_batches:
      break
    valid = batch.get("valid")
    batch = {k: v for k, v in batch.items() if k != "valid"}
    shape = np.shape(batch["video"] if "video" in batch else batch["latents"])
    name = "x".join(str(int(s)) for s in shape[1:4])
    mse = np.asarray(jax.device_get(eval_fn(params, batch, jax.random.fold_in(key, index))),
                     np.float64)  # [len(timesteps), B]
    keep = np.ones(mse.shape[1], bool) if valid is None else np.asarray(valid, bool)
    sums[name] = sums.get(name, 0.0) + mse[:, keep].sum(axis=1)
    counts[name] = counts.get(name, 0) + int(keep.sum())
  if not counts or sum(counts.values()) == 0:
    raise VidgenError(f"val_loss: no valid clips in split {split!r}")

  def row(name: str, total: np.ndarray, n: int) -> dict[str, Any]:
    per_t = total / max(n, 1)
    return {"bucket": name, "clips": n, **{column(t): float(v) for t, v in zip(timesteps, per_t)},
            "mean": float(per_t.mean())}

  rows = [row(name, sums[name], counts[name]) for name in counts if counts[name]]
  rows.append(row("all", sum(sums.values()), sum(counts.values())))
  return rows


def scalars(rows: Sequence[Mapping[str, Any]], prefix: str = "val") -> dict[str, float]:
  """Flat TensorBoard scalars of val_loss rows: val/loss (all clips, mean over t),
  val/loss_t=0.50 per t, and val/TxHxW/loss per bucket."""
  out = {}
  for r in rows:
    if r["bucket"] == "all":
      out[f"{prefix}/loss"] = r["mean"]
      out.update({f"{prefix}/loss_{k}": v for k, v in r.items() if k.startswith("t=")})
    else:
      out[f"{prefix}/{r['bucket']}/loss"] = r["mean"]
  return out


def hook(task: Any, config: Any, *, split: str | None = None,
         timesteps: Sequence[float] = TIMESTEPS, max_batches: int | None = None,
         seed: int = 0) -> Callable[[Any, int, str], dict[str, float]]:
  """The trainer's `task.evaluate(params, step, workdir) -> scalars` for a T2V task.

  Defaults: config.data.eval_split and config.train.eval_max_batches (0 = the whole split).
  The jitted function is built once, so each bucket shape compiles once per run.
  """
  if jax.process_count() > 1:
    # Eval batches here are host-local numpy; sharded multi-host params would need them made
    # global (shd.to_global) and a per-process slice of the split.
    raise VidgenError("the validation-loss hook runs on one process only; set "
                      "train.eval_every=0 for multi-host runs and evaluate the checkpoint "
                      "with `vidgen evaluate --val-loss`")
  split = split or config.data.get("eval_split", "validation")
  if max_batches is None:
    max_batches = int(config.train.get("eval_max_batches", 0)) or None
  eval_fn = make_eval_fn(task, timesteps)

  def evaluate(params: Any, step: int, workdir: str) -> dict[str, float]:
    del step, workdir
    rows = val_loss(task, params, config, split=split, timesteps=timesteps,
                    max_batches=max_batches, seed=seed, eval_fn=eval_fn)
    return scalars(rows)

  return evaluate

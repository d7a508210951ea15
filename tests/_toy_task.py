"""A toy denoising task for trainer tests: tiny, logical axis names, synthetic grain data.

Batches follow docs/design.md (`video`, `tokens`, `text_mask`, `fps`). A batch whose `fps`
is NaN makes the loss NaN (non-finite tests pick such batches by index).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def get_data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.global_batch = 8
  c.frames = 2
  c.height = 4
  c.width = 4
  c.text_length = 4
  c.vocab = 32
  c.nan_batches = ()  # indices of batches whose fps is NaN
  return c


def get_model_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.embed = 16
  c.mlp = 32
  return c


class ToyNet(nn.Module):
  embed: int
  mlp: int
  vocab: int
  inspect: Callable[[str, Any], None] | None = None

  def _record(self, name, x):
    if self.inspect is not None:
      jax.debug.inspect_array_sharding(x, callback=functools.partial(self.inspect, name))

  @nn.compact
  def __call__(self, x_BLC, tokens_BS):
    dense = lambda f, names, name: nn.Dense(
        f, name=name, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]))
    h = dense(self.embed, ("patch", "embed"), "proj_in")(x_BLC)
    text = nn.Embed(self.vocab, self.embed, name="text_embed", embedding_init=(
        nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed"))))(
            tokens_BS)
    h = h + text.mean(axis=1, keepdims=True)
    h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
    self._record("embed", h)
    h = nn.LayerNorm(name="norm", scale_init=nn.with_logical_partitioning(
        nn.initializers.ones, ("norm",)), bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros, ("norm",)))(h)
    u = nn.gelu(dense(self.mlp, ("embed", "mlp"), "up")(h))
    u = nn.with_logical_constraint(u, ("batch", "length", "mlp"))
    self._record("mlp", u)
    h = h + dense(self.embed, ("mlp", "embed"), "down")(u)
    return dense(x_BLC.shape[-1], ("embed", "patch"), "proj_out")(h)


class ToyTask:
  """Denoise the video: predict x from x + sigma * noise."""

  def __init__(self, config: ml_collections.ConfigDict, inspect=None):
    self.config = config
    m, d = config.model, config.data
    self.net = ToyNet(m.embed, m.mlp, d.vocab, inspect=inspect)

  def _inputs(self, batch):
    v = batch["video"]
    x = v.reshape(v.shape[0], -1, v.shape[-1]).astype(jnp.float32) / 127.5 - 1.0
    return x, batch["tokens"]

  def init(self, rng, batch):
    x, tokens = self._inputs(batch)
    return self.net.init(rng, x, tokens)["params"]

  def loss(self, params, batch, rng):
    x, tokens = self._inputs(batch)
    noise_rng, sigma_rng = jax.random.split(rng)
    sigma = jax.random.uniform(sigma_rng, (x.shape[0], 1, 1))
    pred = self.net.apply({"params": params}, x + sigma * jax.random.normal(noise_rng, x.shape),
                          tokens)
    mse = jnp.mean(jnp.square(pred - x))
    loss = mse + 0.0 * jnp.mean(batch["fps"])  # NaN fps -> NaN loss
    return loss, {"mse": mse, "tokens": jnp.asarray(x.shape[0] * x.shape[1], jnp.float32)}

  def flops_per_step(self, batch):
    v = batch["video"]
    tokens = v.shape[0] * int(np.prod(v.shape[1:4]))
    m = self.config.model
    per_token = 2 * (3 * m.embed + 2 * m.embed * m.mlp + m.embed * 3)
    return 3.0 * per_token * tokens

  def batch_spec(self) -> dict:
    d = self.config.data
    return {
        "video": jax.ShapeDtypeStruct((d.global_batch, d.frames, d.height, d.width, 3),
                                      np.uint8),
        "tokens": jax.ShapeDtypeStruct((d.global_batch, d.text_length), np.int32),
        "text_mask": jax.ShapeDtypeStruct((d.global_batch, d.text_length), np.bool_),
        "fps": jax.ShapeDtypeStruct((d.global_batch,), np.float32),
    }

  def make_train_iterator(self, config, *, process_index, process_count):
    return make_iterator(config, process_index=process_index, process_count=process_count)


def make_global_batch(index: int, *, seed: int, d: dict, process_index: int,
                      process_count: int) -> dict:
  """Global batch `index` (a pure function of seed and index), this process's rows."""
  rng = np.random.default_rng((seed, index))
  b = d["global_batch"]
  batch = {
      "video": rng.integers(0, 256, (b, d["frames"], d["height"], d["width"], 3), np.uint8),
      "tokens": rng.integers(1, d["vocab"], (b, d["text_length"]), np.int32),
      "text_mask": np.ones((b, d["text_length"]), np.bool_),
      "fps": np.full((b,), np.nan if index in d["nan_batches"] else 8.0, np.float32),
  }
  per = b // process_count
  return {k: v[process_index * per:(process_index + 1) * per] for k, v in batch.items()}


def make_iterator(config, *, process_index: int, process_count: int):
  """A checkpointable grain iterator over synthetic batches."""
  d = config.data.to_dict()
  d["nan_batches"] = tuple(d["nan_batches"])
  fn = functools.partial(make_global_batch, seed=config.seed, d=d,
                         process_index=process_index, process_count=process_count)
  return iter(grain.MapDataset.range(10**9).map(fn).to_iter_dataset())


def get_config() -> ml_collections.ConfigDict:
  from vidgen.train.config import get_mesh_config, get_train_config
  c = ml_collections.ConfigDict()
  c.task = "tests._toy_task:ToyTask"
  c.seed = 0
  c.data = get_data_config()
  c.model = get_model_config()
  c.train = get_train_config()
  c.train.steps = 8
  c.train.lr = 1e-2
  c.train.warmup_steps = 2
  c.train.log_every = 2
  c.train.checkpoint_every = 4
  c.train.ema_decay = 0.9
  c.train.progress_bar = False
  c.mesh = get_mesh_config()
  return c

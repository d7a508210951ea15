"""Text encoders: a T5-style encoder (tiny and trained jointly, or T5 v1.1 / umT5 sizes loaded
from a Hugging Face safetensors checkpoint and frozen), and helpers to precompute embeddings.

T5 v1.1 encoder: token embedding (no scaling), `num_layers` x [RMSNorm -> self-attention with
bucketed relative position bias (no 1/sqrt(d) scaling, no biases) -> residual; RMSNorm ->
gated GELU (tanh) MLP -> residual], final RMSNorm. T5 v1.1 computes the position bias in the
first layer and shares it; umT5 has one bias table per layer (`per_layer_relpos`).
Token id 0 is padding; `text_mask` says which tokens exist.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from vidgen.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Encoder hyperparameters (names follow Hugging Face's T5Config)."""
  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  num_heads: int = 6
  d_ff: int = 1024
  num_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  per_layer_relpos: bool = False  # umT5: every layer has its own bias table.
  layer_norm_epsilon: float = 1e-6
  # The position bias table's initialisation (training from scratch, or frozen at init; a
  # checkpoint overwrites it). Empty: T5's (normal, std d_model^-0.5). Otherwise one slope
  # m >= 0 per head: the bias is -m * distance, as ALiBi (each head attends mostly to nearby
  # words), and with `relative_attention_init_causal` the later words are masked out
  # (-1e4), so every word's feature takes in the words before it and none after.
  relative_attention_init_slopes: tuple[float, ...] = ()
  relative_attention_init_causal: bool = False
  # Clause bags (`clause_bags`): token ids that end a clause ('.', ',', ';', EOS). When
  # set, the encoder's output is [features ; clause bag], 2 * d_model wide.
  clause_boundaries: tuple[int, ...] = ()

  def __post_init__(self):  # From JSON the tuples come as lists; keep the config hashable.
    object.__setattr__(self, "relative_attention_init_slopes",
                       tuple(float(m) for m in self.relative_attention_init_slopes))
    object.__setattr__(self, "clause_boundaries", tuple(int(i) for i in self.clause_boundaries))
    slopes = self.relative_attention_init_slopes
    if slopes and (len(slopes) != self.num_heads or min(slopes) < 0):
      raise ValueError(f"relative_attention_init_slopes={slopes}: give one slope >= 0 per "
                       f"head ({self.num_heads}), or none for T5's initialisation")
    if self.relative_attention_init_causal and not slopes:
      raise ValueError("relative_attention_init_causal needs relative_attention_init_slopes")

  @property
  def output_dim(self) -> int:
    """Width of the encoder's output: d_model, twice that with clause bags."""
    return self.d_model * (2 if self.clause_boundaries else 1)


VARIANTS: dict[str, T5Config] = {
    # Trained jointly with the DiT; vocab_size is replaced by the tokenizer's.
    "tiny": T5Config(vocab_size=1024, d_model=128, d_kv=32, num_heads=4, d_ff=256,
                     num_layers=2),
    "small": T5Config(vocab_size=1024, d_model=256, d_kv=32, num_heads=8, d_ff=512,
                      num_layers=4),
    "t5_v1_1_small": T5Config(d_model=512, d_kv=64, num_heads=6, d_ff=1024, num_layers=8),
    "t5_v1_1_base": T5Config(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12),
    "t5_v1_1_large": T5Config(d_model=1024, d_kv=64, num_heads=16, d_ff=2816, num_layers=24),
    "t5_v1_1_xl": T5Config(d_model=2048, d_kv=64, num_heads=32, d_ff=5120, num_layers=24),
    "t5_v1_1_xxl": T5Config(d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24),
    "umt5_small": T5Config(vocab_size=256384, d_model=512, d_kv=64, num_heads=6, d_ff=1024,
                           num_layers=8, per_layer_relpos=True),
    "umt5_base": T5Config(vocab_size=256384, d_model=768, d_kv=64, num_heads=12, d_ff=2048,
                          num_layers=12, per_layer_relpos=True),
    "umt5_xxl": T5Config(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240,
                         num_layers=24, per_layer_relpos=True),
}


def get_t5_config(variant: str, **overrides) -> T5Config:
  if variant not in VARIANTS:
    raise ValueError(f"unknown text encoder variant {variant!r}; expected one of "
                     f"{list(VARIANTS)}")
  return dataclasses.replace(VARIANTS[variant], **overrides)


def relative_position_bucket(relative_position: np.ndarray | Array, num_buckets: int = 32,
                             max_distance: int = 128) -> Array:
  """T5's bidirectional buckets for (key - query) offsets: exact near, log-spaced far."""
  num_buckets //= 2
  rel = jnp.asarray(relative_position)
  buckets = (rel > 0).astype(jnp.int32) * num_buckets
  rel = jnp.abs(rel)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  large = max_exact + (jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / max_exact)
                       / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, rel, large)


def local_bias_table(config: T5Config) -> Array:
  """[buckets, heads] table of -slope * distance (each bucket's nearest distance), and with
  `relative_attention_init_causal` -1e4 for every bucket of a key after its query."""
  c = config
  dist = np.arange(-4 * c.relative_attention_max_distance, 4 * c.relative_attention_max_distance)
  buckets = relative_position_bucket(dist, c.relative_attention_num_buckets,
                                     c.relative_attention_max_distance)
  nearest = jnp.full(c.relative_attention_num_buckets, jnp.inf).at[buckets].min(np.abs(dist))
  nearest = jnp.where(jnp.isinf(nearest), 0.0, nearest)  # Buckets no offset reaches.
  table = -jnp.asarray(c.relative_attention_init_slopes)[None, :] * nearest[:, None]
  if c.relative_attention_init_causal:  # Buckets of positive offsets (key after query).
    table = table.at[c.relative_attention_num_buckets // 2:].set(-1e4)
  return table.astype(jnp.float32)


class RelativePositionBias(nn.Module):
  """Bias [1, heads, L, L] from bucketed relative positions."""
  config: T5Config
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, length: int) -> Array:
    c = self.config
    pos = np.arange(length)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None],
                                       c.relative_attention_num_buckets,
                                       c.relative_attention_max_distance)
    # T5's initialisation (HF `T5PreTrainedModel._init_weights`) for training from scratch,
    # or the local one of `relative_attention_init_slopes`; pretrained checkpoints overwrite it.
    init = nn.initializers.normal(c.d_model ** -0.5)
    if c.relative_attention_init_slopes:
      init = lambda key, shape, dtype: jnp.asarray(local_bias_table(c), dtype)
    table = self.param("embedding", layers.logical(init, (None, "heads")),
                       (c.relative_attention_num_buckets, c.num_heads), self.param_dtype)
    bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [L, L, heads]
    return jnp.transpose(bias, (2, 0, 1))[None]


class T5Layer(nn.Module):
  config: T5Config
  has_relpos: bool
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Optional[Array]) -> tuple[Array, Array]:
    c = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.has_relpos:
      bias = RelativePositionBias(c, self.param_dtype, name="relpos_bias")(x.shape[1])
    h = layers.RMSNorm(c.layer_norm_epsilon, name="attention_norm", **kw)(x)
    h = layers.MultiHeadAttention(
        c.num_heads, c.d_kv, scale=1.0, q_scale=1.0 / c.d_kv, implementation=self.attention,
        q_length_axis="text_length", kv_length_axis="text_length", name="attention",
        **kw)(h, kv_mask=mask, bias=bias)
    x = x + h
    h = layers.RMSNorm(c.layer_norm_epsilon, name="mlp_norm", **kw)(x)
    x = x + layers.Mlp(c.d_ff, gated=True, name="mlp", **kw)(h)
    return layers.constrain(x, ("batch", "text_length", "embed")), bias


def clause_bags(embeddings: Array, tokens: Array, mask: Array,
                boundaries: tuple[int, ...]) -> Array:
  """Each token's clause as a bag of words: the sum of the token embeddings of its clause over
  the square root of their number, [B, L, D] (zero at padding).

  A clause ends at (and includes) a boundary token; boundary tokens are not counted in any
  bag. "a red circle moves left . a blue square moves up" gives every token of the first
  sentence the bag {a, red, circle, moves, left} and of the second {a, blue, square, moves,
  up}: each object's words bound together, whatever their order within the clause.
  """
  mask = mask.astype(bool)
  is_end = jnp.isin(tokens, jnp.asarray(boundaries, tokens.dtype)) & mask
  clause = jnp.cumsum(is_end, axis=1) - is_end  # A boundary belongs to the clause it ends.
  counted = (mask & ~is_end).astype(jnp.float32)
  same = (clause[:, :, None] == clause[:, None, :]).astype(jnp.float32) * counted[:, None, :]
  bag = jnp.einsum("bij,bjd->bid", same, embeddings.astype(jnp.float32))
  bag = bag * jax.lax.rsqrt(jnp.maximum(same.sum(-1, keepdims=True), 1.0))
  return jnp.where(mask[..., None], bag, 0.0)


class T5Encoder(nn.Module):
  """T5 v1.1 / umT5 encoder: tokens [B, L] int, mask [B, L] bool -> [B, L, output_dim].

  With `config.clause_boundaries`, each token's feature is followed by its clause's bag of
  token embeddings (`clause_bags`): an encoder that mixes words by position alone (a frozen
  random one) says little about which words belong together, a clause bag says it exactly.
  """
  config: T5Config
  attention: str = "xla"
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:
    c = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embed = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                     embedding_init=layers.logical(nn.initializers.normal(1.0),
                                                   ("vocab", "embed")),
                     name="token_embed")
    e = embed(tokens.astype(jnp.int32))
    x = layers.constrain(e, ("batch", "text_length", "embed"))
    mask = mask.astype(bool)
    layer_cls = nn.remat(T5Layer) if self.remat else T5Layer
    bias = None
    for i in range(c.num_layers):
      has_relpos = i == 0 or c.per_layer_relpos
      x, bias = layer_cls(c, has_relpos, self.attention, name=f"layers_{i}", **kw)(
          x, mask, None if has_relpos else bias)
    x = layers.RMSNorm(c.layer_norm_epsilon, name="final_norm", **kw)(x)
    if c.clause_boundaries:
      bag = clause_bags(e, tokens, mask, c.clause_boundaries).astype(x.dtype)
      x = jnp.concatenate([x, bag], axis=-1)
    # Padding positions carry no information; zero them so caches compress and sums are clean.
    return jnp.where(mask[..., None], x, jnp.zeros_like(x))


# ---------------------------------------------------------------------------------------------
# Safetensors (numpy only: 8-byte little-endian header length, JSON header, raw data).

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads every tensor of a .safetensors file (memory-mapped)."""
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
  return out


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes tensors in the safetensors format (for tests and conversions)."""
  names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
  header, chunks, offset = {}, [], 0
  for name, value in tensors.items():
    value = np.ascontiguousarray(value)
    raw = value.tobytes()
    header[name] = dict(dtype=names[value.dtype], shape=list(value.shape),
                        data_offsets=[offset, offset + len(raw)])
    chunks.append(raw)
    offset += len(raw)
  blob = json.dumps(header).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for raw in chunks:
      f.write(raw)


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file, or a directory of them (sharded Hugging Face checkpoints)."""
  if os.path.isdir(path):
    tensors = {}
    for name in sorted(os.listdir(path)):
      if name.endswith(".safetensors"):
        tensors.update(read_safetensors(os.path.join(path, name)))
    if not tensors:
      raise FileNotFoundError(f"no .safetensors files in {path}")
    return tensors
  return read_safetensors(path)


def convert_hf_t5_encoder(tensors: Mapping[str, np.ndarray], config: T5Config,
                          dtype=np.float32) -> dict:
  """Hugging Face T5 v1.1 / umT5 encoder tensors -> T5Encoder params (plain arrays).

  HF Linear weights are [out, in]; our kernels are [in, heads, kv] / [heads, kv, out] /
  [in, out]. Raises KeyError naming the first missing tensor.
  """
  c = config

  def get(name):
    if name not in tensors:
      raise KeyError(f"checkpoint lacks {name!r} (is it a T5 v1.1 / umT5 checkpoint?)")
    return np.asarray(tensors[name], dtype=np.float32)

  embed_name = "shared.weight" if "shared.weight" in tensors else "encoder.embed_tokens.weight"
  params: dict[str, Any] = {"token_embed": {"embedding": get(embed_name)}}
  for i in range(c.num_layers):
    pre = f"encoder.block.{i}.layer"
    attn = f"{pre}.0.SelfAttention"
    layer = {
        "attention_norm": {"scale": get(f"{pre}.0.layer_norm.weight")},
        "attention": {
            "q": {"kernel": get(f"{attn}.q.weight").T.reshape(
                c.d_model, c.num_heads, c.d_kv)},
            "k": {"kernel": get(f"{attn}.k.weight").T.reshape(
                c.d_model, c.num_heads, c.d_kv)},
            "v": {"kernel": get(f"{attn}.v.weight").T.reshape(
                c.d_model, c.num_heads, c.d_kv)},
            "o": {"kernel": get(f"{attn}.o.weight").T.reshape(
                c.num_heads, c.d_kv, c.d_model)},
        },
        "mlp_norm": {"scale": get(f"{pre}.1.layer_norm.weight")},
        "mlp": {
            "wi_0": {"kernel": get(f"{pre}.1.DenseReluDense.wi_0.weight").T},
            "wi_1": {"kernel": get(f"{pre}.1.DenseReluDense.wi_1.weight").T},
            "wo": {"kernel": get(f"{pre}.1.DenseReluDense.wo.weight").T},
        },
    }
    if i == 0 or c.per_layer_relpos:
      layer["relpos_bias"] = {"embedding": get(f"{attn}.relative_attention_bias.weight")}
    params[f"layers_{i}"] = layer
  params["final_norm"] = {"scale": get("encoder.final_layer_norm.weight")}
  return jax.tree.map(lambda a: np.asarray(a, dtype), params)


def load_hf_t5_encoder(path: str, variant: str, dtype=np.float32,
                       **overrides) -> tuple[T5Encoder, dict]:
  """Loads a pretrained encoder from a safetensors file/dir: (module, {'params': ...}).

  The config's vocab size follows the checkpoint's embedding table. The params are plain
  (unboxed) arrays meant to stay frozen: wrap uses in `jax.lax.stop_gradient`.
  """
  tensors = read_checkpoint(path)
  embed = tensors.get("shared.weight", tensors.get("encoder.embed_tokens.weight"))
  if embed is not None:
    overrides.setdefault("vocab_size", embed.shape[0])
  config = get_t5_config(variant, **overrides)
  return T5Encoder(config), {"params": convert_hf_t5_encoder(tensors, config, dtype)}


def encode_text(module: T5Encoder, variables, tokens: Array, mask: Array,
                frozen: bool = True) -> tuple[Array, Array]:
  """tokens, mask -> (embeddings [B, L, D] f32, mask): the function cached ahead by the data
  side for frozen encoders (the mask travels with the embeddings)."""
  if frozen:
    variables = jax.lax.stop_gradient(variables)
  emb = module.apply(variables, tokens, mask)
  return emb.astype(jnp.float32), mask.astype(bool)

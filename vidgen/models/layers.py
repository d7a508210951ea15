"""Transformer layers shared by the diffusion transformer and the text encoder.

Flax linen; every parameter carries logical axis names (docs/design.md), every layer takes
`dtype` (compute) and `param_dtype`. Norms and softmax run in f32.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import attention as attention_lib

Array = jax.Array
Dtype = Any
Init = Callable[..., Array]


def logical(init: Init, names: Sequence[Optional[str]]) -> Init:
  """An initializer boxed with logical axis names."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: Array, names: Sequence[Optional[str]]) -> Array:
  """Logical sharding constraint on an activation (a no-op without rules/mesh)."""
  return nn.with_logical_constraint(x, tuple(names))


class DenseGeneral(nn.Module):
  """A linear map over `axis` of x to `features`, kernel [*in_dims, *features], no bias by
  default, logical names on the kernel.

  The kernel is created at its full rank (not flat then reshaped, as nn.DenseGeneral does):
  flax re-evaluates the init under the active mesh to check shapes, and a flat kernel under
  higher-rank logical names fails there. Init: truncated normal with variance
  `init_scale / fan_in` (fan_in = product of the contracted dims); `init_scale=0` gives zeros.
  """
  features: int | Sequence[int]
  kernel_axes: Sequence[Optional[str]]
  axis: int | Sequence[int] = -1
  use_bias: bool = False
  init_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axis = tuple(a % x.ndim for a in axis)
    n_in = len(axis)
    if len(self.kernel_axes) != n_in + len(features):
      raise ValueError(f"kernel_axes {self.kernel_axes} do not match {n_in} input and "
                       f"{len(features)} output dims")
    if self.init_scale == 0:
      init = nn.initializers.zeros_init()
    else:
      init = nn.initializers.variance_scaling(
          self.init_scale, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
          out_axis=tuple(range(n_in, n_in + len(features))))
    kernel = self.param("kernel", logical(init, self.kernel_axes),
                        tuple(x.shape[a] for a in axis) + features, self.param_dtype)
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            ((axis, tuple(range(n_in))), ((), ())))
    if self.use_bias:
      bias = self.param("bias", logical(nn.initializers.zeros_init(), self.kernel_axes[n_in:]),
                        features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class RMSNorm(nn.Module):
  """x / rms(x) * scale, in f32 (T5's LayerNorm). `use_scale=False` for adaLN blocks."""
  epsilon: float = 1e-6
  use_scale: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.epsilon)
    if self.use_scale:
      scale = self.param("scale", logical(nn.initializers.ones_init(), ("norm",)),
                         (x.shape[-1],), self.param_dtype)
      y = y * scale.astype(jnp.float32)
    return y.astype(self.dtype)


class LayerNorm(nn.Module):
  """Parameter-free LayerNorm in f32 (adaLN supplies shift and scale)."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).astype(self.dtype)


class Mlp(nn.Module):
  """Feed-forward: gated GELU (T5 v1.1: wo(gelu(wi_0 x) * wi_1 x)) or plain GELU."""
  hidden: int
  gated: bool = True
  use_bias: bool = False
  out_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    h = DenseGeneral(self.hidden, ("embed", "mlp"), name="wi_0", **kw)(x)
    h = nn.gelu(h, approximate=True)
    if self.gated:
      h = h * DenseGeneral(self.hidden, ("embed", "mlp"), name="wi_1", **kw)(x)
    h = constrain(h, ("batch", None, "mlp"))
    return DenseGeneral(x.shape[-1], ("mlp", "embed"), init_scale=self.out_scale, name="wo",
                        **kw)(h)


def rotate(x: Array, cos: Array, sin: Array) -> Array:
  """Applies rotary embedding to x [B, T, N, H]; cos/sin [B or 1, T, H/2] (pairs are halves)."""
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with optional QK RMS-norm, rotary positions and additive bias.

  Self-attention when `kv` is None. `rope` = (cos, sin) applies to queries and keys
  (self-attention only). Masks follow vidgen.models.attention.
  """
  num_heads: int
  head_dim: int
  qk_norm: bool = False
  use_bias: bool = False
  scale: Optional[float] = None  # None: 1/sqrt(head_dim). T5 uses 1.0.
  implementation: str = "auto"
  block_size: int = 512
  out_scale: float = 1.0
  q_scale: float = 1.0
  q_length_axis: str = "length"
  kv_length_axis: str = "length"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, kv: Optional[Array] = None, *,
               rope: Optional[tuple[Array, Array]] = None,
               q_segment_ids: Optional[Array] = None, kv_segment_ids: Optional[Array] = None,
               kv_mask: Optional[Array] = None, bias: Optional[Array] = None) -> Array:
    kv_in = x if kv is None else kv
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    proj = (self.num_heads, self.head_dim)
    names = ("embed", "heads", "kv")
    q = DenseGeneral(proj, names, init_scale=self.q_scale, name="q", **kw)(x)
    k = DenseGeneral(proj, names, name="k", **kw)(kv_in)
    v = DenseGeneral(proj, names, name="v", **kw)(kv_in)
    if self.qk_norm:
      q = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="q_norm")(q)
      k = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="k_norm")(k)
    if rope is not None:
      q, k = rotate(q, *rope), rotate(k, *rope)
    q = constrain(q, ("batch", self.q_length_axis, "heads", "kv"))
    k = constrain(k, ("batch", self.kv_length_axis, "heads", "kv"))
    v = constrain(v, ("batch", self.kv_length_axis, "heads", "kv"))
    out = attention_lib.attention(
        q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids, kv_mask=kv_mask,
        bias=bias, scale=self.scale, implementation=self.implementation,
        block_size=self.block_size)
    out = constrain(out, ("batch", self.q_length_axis, "heads", "kv"))
    return DenseGeneral(x.shape[-1], ("heads", "kv", "embed"), axis=(-2, -1),
                        init_scale=self.out_scale, name="o", **kw)(out)

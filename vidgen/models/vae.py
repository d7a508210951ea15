"""The causal 3D video autoencoder: one family, sizes from the VARIANTS table.

A video [B, T, H, W, 3] in [-1, 1] with T = 1 + tf*k frames becomes a latent video
[B, 1 + k, H/sf, W/sf, C]: the first frame is compressed on its own (an image is a one-frame
video), and every convolution is causal in time (a frame never sees later frames).

Causality is what makes streaming exact: every causal convolution carries the last
`kernel_t - stride_t` frames of its (padded) input in the "cache" variable collection, so a clip
encoded in chunks (frame 0, then `tf` frames at a time) gives the same latents as the whole clip
at once, with memory that does not grow with the clip. Norms are per pixel (RMS over channels),
so nothing mixes frames or distant pixels except the convolutions.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.errors import VidgenError

Dtype = Any
VIDEO_AXES = ("batch", "frames", "height", "width", "channels")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Sizes of one autoencoder. `*_channels[i]` is the width at spatial level i (0 = full)."""
  temporal_factor: int = 4
  spatial_factor: int = 4
  latent_channels: int = 8
  encoder_channels: tuple[int, ...] = (32, 64, 64)
  decoder_channels: tuple[int, ...] = (32, 64, 64)
  num_res_blocks: int = 1
  kernel_t: int = 3
  full_res_kernel_t: int = 3  # time kernel at the full-resolution level (1: per-frame convs)
  time_padding: str = "replicate"  # "replicate" (first frame) or "zeros"
  # "rms": RMS norm over channels before every activation; "none": no norms, which trains
  # several times faster for the small CPU variants (measured in docs/benchmarks.md).
  norm: str = "rms"
  logvar_min: float = -30.0
  logvar_max: float = 20.0

  @property
  def num_down(self) -> int:
    return int(round(math.log2(self.spatial_factor)))

  @property
  def num_time_down(self) -> int:
    return int(round(math.log2(self.temporal_factor)))

  def validate(self) -> "VAEConfig":
    if self.temporal_factor not in (1, 2, 4):
      raise VidgenError(f"temporal_factor must be 1, 2 or 4, got {self.temporal_factor}")
    if self.spatial_factor not in (2, 4, 8, 16):
      raise VidgenError(f"spatial_factor must be 2, 4, 8 or 16, got {self.spatial_factor}")
    if self.num_time_down > self.num_down:
      raise VidgenError("temporal_factor may not exceed spatial_factor (time downsampling "
                        "shares the spatial downsampling stages)")
    for name in ("encoder_channels", "decoder_channels"):
      if len(getattr(self, name)) != self.num_down + 1:
        raise VidgenError(f"{name} needs {self.num_down + 1} entries (one per spatial level "
                          f"for spatial_factor {self.spatial_factor}), got {getattr(self, name)}")
    if self.norm not in ("rms", "none"):
      raise VidgenError(f"norm must be 'rms' or 'none', got {self.norm!r}")
    if self.time_padding not in ("replicate", "zeros"):
      raise VidgenError(f"time_padding must be 'replicate' or 'zeros', got {self.time_padding!r}")
    return self


VARIANTS: dict[str, dict[str, Any]] = {
    # Trains in minutes on a CPU on the Shapes World: 4x temporal, 4x4 spatial, 8 channels.
    # Per-frame residual convolutions (kernel_t=1; frames mix only in the causal temporal
    # down- and upsampling): 1.9x the steps a second of 3-frame kernels on a 2-core CPU, and
    # 22.1 dB against 20.0 after the same 5.5 minutes of training (docs/benchmarks.md).
    "tiny": dict(temporal_factor=4, spatial_factor=4, latent_channels=8,
                 encoder_channels=(16, 32, 64), decoder_channels=(24, 32, 64),
                 num_res_blocks=1, kernel_t=1, full_res_kernel_t=1, norm="none"),
    # The class the large models use (Wan 2.1 / CogVideoX-like widths): 4x8x8, 16 channels.
    "4x8x8x16": dict(temporal_factor=4, spatial_factor=8, latent_channels=16,
                     encoder_channels=(96, 192, 384, 384),
                     decoder_channels=(96, 192, 384, 384), num_res_blocks=2),
}


def get_vae_config(variant: str, **overrides: Any) -> VAEConfig:
  """The VARIANTS entry `variant` with `overrides` (None values are ignored)."""
  if variant not in VARIANTS:
    raise VidgenError(f"unknown autoencoder variant {variant!r}; choose one of "
                      f"{', '.join(VARIANTS)}")
  fields = dict(VARIANTS[variant])
  known = {f.name for f in dataclasses.fields(VAEConfig)}
  for key, value in overrides.items():
    if key not in known:
      raise VidgenError(f"unknown autoencoder setting {key!r}; valid: {', '.join(sorted(known))}")
    if value is not None:
      fields[key] = tuple(value) if isinstance(value, list) else value
  return VAEConfig(**fields).validate()


# ----------------------------------------------------------------------------- shape checks

def _nearest_multiples(n: int, m: int) -> list[int]:
  lo = max(m, (n // m) * m)
  hi = -(-n // m) * m
  return sorted({lo, hi})


def check_frames(frames: int, temporal_factor: int) -> None:
  """Refuses frame counts not of the form 1 + tf*k, naming the nearest valid ones."""
  if frames < 1 or (frames - 1) % temporal_factor:
    k = max(0, (frames - 1) // temporal_factor)
    near = sorted({1 + temporal_factor * k, 1 + temporal_factor * (k + 1)})
    raise VidgenError(
        f"{frames} frames: the autoencoder (temporal factor {temporal_factor}) takes "
        f"1 + {temporal_factor}k frames; nearest valid: {' or '.join(map(str, near))}")


def check_size(height: int, width: int, spatial_factor: int) -> None:
  """Refuses sides that do not divide by the spatial factor, naming the nearest valid sizes."""
  bad = [(name, n) for name, n in (("height", height), ("width", width))
         if n < spatial_factor or n % spatial_factor]
  if bad:
    hs = _nearest_multiples(height, spatial_factor)
    ws = _nearest_multiples(width, spatial_factor)
    sizes = [f"{h}x{w}" for h in hs for w in ws]
    what = ", ".join(f"{name} {n}" for name, n in bad)
    raise VidgenError(
        f"{height}x{width} (HxW): {what} not a multiple of the spatial factor "
        f"{spatial_factor}; nearest valid sizes: {', '.join(sizes)}")


def latent_shape(frames: int, height: int, width: int, config: VAEConfig) -> tuple[int, ...]:
  """(T', H', W', C) of the latent of a valid (T, H, W) video."""
  check_frames(frames, config.temporal_factor)
  check_size(height, width, config.spatial_factor)
  return (1 + (frames - 1) // config.temporal_factor, height // config.spatial_factor,
          width // config.spatial_factor, config.latent_channels)


# ----------------------------------------------------------------------------- layers

def _constrain(x: jax.Array) -> jax.Array:
  return nn.with_logical_constraint(x, VIDEO_AXES)


class CausalConv3d(nn.Module):
  """A 3D convolution padded only on the past in time, with a streaming cache.

  At the start of a stream the past is `kernel_t - 1` copies of the first frame (or zeros).
  When the "cache" collection is mutable, the last `kernel_t - stride_t` frames of the padded
  input are stored and prepended to the next chunk instead.
  """
  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  strides: tuple[int, int, int] = (1, 1, 1)
  time_padding: str = "replicate"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kt, kh, kw = self.kernel
    st = self.strides[0]
    keep = kt - st
    if kt > 1:
      if self.has_variable("cache", "frames"):
        past = self.get_variable("cache", "frames").astype(x.dtype)
      else:
        first = x[:, :1] if self.time_padding == "replicate" else jnp.zeros_like(x[:, :1])
        past = jnp.repeat(first, kt - 1, axis=1)
      x = jnp.concatenate([past, x], axis=1)
      if keep > 0 and self.is_mutable_collection("cache") and not self.is_initializing():
        self.put_variable("cache", "frames", x[:, x.shape[1] - keep:])
    cin = x.shape[-1]
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, None, "conv_in", "conv_out")),
        (kt, kh, kw, cin, self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                      (self.features,), self.param_dtype)
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    spatial_pad = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    if kt == 1 and st == 1:
      # Per-frame: a 2D convolution over B*T frames (much faster than 3D on CPU).
      b, t, h, w, _ = x.shape
      y = jax.lax.conv_general_dilated(
          x.reshape(b * t, h, w, cin), kernel[0], self.strides[1:], spatial_pad,
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape((b, t) + y.shape[1:])
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, self.strides, ((0, 0),) + spatial_pad,
          dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return _constrain(y + bias)


class ChannelNorm(nn.Module):
  """RMS norm over channels at every pixel of every frame, in f32 (keeps streaming exact)."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.RMSNorm(epsilon=1e-6, dtype=jnp.float32, param_dtype=self.param_dtype,
                   scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                   name="norm")(x.astype(jnp.float32))
    return y.astype(self.dtype)


def norm_silu(x: jax.Array, norm: str, dtype: Dtype, param_dtype: Dtype) -> jax.Array:
  """silu(ChannelNorm(x)), or silu(x) for norm "none"; call inside a compact module."""
  return nn.silu(ChannelNorm(dtype, param_dtype)(x) if norm == "rms" else x)


class ResBlock(nn.Module):
  """norm-silu-conv twice, plus a (1x1x1-projected) skip."""
  features: int
  kernel_t: int = 3
  time_padding: str = "replicate"
  norm: str = "rms"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(time_padding=self.time_padding, dtype=self.dtype, param_dtype=self.param_dtype)
    k = (self.kernel_t, 3, 3)
    h = norm_silu(x, self.norm, self.dtype, self.param_dtype)
    h = CausalConv3d(self.features, k, **kw)(h)
    h = norm_silu(h, self.norm, self.dtype, self.param_dtype)
    h = CausalConv3d(self.features, k, **kw)(h)
    if x.shape[-1] != self.features:
      x = CausalConv3d(self.features, (1, 1, 1), **kw)(x)
    return _constrain(x + h)


class Downsample(nn.Module):
  """2x2 spatial (strided conv), then optionally 2x time (causal strided conv, frame 0 alone)."""
  features: int
  temporal: bool
  time_padding: str = "replicate"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(time_padding=self.time_padding, dtype=self.dtype, param_dtype=self.param_dtype)
    x = CausalConv3d(self.features, (1, 3, 3), (1, 2, 2), **kw)(x)
    if self.temporal:
      # Padded with 2 past frames and strided by 2, T = 1 + 2m frames give 1 + m: output j
      # sees frames 2j-2..2j, so output 0 sees frame 0 alone.
      x = CausalConv3d(self.features, (3, 1, 1), (2, 1, 1), **kw)(x)
    return x


class TimeUpsample(nn.Module):
  """The inverse of the temporal Downsample: frame 0 gives 1 frame, every later frame 2."""
  features: int
  time_padding: str = "replicate"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    at_start = not self.has_variable("cache", "started")
    y = CausalConv3d(2 * self.features, (3, 1, 1), time_padding=self.time_padding,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)
    b, t, h, w, _ = y.shape
    y = y.reshape(b, t, h, w, 2, self.features)
    y = jnp.moveaxis(y, 4, 2).reshape(b, 2 * t, h, w, self.features)
    if at_start:
      y = y[:, 1:]
    if self.is_mutable_collection("cache") and not self.is_initializing():
      self.put_variable("cache", "started", jnp.ones((), jnp.int32))
    return _constrain(y)


class Upsample(nn.Module):
  """Optionally 2x time, then 2x2 nearest-neighbour spatial upsampling and a conv."""
  features: int
  temporal: bool
  time_padding: str = "replicate"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(time_padding=self.time_padding, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.temporal:
      x = TimeUpsample(x.shape[-1], **kw)(x)
    x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    return CausalConv3d(self.features, (1, 3, 3), **kw)(x)


class Encoder(nn.Module):
  """Video [B, T, H, W, 3] -> (mean, logvar), each [B, T', H', W', latent_channels]."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    c = self.config
    kw = dict(time_padding=c.time_padding, dtype=self.dtype, param_dtype=self.param_dtype)
    k = (c.kernel_t, 3, 3)
    k0 = (c.full_res_kernel_t, 3, 3)
    h = CausalConv3d(c.encoder_channels[0], k0, **kw)(_constrain(x.astype(self.dtype)))
    for level, width in enumerate(c.encoder_channels):
      for _ in range(c.num_res_blocks):
        kt = c.full_res_kernel_t if level == 0 else c.kernel_t
        h = ResBlock(width, kt, norm=c.norm, **kw)(h)
      if level < c.num_down:
        h = Downsample(width, level >= c.num_down - c.num_time_down, **kw)(h)
    width = c.encoder_channels[-1]
    h = ResBlock(width, c.kernel_t, norm=c.norm, **kw)(h)
    h = ResBlock(width, c.kernel_t, norm=c.norm, **kw)(h)
    h = norm_silu(h, c.norm, self.dtype, self.param_dtype)
    moments = CausalConv3d(2 * c.latent_channels, k, **kw)(h).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, c.logvar_min, c.logvar_max)


class Decoder(nn.Module):
  """Latent [B, T', H', W', C] -> video [B, 1 + tf(T'-1), H, W, 3] (unbounded; ~[-1, 1])."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    c = self.config
    kw = dict(time_padding=c.time_padding, dtype=self.dtype, param_dtype=self.param_dtype)
    k = (c.kernel_t, 3, 3)
    h = CausalConv3d(c.decoder_channels[-1], k, **kw)(_constrain(z.astype(self.dtype)))
    h = ResBlock(c.decoder_channels[-1], c.kernel_t, norm=c.norm, **kw)(h)
    h = ResBlock(c.decoder_channels[-1], c.kernel_t, norm=c.norm, **kw)(h)
    for level in reversed(range(len(c.decoder_channels))):
      width = c.decoder_channels[level]
      for _ in range(c.num_res_blocks + 1):
        kt = c.full_res_kernel_t if level == 0 else c.kernel_t
        h = ResBlock(width, kt, norm=c.norm, **kw)(h)
      if level > 0:
        # Mirrors the encoder: its downsampling after level-1 was temporal or not.
        h = Upsample(width, level - 1 >= c.num_down - c.num_time_down, **kw)(h)
    h = norm_silu(h, c.norm, self.dtype, self.param_dtype)
    return CausalConv3d(3, (c.full_res_kernel_t, 3, 3), **kw)(h).astype(jnp.float32)


class VAE(nn.Module):
  """The autoencoder: `encode`, `decode` and `__call__` (encode, sample, decode)."""
  config: VAEConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self) -> None:
    self.encoder = Encoder(self.config, self.dtype, self.param_dtype)
    self.decoder = Decoder(self.config, self.dtype, self.param_dtype)

  def encode(self, video: jax.Array, continuation: bool = False) -> tuple[jax.Array, jax.Array]:
    """video [B, T, H, W, 3] in [-1, 1] -> (mean, logvar) [B, T', H', W', C], f32.

    T must be 1 + tf*k, or a multiple of tf when `continuation` (a later chunk of a stream
    whose causal cache is passed in the "cache" collection).
    """
    _, t, h, w, _ = video.shape
    check_size(h, w, self.config.spatial_factor)
    if continuation:
      if t % self.config.temporal_factor:
        raise VidgenError(f"a continuation chunk needs a multiple of "
                          f"{self.config.temporal_factor} frames, got {t}")
    else:
      check_frames(t, self.config.temporal_factor)
    return self.encoder(video)

  def decode(self, z: jax.Array) -> jax.Array:
    """latent [B, T', H', W', C] -> video [B, 1 + tf(T'-1), H, W, 3] (or tf*T' frames when
    continuing a stream), f32, roughly in [-1, 1]."""
    return self.decoder(z)

  def __call__(self, video: jax.Array, sample: bool = True
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (reconstruction, mean, logvar); samples z with the "sample" rng when `sample`."""
    mean, logvar = self.encode(video)
    z = mean
    if sample:
      noise = jax.random.normal(self.make_rng("sample"), mean.shape, jnp.float32)
      z = mean + jnp.exp(0.5 * logvar) * noise
    return self.decode(z), mean, logvar


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element, averaged (f32 scalar)."""
  mean = mean.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar)


# ----------------------------------------------------------------------------- discriminator

class Discriminator3D(nn.Module):
  """A patch discriminator over space and time (causal convs, so images work): logits map."""
  channels: tuple[int, ...] = (32, 64, 128)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = video.astype(self.dtype)
    for i, width in enumerate(self.channels):
      stride = (1, 2, 2) if i == 0 else (2, 2, 2)
      h = CausalConv3d(width, (3, 3, 3), stride, **kw)(h)
      if i > 0:
        h = ChannelNorm(**kw)(h)
      h = nn.leaky_relu(h, 0.2)
    return CausalConv3d(1, (3, 3, 3), **kw)(h).astype(jnp.float32)


# ----------------------------------------------------------------------------- streaming

@functools.partial(jax.jit, static_argnames=("model", "continuation"))
def _encode_step(model: VAE, params: Any, cache: Any, video: jax.Array, continuation: bool):
  variables = {"params": params, **({"cache": cache} if cache is not None else {})}
  (mean, logvar), state = model.apply(variables, video, continuation, method=VAE.encode,
                                      mutable=["cache"])
  return mean, logvar, state.get("cache", {})  # Empty when no conv looks back in time.


@functools.partial(jax.jit, static_argnames=("model",))
def _decode_step(model: VAE, params: Any, cache: Any, z: jax.Array):
  variables = {"params": params, **({"cache": cache} if cache is not None else {})}
  video, state = model.apply(variables, z, method=VAE.decode, mutable=["cache"])
  return video, state.get("cache", {})


@functools.partial(jax.jit, static_argnames=("model",))
def encode(model: VAE, params: Any, video: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Whole-clip encode: video [B, T, H, W, 3] in [-1, 1] -> (mean, logvar)."""
  return model.apply({"params": params}, video, method=VAE.encode)


@functools.partial(jax.jit, static_argnames=("model",))
def decode(model: VAE, params: Any, z: jax.Array) -> jax.Array:
  """Whole-clip decode: latent [B, T', H', W', C] -> video [B, T, H, W, 3]."""
  return model.apply({"params": params}, z, method=VAE.decode)


def _as_video(video: Any) -> jax.Array:
  """uint8 [0, 255] -> f32 [-1, 1]; float input is taken as already in [-1, 1]."""
  video = jnp.asarray(video)
  if video.dtype == jnp.uint8:
    return video.astype(jnp.float32) / 127.5 - 1.0
  return video.astype(jnp.float32)


def encode_chunked(model: VAE, params: Any, video: Any, chunk_frames: int | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """Encodes frame 0, then `chunk_frames` (a multiple of tf) frames at a time, carrying the
  causal cache: equals whole-clip `encode` while memory stays that of one chunk.

  `video` may be a host (numpy) array, uint8 or [-1, 1] float; chunks go to the device one
  at a time. Returns (mean, logvar) on the device.
  """
  tf = model.config.temporal_factor
  chunk_frames = chunk_frames or tf
  if chunk_frames % tf:
    raise VidgenError(f"chunk_frames must be a multiple of the temporal factor {tf}, "
                      f"got {chunk_frames}")
  frames = video.shape[1]
  check_frames(frames, tf)
  check_size(video.shape[2], video.shape[3], model.config.spatial_factor)
  means, logvars, cache = [], [], None
  start = 0
  while start < frames:
    stop = 1 if start == 0 else min(frames, start + chunk_frames)
    mean, logvar, cache = _encode_step(model, params, cache, _as_video(video[:, start:stop]),
                                       start > 0)
    means.append(mean)
    logvars.append(logvar)
    start = stop
  return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)


def decode_chunked(model: VAE, params: Any, z: Any, chunk_latents: int = 1,
                   to_host: bool = False) -> Any:
  """Decodes latent frame 0, then `chunk_latents` latent frames at a time with the causal
  cache: equals whole-clip `decode`. With `to_host`, frames are gathered as numpy."""
  frames = z.shape[1]
  outs, cache, start = [], None, 0
  while start < frames:
    stop = 1 if start == 0 else min(frames, start + chunk_latents)
    video, cache = _decode_step(model, params, cache, jnp.asarray(z[:, start:stop]))
    outs.append(np.asarray(video) if to_host else video)
    start = stop
  return np.concatenate(outs, axis=1) if to_host else jnp.concatenate(outs, axis=1)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
  if tile >= size:
    return [0]
  return sorted(set(list(range(0, size - tile, stride)) + [size - tile]))


def _ramp(n: int, ramp: float) -> np.ndarray:
  """Blend weights that fall linearly to ~0 within `ramp` of a tile's edges."""
  i = np.arange(n, dtype=np.float32)
  distance = np.minimum(i + 0.5, n - i - 0.5)
  return np.clip(distance / max(ramp, 1.0), 1e-3, 1.0)


def _tiled(fn: Callable[[Any], Any], x: Any, tile: int, overlap: int, scale: float) -> np.ndarray:
  """Applies `fn` to overlapping spatial tiles of x [B, T, H, W, C] and blends the outputs
  (whose spatial size is `scale` times their input's) with linear ramps over the overlap."""
  _, _, height, width, _ = x.shape
  tile_h, tile_w = min(tile, height), min(tile, width)
  stride = tile - overlap
  if stride <= 0:
    raise VidgenError(f"tile overlap {overlap} must be smaller than the tile {tile}")
  out = weight = None
  for y0 in _tile_starts(height, tile_h, stride):
    for x0 in _tile_starts(width, tile_w, stride):
      part = np.asarray(fn(x[:, :, y0:y0 + tile_h, x0:x0 + tile_w]), np.float32)
      if out is None:
        shape = part.shape[:2] + (int(height * scale), int(width * scale), part.shape[-1])
        out = np.zeros(shape, np.float32)
        weight = np.zeros(shape[2:4] + (1,), np.float32)
      oh, ow = part.shape[2:4]
      oy, ox = int(y0 * scale), int(x0 * scale)
      w = (_ramp(oh, overlap * scale)[:, None] * _ramp(ow, overlap * scale)[None, :])[..., None]
      out[:, :, oy:oy + oh, ox:ox + ow] += part * w
      weight[oy:oy + oh, ox:ox + ow] += w
  return out / weight


def encode_tiled(model: VAE, params: Any, video: Any, tile: int = 256, overlap: int = 64,
                 chunk_frames: int | None = None) -> np.ndarray:
  """Latent means of a large video, encoded in overlapping spatial tiles (pixels; multiples
  of the spatial factor), each chunked in time; close to, not equal to, whole encoding."""
  sf = model.config.spatial_factor
  check_size(video.shape[2], video.shape[3], sf)
  if tile % sf or overlap % sf:
    raise VidgenError(f"tile and overlap must be multiples of the spatial factor {sf}")
  fn = lambda part: encode_chunked(model, params, part, chunk_frames)[0]
  return _tiled(fn, video, tile, overlap, 1.0 / sf)


def decode_tiled(model: VAE, params: Any, z: Any, tile: int = 32, overlap: int = 8,
                 chunk_latents: int = 1) -> np.ndarray:
  """Video from latents decoded in overlapping spatial tiles (latent pixels), blended."""
  fn = lambda part: decode_chunked(model, params, part, chunk_latents, to_host=True)
  return _tiled(fn, z, tile, overlap, float(model.config.spatial_factor))


# ----------------------------------------------------------------------------- latent statistics

@dataclasses.dataclass
class LatentStats:
  """Per-channel mean and std of the latents on training data; the transformer sees
  `normalize(z)` (about zero mean, unit variance per channel)."""
  mean: np.ndarray
  std: np.ndarray

  def normalize(self, z: jax.Array) -> jax.Array:
    return (z - jnp.asarray(self.mean, z.dtype)) / jnp.asarray(self.std, z.dtype)

  def denormalize(self, z: jax.Array) -> jax.Array:
    return z * jnp.asarray(self.std, z.dtype) + jnp.asarray(self.mean, z.dtype)

  def to_dict(self) -> dict[str, list[float]]:
    return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=1)

  @classmethod
  def load(cls, path: str) -> "LatentStats":
    if not os.path.exists(path):
      raise VidgenError(f"no latent statistics at {path}; measure them with "
                        f"vidgen.models.vae.measure_latent_stats and save them there")
    with open(path) as f:
      data = json.load(f)
    return cls(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))


def measure_latent_stats(latents: Iterable[Any]) -> LatentStats:
  """Per-channel mean and std over every element of every latent array [..., C] (float64)."""
  total = total_sq = None
  count = 0
  for z in latents:
    z = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
    total = z.sum(0) if total is None else total + z.sum(0)
    total_sq = (z ** 2).sum(0) if total_sq is None else total_sq + (z ** 2).sum(0)
    count += z.shape[0]
  if not count:
    raise VidgenError("no latents to measure statistics on")
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
  return LatentStats(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))


def normalize(z: jax.Array, stats: LatentStats) -> jax.Array:
  return stats.normalize(z)


def denormalize(z: jax.Array, stats: LatentStats) -> jax.Array:
  return stats.denormalize(z)


def param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.meta.unbox(params))))

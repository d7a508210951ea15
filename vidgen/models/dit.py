"""The diffusion transformer: denoises spacetime patches of latent video, conditioned on text.

Latent video [B, T, H, W, C] is cut into pt x ph x pw spacetime patches (tokens in t, h, w
order), embedded (plus, with `pos_embed`, a fixed sin-cos table of each token's (t, h, w)),
and run through `depth` blocks of
  adaLN(x) -> self-attention over all spacetime tokens (3D RoPE, QK RMS-norm, segment ids)
  -> cross-attention to the text tokens (text padding mask) -> adaLN(x) -> MLP,
with adaLN-Zero modulation (shift, scale, gate) from the timestep and frame-rate embedding.
The text tokens are projected to the width and, with `text_refiner_depth`, refined by
self-attention blocks over their order (`TextRefiner`) before the blocks read them.
The timestep may differ per latent frame (conditioning frames have t = 0), so modulation
is computed per frame and broadcast to that frame's tokens; the shared projection
(PixArt-alpha / Wan "adaLN-single") plus a learned per-block table keeps that cheap.
A final adaLN + linear layer maps tokens back to patches; the output is a velocity in f32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.models import layers

Array = jax.Array

# Parameter counts (jax.eval_shape, DiT only, text dim of its encoder) are in docs/benchmarks.
# text: the text encoder variant (vidgen.models.text.VARIANTS).
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=128, depth=2, num_heads=4, mlp_ratio=4.0, patch=(1, 2, 2), text="tiny"),
    "30M": dict(width=384, depth=12, num_heads=6, mlp_ratio=4.0, patch=(1, 2, 2), text="small"),
    "130M": dict(width=768, depth=13, num_heads=12, mlp_ratio=4.0, patch=(1, 2, 2),
                 text="t5_v1_1_base"),
    "700M": dict(width=1536, depth=18, num_heads=12, mlp_ratio=4.0, patch=(1, 2, 2),
                 text="t5_v1_1_large"),
    "1B": dict(width=2048, depth=15, num_heads=16, mlp_ratio=4.0, patch=(1, 2, 2),
               text="t5_v1_1_xl"),
    "4B": dict(width=3072, depth=26, num_heads=24, mlp_ratio=4.0, patch=(1, 2, 2),
               text="t5_v1_1_xxl"),
    # Wan2.1-14B's shape: width 5120, 40 layers, 40 heads, FFN 13824.
    "14B": dict(width=5120, depth=40, num_heads=40, mlp_ratio=2.7, patch=(1, 2, 2),
                text="umt5_xxl"),
}


# ---------------------------------------------------------------------------------------------
# Patches and positions (pure functions).

def patchify(x: Array, patch: Sequence[int]) -> Array:
  """[B, T, H, W, C] -> [B, N, pt*ph*pw*C], tokens ordered (t, h, w)."""
  b, t, h, w, c = x.shape
  pt, ph, pw = patch
  if t % pt or h % ph or w % pw:
    raise ValueError(f"latent shape {(t, h, w)} not divisible by patch {tuple(patch)}")
  x = x.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


def unpatchify(tokens: Array, patch: Sequence[int], grid: Sequence[int]) -> Array:
  """Inverse of `patchify`: [B, N, pt*ph*pw*C] with grid (T/pt, H/ph, W/pw) -> [B, T, H, W, C]."""
  b = tokens.shape[0]
  pt, ph, pw = patch
  gt, gh, gw = grid
  c = tokens.shape[-1] // (pt * ph * pw)
  x = tokens.reshape(b, gt, gh, gw, pt, ph, pw, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, gt * pt, gh * ph, gw * pw, c)


def grid_positions(grid: Sequence[int]) -> np.ndarray:
  """Integer (t, h, w) position of every token of a patch grid: [N, 3] int32."""
  gt, gh, gw = grid
  tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
  return np.stack([tt, hh, ww], -1).reshape(-1, 3).astype(np.int32)


def rope_split(head_dim: int) -> tuple[int, int, int]:
  """Rotary frequency pairs given to (t, h, w): h and w get a third each, t the rest."""
  half = head_dim // 2
  hw = half // 3
  return half - 2 * hw, hw, hw


def rope_3d(positions: Array, head_dim: int, theta: float = 10000.0) -> tuple[Array, Array]:
  """cos, sin [B, N, head_dim/2] for integer positions [B, N, 3] (any grid size).

  Each axis gets its own band of frequencies theta^(-i/n); scores between tokens then
  depend only on their (dt, dh, dw) offsets.
  """
  angles = []
  for axis, n in enumerate(rope_split(head_dim)):
    if n == 0:
      continue
    freqs = theta ** (-np.arange(n, dtype=np.float32) / n)
    angles.append(positions[..., axis:axis + 1].astype(jnp.float32) * freqs)
  angle = jnp.concatenate(angles, axis=-1)
  return jnp.cos(angle), jnp.sin(angle)


def position_embedding(positions: Array, dim: int, max_period: float = 10000.0) -> Array:
  """Fixed sin-cos embedding of integer (t, h, w) positions [B, N, 3] -> [B, N, dim] f32.

  Each axis gets a third of the channels (t the remainder), as in DiT's 2D table. Added to
  the patch embeddings it tells every token where it is; RoPE alone gives only offsets.
  """
  per = 2 * ((dim // 3) // 2)
  sizes = (dim - 2 * per, per, per)
  parts = [timestep_embedding(positions[..., axis], n, max_period, scale=1.0)
           for axis, n in enumerate(sizes) if n]
  return jnp.concatenate(parts, axis=-1)


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0,
                       scale: float = 1000.0) -> Array:
  """Sinusoidal embedding of t in [0, 1] (times `scale`) -> [..., dim] f32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * scale)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def remat_policy(name: str):
  """Config name -> jax.checkpoint policy ("none" means no remat)."""
  if name in ("none", None):
    return None
  if name == "full":
    name = "nothing_saveable"
  policy = getattr(jax.checkpoint_policies, name, None)
  if policy is None:
    raise ValueError(f"unknown remat policy {name!r}")
  return policy


# ---------------------------------------------------------------------------------------------
# Modules.

class Block(nn.Module):
  """One DiT block; returns (x, None) so it can be scanned."""
  width: int
  num_heads: int
  mlp_hidden: int
  qk_norm: bool = True
  attention: str = "auto"
  block_size: int = 512
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mod: Array, rope_cos: Array, rope_sin: Array,
               segment_ids: Optional[Array], text: Array, text_mask: Array,
               text_segment_ids: Optional[Array]) -> tuple[Array, None]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    head_dim = self.width // self.num_heads
    table = self.param("modulation", layers.logical(nn.initializers.zeros_init(),
                                                    (None, "embed")),
                       (6, self.width), self.param_dtype)
    m = mod.astype(jnp.float32) + table.astype(jnp.float32)  # [B, N|1, 6, D]
    shift1, scale1, gate1, shift2, scale2, gate2 = [m[:, :, i] for i in range(6)]

    h = layers.LayerNorm(dtype=jnp.float32)(x)
    h = (h * (1 + scale1) + shift1).astype(self.dtype)
    h = layers.MultiHeadAttention(
        self.num_heads, head_dim, qk_norm=self.qk_norm, implementation=self.attention,
        block_size=self.block_size, name="self_attention", **kw)(
            h, rope=(rope_cos, rope_sin), q_segment_ids=segment_ids,
            kv_segment_ids=segment_ids)
    x = x + (gate1 * h.astype(jnp.float32)).astype(x.dtype)

    h = layers.RMSNorm(name="cross_norm", **kw)(x)
    h = layers.MultiHeadAttention(
        self.num_heads, head_dim, qk_norm=self.qk_norm, implementation=self.attention,
        block_size=self.block_size, kv_length_axis="text_length", name="cross_attention",
        **kw)(h, text, q_segment_ids=None if text_segment_ids is None else segment_ids,
              kv_segment_ids=text_segment_ids, kv_mask=text_mask)
    x = x + h.astype(x.dtype)

    h = layers.LayerNorm(dtype=jnp.float32)(x)
    h = (h * (1 + scale2) + shift2).astype(self.dtype)
    h = layers.Mlp(self.mlp_hidden, gated=False, name="mlp", **kw)(h)
    x = x + (gate2 * h.astype(jnp.float32)).astype(x.dtype)
    x = layers.constrain(x, ("batch", "length", "embed"))
    return x, None


def text_positions(length: int, segment_ids: Optional[Array]) -> Array:
  """(i, 0, 0) for the i-th token of each text [B|1, L, 3]: i restarts at every segment."""
  idx = jnp.arange(length, dtype=jnp.int32)[None]
  if segment_ids is not None:
    first = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                             segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    idx = idx - jax.lax.cummax(jnp.where(first, idx, 0), axis=1)
  return jnp.stack([idx, jnp.zeros_like(idx), jnp.zeros_like(idx)], -1)


class TextRefiner(nn.Module):
  """Pre-norm self-attention blocks over the projected text tokens, trained with the DiT.

  A frozen encoder's tokens may not say which words belong together (a T5 at its random
  init mixes them almost uniformly), and cross-attention reads them as a bag of words: "a red
  circle moves left and a blue square moves up" then cannot say which object goes where.
  These blocks (1D RoPE over token order, the text mask) let the diffusion loss teach the
  tokens their clauses (HunyuanVideo's token refiner, without its timestep conditioning, so
  the refined tokens are the same at every sampling step).
  """
  depth: int
  num_heads: int
  mlp_hidden: int
  qk_norm: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, txt: Array, text_mask: Array, segment_ids: Optional[Array]) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = txt.shape[-1]
    cos, sin = rope_3d(text_positions(txt.shape[1], segment_ids), d // self.num_heads)
    for i in range(self.depth):
      h = layers.RMSNorm(name=f"attention_norm_{i}", **kw)(txt)
      h = layers.MultiHeadAttention(
          self.num_heads, d // self.num_heads, qk_norm=self.qk_norm, implementation="xla",
          q_length_axis="text_length", kv_length_axis="text_length", name=f"attention_{i}",
          **kw)(h, rope=(cos, sin), q_segment_ids=segment_ids, kv_segment_ids=segment_ids,
                kv_mask=text_mask)
      txt = txt + h
      h = layers.RMSNorm(name=f"mlp_norm_{i}", **kw)(txt)
      txt = txt + layers.Mlp(self.mlp_hidden, gated=False, name=f"mlp_{i}", **kw)(h)
      txt = layers.constrain(txt, ("batch", "text_length", "embed"))
    return txt


class DiT(nn.Module):
  """Diffusion transformer over latent video; see the module docstring.

  `__call__(x [B,T,H,W,C], t [B] or [B,T], text [B,L,Dt], text_mask [B,L], fps [B])`
  returns the predicted velocity [B, T, H, W, out_channels] in f32.
  `forward_tokens` is the packed-sequence entry point (patches, per-token t, positions,
  segment ids given explicitly).
  """
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  patch: tuple[int, int, int] = (1, 2, 2)
  in_channels: int = 4
  out_channels: Optional[int] = None
  qk_norm: bool = True
  rope_theta: float = 10000.0
  use_fps: bool = True
  pos_embed: bool = False  # Also add `position_embedding` to the tokens (besides RoPE).
  text_refiner_depth: int = 0  # `TextRefiner` blocks over the text tokens (0: none).
  # > 0: a one-frame input (an image) reads only the first `image_text_width` channels of each
  # text feature, the rest zeroed: clause bags (text.clause_bags) on video steps only. With
  # `image_text_apart` the rest moves to channels of its own instead (a video's are zero), so
  # images read it through weights of their own (`image_text`).
  image_text_width: int = 0
  image_text_apart: bool = False
  scan_layers: bool = True
  # Layers per scan iteration; 0: all of them on CPU (straight-line code: inside a loop XLA's
  # CPU weight-gradient kernels are slow; docs/benchmarks.md), one elsewhere (compile time).
  scan_unroll: int = 0
  remat: str = "none"
  attention: str = "auto"
  block_size: int = 512
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def layers_per_iteration(self) -> int:
    if self.scan_unroll > 0:
      return min(self.scan_unroll, self.depth)
    return self.depth if jax.default_backend() == "cpu" else 1

  @property
  def patch_dim_out(self) -> int:
    return int(np.prod(self.patch)) * (self.out_channels or self.in_channels)

  @nn.compact
  def forward_tokens(self, patches: Array, t: Array, positions: Array, text: Array,
                     text_mask: Array, *, fps: Optional[Array] = None,
                     segment_ids: Optional[Array] = None,
                     text_segment_ids: Optional[Array] = None) -> Array:
    """patches [B, N, P]; positions [B|1, N, 3]; -> [B, N, P_out] f32.

    t is [B, 1] (one per row), [B, N] (per token) or [B, M] with M dividing N: one per
    contiguous group of N/M tokens (per latent patch-frame, since tokens are t-major);
    modulation is then computed per group and repeated, not per token.
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = self.width
    x = layers.DenseGeneral(d, ("patch", "embed"), use_bias=True, name="patch_embed",
                            **kw)(patches.astype(self.dtype))
    if self.pos_embed:
      x = x + position_embedding(positions, d).astype(x.dtype)
    x = layers.constrain(x, ("batch", "length", "embed"))

    # Conditioning vector c [B, M, D] (M = N tokens or 1) from timestep and frame rate.
    # The conditioning path is tiny but must be constrained too: left free, XLA keeps it
    # weight-stationary (kernels sharded on embed -> fsdp) and computes it for the whole
    # global batch on every device, then all-gathers / all-to-alls it into the token stream.
    cond = lambda a: layers.constrain(a, ("batch",) + (None,) * (a.ndim - 2) + ("embed",))
    c = layers.DenseGeneral(d, (None, "embed"), use_bias=True, name="t_embed_0", **kw)(
        cond(timestep_embedding(t, 256)))
    c = layers.DenseGeneral(d, ("mlp", "embed"), use_bias=True, name="t_embed_1", **kw)(
        nn.silu(cond(c)))
    if self.use_fps:
      fps = jnp.full((x.shape[0],), 24.0) if fps is None else fps
      f = layers.DenseGeneral(d, (None, "embed"), use_bias=True, name="fps_embed_0", **kw)(
          cond(timestep_embedding(fps, 256, scale=1.0)))
      f = layers.DenseGeneral(d, ("mlp", "embed"), use_bias=True, name="fps_embed_1", **kw)(
          nn.silu(cond(f)))
      c = c + f[:, None, :]
    c = cond(nn.silu(c.astype(jnp.float32)))
    zeros = nn.initializers.zeros_init()
    mod = layers.DenseGeneral((6, d), ("mlp", None, "embed"), use_bias=True,
                              init_scale=0.0, name="adaln", dtype=jnp.float32,
                              param_dtype=self.param_dtype)(c)
    mod = cond(mod)  # [B, M, 6, D]
    n_tok, groups = x.shape[1], c.shape[1]
    if n_tok % groups:
      raise ValueError(f"t has {groups} entries per row; it must divide the {n_tok} tokens")
    repeat = n_tok // groups if groups > 1 else 1

    text = layers.constrain(text, ("batch", "text_length", "embed"))
    txt = layers.DenseGeneral(d, (None, "embed"), use_bias=True, name="text_proj_0",
                              **kw)(text.astype(self.dtype))
    txt = layers.DenseGeneral(d, ("mlp", "embed"), use_bias=True, name="text_proj_1", **kw)(
        nn.gelu(txt, approximate=True))
    txt = layers.constrain(txt, ("batch", "text_length", "embed"))
    text_mask = text_mask.astype(bool)
    if self.text_refiner_depth:
      txt = TextRefiner(self.text_refiner_depth, self.num_heads,
                        int(round(d * self.mlp_ratio)), qk_norm=self.qk_norm,
                        name="text_refiner", **kw)(txt, text_mask, text_segment_ids)

    cos, sin = rope_3d(positions, d // self.num_heads, self.rope_theta)
    block_kw = dict(width=d, num_heads=self.num_heads,
                    mlp_hidden=int(round(d * self.mlp_ratio)), qk_norm=self.qk_norm,
                    attention=self.attention, block_size=self.block_size, **kw)
    mod = jnp.repeat(mod, repeat, axis=1) if repeat > 1 else mod
    mod = layers.constrain(mod, ("batch", "length" if mod.shape[1] == n_tok else None, None,
                                 "embed"))
    args = (mod, cos, sin, segment_ids, txt, text_mask, text_segment_ids)
    block_cls = Block
    policy = remat_policy(self.remat)
    if self.remat not in ("none", None):
      block_cls = nn.remat(Block, policy=policy, prevent_cse=not self.scan_layers)
    if self.scan_layers:
      stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast,) * len(args), length=self.depth,
                      unroll=self.layers_per_iteration,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(**block_kw, name="blocks")(x, *args)
    else:
      for i in range(self.depth):
        x, _ = block_cls(**block_kw, name=f"block_{i}")(x, *args)

    final = self.param("final_modulation", layers.logical(zeros, (None, "embed")), (2, d),
                       self.param_dtype)
    fm = layers.DenseGeneral((2, d), ("mlp", None, "embed"), use_bias=True, init_scale=0.0,
                             name="final_adaln", dtype=jnp.float32,
                             param_dtype=self.param_dtype)(c) + final
    fm = jnp.repeat(cond(fm), repeat, axis=1) if repeat > 1 else cond(fm)
    h = layers.LayerNorm(dtype=jnp.float32)(x)
    h = (h * (1 + fm[:, :, 1]) + fm[:, :, 0]).astype(self.dtype)
    out = layers.DenseGeneral(self.patch_dim_out, ("embed", "patch"), use_bias=True,
                              init_scale=0.0, name="final_linear", **kw)(h)
    return out.astype(jnp.float32)

  def __call__(self, x: Array, t: Array, text: Array, text_mask: Array,
               fps: Optional[Array] = None) -> Array:
    """x [B, T, H, W, C]; t [B] or per latent frame [B, T] -> velocity [B, T, H, W, C_out]."""
    b, frames = x.shape[:2]
    pt, ph, pw = self.patch
    grid = (frames // pt, x.shape[2] // ph, x.shape[3] // pw)
    patches = patchify(x, self.patch)
    t = jnp.asarray(t, jnp.float32)
    if t.ndim == 1:
      t_tok = t[:, None]
    else:  # Per latent frame -> per patch frame (the noisiest frame of a group).
      t_tok = jnp.max(t.reshape(b, grid[0], pt), axis=-1)
    positions = jnp.asarray(grid_positions(grid))[None]
    if self.image_text_width:
      text = image_text(text, self.image_text_width, frames == 1, self.image_text_apart)
    out = self.forward_tokens(patches, t_tok, positions, text, text_mask, fps=fps)
    return unpatchify(out, self.patch, grid)


def image_text(text: Array, width: int, image: bool, apart: bool = False) -> Array:
  """The text features a one-frame input (`image`) or a video reads: an image keeps the first
  `width` channels and zeroes the rest. With `apart` the rest is not dropped but moved to
  channels appended for images alone: [head ; 0 ; rest] for an image, [head ; rest ; 0] for a
  video."""
  rest = text[..., width:]
  if apart:
    zeros = jnp.zeros_like(rest)
    parts = (text[..., :width], zeros, rest) if image else (text, zeros)
    return jnp.concatenate(parts, axis=-1)
  return text.at[..., width:].set(0) if image else text


def make_dit(variant: str = "tiny", **overrides) -> DiT:
  """A DiT from the VARIANTS table; overrides replace fields (e.g. in_channels, remat)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown DiT variant {variant!r}; expected one of {list(VARIANTS)}")
  spec = {k: v for k, v in VARIANTS[variant].items() if k != "text"}
  spec.update(overrides)
  spec["patch"] = tuple(spec["patch"])
  fields = {f.name for f in dataclasses.fields(DiT)}
  unknown = set(spec) - fields
  if unknown:
    raise ValueError(f"unknown DiT fields {sorted(unknown)}")
  return DiT(**spec)

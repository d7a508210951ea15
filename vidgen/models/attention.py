"""Attention kernels behind one signature, chosen per platform.

All functions take q [B, Tq, N, H], k and v [B, Tk, N, H] and return [B, Tq, N, H] in q's dtype.
Masking is expressed by
  * `q_segment_ids` [B, Tq] / `kv_segment_ids` [B, Tk] (int): a query attends only to keys of
    the same segment id (packed sequences; one clip per row is all zeros);
  * `kv_mask` [B, Tk] (bool): keys that exist (False = padding, e.g. text padding);
  * `bias` [B or 1, N, Tq, Tk] (f32): additive logits bias (T5 relative position bias).
A query with no visible key (e.g. a dropped, all-padding caption) returns zeros on every path.

Implementations:
  * "xla":       `jax.nn.dot_product_attention(implementation="xla")`, full score matrix.
  * "cudnn":     `jax.nn.dot_product_attention(implementation="cudnn")`, fused kernel on NVIDIA
                 GPUs (bf16/fp16, head dim a multiple of 8, at most 256).
  * "splash":    Pallas splash attention on TPU (segment ids native; `interpret=True` on CPU).
  * "blockwise": online softmax over key blocks in a `lax.scan`; never materialises the
                 [Tq, Tk] score matrix (memory O(Tq x block)), rematerialised per block in the
                 backward pass. Portable; the long-sequence fallback.
  * "flash":     FlashAttention's algorithm in plain JAX: the same online softmax over key
                 blocks, with a hand-written VJP that saves only the output and the per-query
                 log-sum-exp and recomputes each block's probabilities once in the backward
                 pass (dq carried, dk/dv per block). No additive bias. The fastest path on
                 CPU (about 3x the "xla" path's fwd + bwd at 1024 tokens; benchmarks.md).
  * "reference": plain einsum softmax in f32 (tests).
  * "auto":      cudnn on GPU for 16-bit inputs, splash on TPU, flash on CPU, xla otherwise;
                 xla wherever an additive bias is given (T5).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array
IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash", "blockwise", "flash", "reference")
_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def resolve_implementation(implementation: str, dtype, *, has_bias: bool = False) -> str:
  """Maps "auto" (and unsupported combinations) to a concrete implementation."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"expected one of {IMPLEMENTATIONS}")
  platform = jax.default_backend()
  if implementation == "auto":
    if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
      implementation = "cudnn"
    elif platform == "tpu":
      implementation = "splash"
    elif platform == "cpu":
      implementation = "flash"
    else:
      implementation = "xla"
  if implementation in ("splash", "flash") and has_bias:
    implementation = "xla"  # Neither takes an additive bias (T5 relative positions).
  return implementation


def make_mask(q_segment_ids: Optional[Array], kv_segment_ids: Optional[Array],
              kv_mask: Optional[Array]) -> Optional[Array]:
  """Boolean visibility [B, 1, Tq, Tk] (True = may attend), or None if all visible."""
  mask = None
  if q_segment_ids is not None:
    mask = q_segment_ids[:, None, :, None] == kv_segment_ids[:, None, None, :]
  if kv_mask is not None:
    kv = kv_mask[:, None, None, :].astype(bool)
    mask = kv if mask is None else mask & kv
  return mask


def _query_has_key(q_segment_ids, kv_segment_ids, kv_mask, tq: int) -> Optional[Array]:
  """[B, Tq, 1, 1] bool: whether each query sees at least one key (None if always)."""
  if kv_mask is None:
    return None  # Segment ids alone: self-attention always sees itself.
  if q_segment_ids is None:
    any_key = jnp.any(kv_mask, axis=-1)[:, None]
    return jnp.broadcast_to(any_key, (kv_mask.shape[0], tq))[:, :, None, None]
  visible = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & kv_mask[:, None, :]
  return jnp.any(visible, axis=-1)[:, :, None, None]


def attention(q: Array, k: Array, v: Array, *, q_segment_ids: Optional[Array] = None,
              kv_segment_ids: Optional[Array] = None, kv_mask: Optional[Array] = None,
              bias: Optional[Array] = None, scale: Optional[float] = None,
              implementation: str = "auto", block_size: int = 512) -> Array:
  """Scaled dot-product attention; see the module docstring for the conventions."""
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  impl = resolve_implementation(implementation, q.dtype, has_bias=bias is not None)
  if impl == "blockwise":
    return blockwise_attention(q, k, v, q_segment_ids=q_segment_ids,
                               kv_segment_ids=kv_segment_ids, kv_mask=kv_mask, bias=bias,
                               scale=scale, block_size=block_size)
  if impl == "flash":
    return flash_attention(q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                           kv_mask=kv_mask, scale=scale, block_size=block_size)
  if impl == "splash":
    out = splash_attention(q, k, v, q_segment_ids=q_segment_ids,
                           kv_segment_ids=kv_segment_ids, kv_mask=kv_mask, scale=scale,
                           interpret=jax.default_backend() != "tpu")
  elif impl == "reference":
    out = reference_attention(q, k, v, mask=make_mask(q_segment_ids, kv_segment_ids, kv_mask),
                              bias=bias, scale=scale)
  else:
    mask = make_mask(q_segment_ids, kv_segment_ids, kv_mask)
    if bias is not None:
      bias = bias.astype(q.dtype) if impl == "cudnn" else bias.astype(jnp.float32)
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                       implementation=impl)
  has_key = _query_has_key(q_segment_ids, kv_segment_ids, kv_mask, q.shape[1])
  if has_key is not None:
    out = jnp.where(has_key, out, jnp.zeros_like(out))
  return out


def reference_attention(q: Array, k: Array, v: Array, *, mask: Optional[Array] = None,
                        bias: Optional[Array] = None, scale: float) -> Array:
  """Einsum attention in f32 with an explicit [B, 1, Tq, Tk] mask (the test oracle)."""
  logits = jnp.einsum("bqnh,bknh->bnqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, _NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bnqk,bknh->bqnh", probs, v.astype(jnp.float32)).astype(q.dtype)


def _pad_keys_to_blocks(q: Array, k: Array, v: Array, q_segment_ids: Optional[Array],
                        kv_segment_ids: Optional[Array], kv_mask: Optional[Array],
                        block_size: int) -> tuple:
  """Keys padded to whole blocks for the block-scanning paths.

  Returns (k, v, q_seg, kv_seg, valid, block, pad, masked): segment ids default to one
  segment, padded keys are invalid, and `masked` says whether any key can be hidden.
  """
  b, tq = q.shape[:2]
  tk = k.shape[1]
  block = min(block_size, tk)
  pad = -(-tk // block) * block - tk
  masked = q_segment_ids is not None or kv_mask is not None or pad > 0
  valid = jnp.ones((b, tk), bool) if kv_mask is None else kv_mask.astype(bool)
  kv_seg = jnp.zeros((b, tk), jnp.int32) if kv_segment_ids is None else kv_segment_ids
  q_seg = jnp.zeros((b, tq), jnp.int32) if q_segment_ids is None else q_segment_ids
  if pad:
    k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
    kv_seg = jnp.pad(kv_seg, ((0, 0), (0, pad)))
  return k, v, q_seg, kv_seg, valid, block, pad, masked


def _online_softmax_init(b: int, n: int, tq: int, h: int) -> tuple[Array, Array, Array]:
  """(acc [B, N, Tq, H], running max [B, N, Tq], normaliser [B, N, Tq]) before any key."""
  return (jnp.zeros((b, n, tq, h), jnp.float32), jnp.full((b, n, tq), -jnp.inf, jnp.float32),
          jnp.zeros((b, n, tq), jnp.float32))


def _online_softmax_update(carry: tuple, s: Array, v_block: Array) -> tuple[Array, Array, Array]:
  """Folds one key block into the online softmax: scores s [B, N, Tq, K] (f32, -inf where
  hidden) and values [B, K, N, H]. A query with no visible key so far keeps p = 0."""
  acc, m, l = carry
  m_new = jnp.maximum(m, jnp.max(s, axis=-1))
  m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
  p = jnp.exp(s - m_safe[..., None])  # exp(-inf) = 0 for hidden keys.
  correction = jnp.exp(jnp.where(jnp.isfinite(m), m - m_safe, -jnp.inf))
  l = l * correction + jnp.sum(p, axis=-1)
  acc = acc * correction[..., None] + jnp.einsum("bnqk,bknh->bnqh", p,
                                                 v_block.astype(jnp.float32))
  return acc, m_new, l


def blockwise_attention(q: Array, k: Array, v: Array, *, q_segment_ids: Optional[Array] = None,
                        kv_segment_ids: Optional[Array] = None, kv_mask: Optional[Array] = None,
                        bias: Optional[Array] = None, scale: float,
                        block_size: int = 512) -> Array:
  """Memory-efficient attention: online softmax over key blocks (Rabe & Staats; Flash).

  Scans over key/value blocks of `block_size`, keeping a running max, normaliser and
  weighted sum per query in f32. Each block body is checkpointed, so the backward pass
  recomputes the block scores instead of storing all of them.
  """
  b, tq, n, h = q.shape
  k, v, q_seg, kv_seg, valid, block, pad, masked = _pad_keys_to_blocks(
      q, k, v, q_segment_ids, kv_segment_ids, kv_mask, block_size)
  xs = _key_block_inputs(k, v, (q_seg, kv_seg, valid) if masked else (), block)
  if bias is not None:
    xs["bias"] = _key_blocks(jnp.pad(bias, ((0, 0), (0, 0), (0, 0), (0, pad))), block, axis=3)
  qf = q.astype(jnp.float32) * scale

  @jax.checkpoint
  def body(carry, blk):
    s = jnp.einsum("bqnh,bknh->bnqk", qf, blk["k"].astype(jnp.float32))
    if "bias" in blk:
      s = s + blk["bias"].astype(jnp.float32)
    if masked:
      # An additive mask, not `where(visible, s, -inf)`: the select's derivative needs its
      # predicate broadcast over heads, and XLA kept that for every block (a [blocks, B, N,
      # Tq, block] bool: the O(Tq x Tk) buffer this function exists to avoid). The additive
      # mask has no head axis; with nothing to mask (one clip a row) it is skipped entirely.
      s = s + _block_mask_bias(q_seg, blk["seg"], blk["valid"])
    return _online_softmax_update(carry, s, blk["v"]), None

  (acc, _, l), _ = jax.lax.scan(body, _online_softmax_init(b, n, tq, h), xs)
  out = acc / jnp.where(l > 0, l, 1.0)[..., None]  # No visible key: zeros.
  return jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype)


def flash_attention(q: Array, k: Array, v: Array, *, q_segment_ids: Optional[Array] = None,
                    kv_segment_ids: Optional[Array] = None, kv_mask: Optional[Array] = None,
                    scale: float, block_size: int = 512) -> Array:
  """FlashAttention (Dao et al.) in plain JAX: online softmax over key blocks, custom VJP.

  Forward: a scan over key/value blocks of `block_size` keeps a running max, normaliser and
  weighted sum per query (f32), as `blockwise_attention` does, and saves only the output and
  the log-sum-exp L per query. Backward: a second scan over the same blocks recomputes
  P = exp(q k^T scale - L) once per block and forms dv = P^T do, dS = P (do v^T - D) with
  D = rowsum(do o), dq += dS k (the carry) and dk = dS^T q. Autodiff of the softmax instead
  keeps the [Tq, Tk] probabilities and walks them several more times; on CPU, where
  attention is bound by passes over that matrix, this path is about 3x faster at 1024 tokens.
  Queries with no visible key return zeros. Memory: O(Tq x block) per step of either scan.
  """
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
  k, v, q_seg, kv_seg, valid, block, _, masked = _pad_keys_to_blocks(
      q, k, v, q_segment_ids, kv_segment_ids, kv_mask, block_size)
  masks = (q_seg.astype(jnp.int32), kv_seg.astype(jnp.int32), valid) if masked else ()
  return _flash(float(scale), block, q, k, v, *masks)


def _key_blocks(x: Array, block: int, axis: int = 1) -> Array:
  """Keys on `axis`: [..., T, ...] -> [T / block, ..., block, ...] (the scan axis first)."""
  x = x.reshape(x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1:])
  return jnp.moveaxis(x, axis, 0)


def _block_mask_bias(q_seg: Array, kv_seg_blk: Array, valid_blk: Array) -> Array:
  """Additive mask [B, 1, Tq, block]: 0 where visible, -inf where not (no head axis)."""
  visible = (q_seg[:, None, :, None] == kv_seg_blk[:, None, None, :]) & \
      valid_blk[:, None, None, :]
  return jnp.where(visible, 0.0, -jnp.inf).astype(jnp.float32)


def _key_block_inputs(k, v, masks, block):
  """The scanned inputs of the block paths: keys, values and (with masks) their segments and
  validity, each split into key blocks."""
  xs = dict(k=_key_blocks(k, block), v=_key_blocks(v, block))
  if masks:
    xs["seg"], xs["valid"] = _key_blocks(masks[1], block), _key_blocks(masks[2], block)
  return xs


def _flash_fwd(scale: float, block: int, q, k, v, *masks):
  b, tq, n, h = q.shape
  qs = q.astype(jnp.float32) * scale

  def body(carry, blk):
    s = jnp.einsum("bqnh,bknh->bnqk", qs, blk["k"].astype(jnp.float32))
    if masks:
      s = s + _block_mask_bias(masks[0], blk["seg"], blk["valid"])
    return _online_softmax_update(carry, s, blk["v"]), None

  (acc, m, l), _ = jax.lax.scan(body, _online_softmax_init(b, n, tq, h),
                                _key_block_inputs(k, v, masks, block))
  seen = l > 0
  out = acc / jnp.where(seen, l, 1.0)[..., None]  # No visible key: zeros.
  # L = +inf where no key is visible, so the backward pass's P = exp(s - L) is 0 there.
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)
  out = jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype)
  return out, (q, k, v, out, lse, masks)


def _flash_bwd(scale: float, block: int, res, g):
  q, k, v, out, lse, masks = res
  qs = q.astype(jnp.float32) * scale
  do = g.astype(jnp.float32)
  d = jnp.transpose(jnp.sum(do * out.astype(jnp.float32), axis=-1), (0, 2, 1))  # [B, N, Tq]

  def body(dq, blk):
    kb, vb = blk["k"].astype(jnp.float32), blk["v"].astype(jnp.float32)
    s = jnp.einsum("bqnh,bknh->bnqk", qs, kb)
    if masks:
      s = s + _block_mask_bias(masks[0], blk["seg"], blk["valid"])
    p = jnp.exp(s - lse[..., None])
    dv = jnp.einsum("bnqk,bqnh->bknh", p, do)
    ds = p * (jnp.einsum("bqnh,bknh->bnqk", do, vb) - d[..., None])
    dq = dq + jnp.einsum("bnqk,bknh->bqnh", ds, kb)
    dk = jnp.einsum("bnqk,bqnh->bknh", ds, qs)
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32),
                              _key_block_inputs(k, v, masks, block))
  unblock = lambda x: jnp.moveaxis(x, 0, 1).reshape(k.shape)
  mask_grads = tuple(None for _ in masks)  # Integer / boolean inputs: no cotangent.
  return ((dq * scale).astype(q.dtype), unblock(dk).astype(k.dtype),
          unblock(dv).astype(v.dtype)) + mask_grads


_flash = jax.custom_vjp(lambda scale, block, q, k, v, *masks:
                        _flash_fwd(scale, block, q, k, v, *masks)[0], nondiff_argnums=(0, 1))
_flash.defvjp(_flash_fwd, _flash_bwd)


@functools.lru_cache(maxsize=32)
def _splash_kernel(num_heads: int, tq: int, tk: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  mask = sm.MultiHeadMask([sm.FullMask((tq, tk)) for _ in range(num_heads)])
  bq, bkv = min(512, tq), min(512, tk)
  blocks = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                         block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq,
                         block_kv_dq=bkv)
  return sk.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                            interpret=interpret), sk.SegmentIds


def splash_attention(q: Array, k: Array, v: Array, *, q_segment_ids: Optional[Array] = None,
                     kv_segment_ids: Optional[Array] = None, kv_mask: Optional[Array] = None,
                     scale: float, interpret: bool = False) -> Array:
  """TPU splash attention (Pallas), vmapped over the batch; padding becomes segment -1.

  Sequence lengths must be multiples of the block size (128 on TPU) or shorter than 512.
  Under a mesh, wrap the call in `shard_map` over batch/heads (done by the sharding layer).
  """
  b, tq, n, _ = q.shape
  tk = k.shape[1]
  kernel, segment_ids_cls = _splash_kernel(n, tq, tk, interpret)
  q_seg = jnp.zeros((b, tq), jnp.int32) if q_segment_ids is None else q_segment_ids
  kv_seg = jnp.zeros((b, tk), jnp.int32) if kv_segment_ids is None else kv_segment_ids
  if kv_mask is not None:
    kv_seg = jnp.where(kv_mask, kv_seg, -1)  # Query ids are >= 0, so padding is never seen.
  qs = jnp.transpose(q * jnp.asarray(scale, q.dtype), (0, 2, 1, 3))
  ks, vs = jnp.transpose(k, (0, 2, 1, 3)), jnp.transpose(v, (0, 2, 1, 3))

  def one(qi, ki, vi, qsi, kvsi):
    return kernel(qi, ki, vi, segment_ids=segment_ids_cls(q=qsi, kv=kvsi))

  out = jax.vmap(one)(qs, ks, vs, q_seg.astype(jnp.int32), kv_seg.astype(jnp.int32))
  return jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype)

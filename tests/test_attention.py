"""Every CPU-runnable attention path agrees with the einsum reference, masks included."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.models import attention as attn


def _inputs(b=2, tq=20, tk=20, n=2, h=8, seed=0):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(k1, (b, tq, n, h))
  k = jax.random.normal(k2, (b, tk, n, h))
  v = jax.random.normal(k3, (b, tk, n, h))
  bias = jax.random.normal(k4, (1, n, tq, tk))
  return q, k, v, bias


def _oracle(q, k, v, q_seg, kv_seg, kv_mask, bias=None):
  """Dense numpy softmax; rows with no visible key are zero."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  s = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    s = s + np.asarray(bias)
  vis = (np.asarray(q_seg)[:, None, :, None] == np.asarray(kv_seg)[:, None, None, :])
  vis = vis & np.asarray(kv_mask)[:, None, None, :]
  s = np.where(vis, s, -np.inf)
  m = np.max(s, -1, keepdims=True)
  p = np.where(vis, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
  den = p.sum(-1, keepdims=True)
  p = p / np.where(den > 0, den, 1)
  return np.einsum("bnqk,bknh->bqnh", p, v)


def test_paths_agree_with_segments_padding_and_bias():
  q, k, v, bias = _inputs()
  seg = jnp.asarray(np.repeat([[0, 1, 2, 3]], 5, axis=1).repeat(2, 0).reshape(2, 20))
  kv_mask = jnp.ones((2, 20), bool).at[0, 13:].set(False)
  # Segment 3 of row 0 lies entirely in the padding: its queries see no key -> zeros.
  want = _oracle(q, k, v, seg, seg, kv_mask)
  assert np.all(want[0, 15:] == 0) and np.abs(want[1, 15:]).max() > 0.1
  for impl in ("xla", "blockwise", "flash", "reference"):
    got = attn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, kv_mask=kv_mask,
                         implementation=impl, block_size=8)  # 8 does not divide 20: padding
    np.testing.assert_allclose(got, want, atol=2e-5, err_msg=impl)
  want_b = _oracle(q, k, v, seg, seg, kv_mask, bias)
  for impl in ("xla", "blockwise", "reference", "splash"):  # splash falls back with a bias
    got = attn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, kv_mask=kv_mask,
                         bias=bias, implementation=impl, block_size=8)
    np.testing.assert_allclose(got, want_b, atol=2e-5, err_msg=impl)


def test_blockwise_gradients_match_xla():
  q, k, v, _ = _inputs(tq=12, tk=12, seed=1)
  kv_mask = jnp.ones((2, 12), bool).at[1, 7:].set(False)

  def loss(impl):
    def f(q, k, v):
      o = attn.attention(q, k, v, kv_mask=kv_mask, implementation=impl, block_size=5)
      return jnp.sum(o * jnp.cos(o))
    return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  for a, b in zip(loss("blockwise"), loss("xla")):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_flash_gradients_match_reference_with_segments_and_padding():
  """The hand-written VJP of "flash" against autodiff of the einsum reference; one clip's
  segment lies wholly in the key padding (its queries see nothing: zero output, zero and
  finite gradients), and the block size does not divide the length."""
  q, k, v, _ = _inputs(tq=20, tk=20, seed=3)
  seg = jnp.asarray(np.repeat([[0, 1, 2, 3]], 5, axis=1).repeat(2, 0).reshape(2, 20))
  kv_mask = jnp.ones((2, 20), bool).at[0, 13:].set(False)

  def grads(impl, **kw):
    def f(q, k, v):
      o = attn.attention(q, k, v, implementation=impl, block_size=8, **kw)
      return jnp.sum(o * jnp.cos(o))
    return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v)

  masks = dict(q_segment_ids=seg, kv_segment_ids=seg, kv_mask=kv_mask)
  for kw in ({}, masks):
    for a, b in zip(grads("flash", **kw), grads("reference", **kw)):
      assert np.all(np.isfinite(a))
      np.testing.assert_allclose(a, b, atol=1e-5)
  dq = grads("flash", **masks)[0]
  assert np.all(np.asarray(dq[0, 15:]) == 0)  # Queries with no visible key.


def test_cross_attention_without_text_is_zero():
  q, k, v, _ = _inputs(tq=6, tk=4)
  kv_mask = jnp.zeros((2, 4), bool).at[1, :2].set(True)
  for impl in ("xla", "blockwise", "flash", "reference"):
    out = attn.attention(q, k, v, kv_mask=kv_mask, implementation=impl)
    assert np.all(np.asarray(out[0]) == 0), impl
    np.testing.assert_allclose(out[1], _oracle(q, k, v, jnp.zeros((2, 6)), jnp.zeros((2, 4)),
                                               kv_mask)[1], atol=2e-5)


def test_splash_interpret_mode_matches():
  """Pallas splash attention in interpret mode on CPU (the TPU kernel's semantics)."""
  q, k, v, _ = _inputs(b=1, tq=128, tk=128, n=2, h=16, seed=2)
  seg = jnp.asarray((np.arange(128) >= 50).astype(np.int32))[None]
  kv_mask = jnp.ones((1, 128), bool).at[0, 120:].set(False)
  got = attn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, kv_mask=kv_mask,
                       implementation="splash")
  np.testing.assert_allclose(got, _oracle(q, k, v, seg, seg, kv_mask), atol=2e-5)


def test_auto_resolution():
  expected = {"cpu": "flash", "gpu": "xla", "tpu": "splash"}[jax.default_backend()]
  assert attn.resolve_implementation("auto", jnp.float32) == expected
  assert attn.resolve_implementation("splash", jnp.float32, has_bias=True) == "xla"
  assert attn.resolve_implementation("flash", jnp.float32, has_bias=True) == "xla"
  assert attn.resolve_implementation("auto", jnp.float32, has_bias=True) in ("xla", "cudnn")
  with pytest.raises(ValueError):
    attn.resolve_implementation("flash9", jnp.float32)

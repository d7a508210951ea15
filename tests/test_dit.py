"""The diffusion transformer: patches, 3D RoPE, packing, text padding, scan/remat, training."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vidgen.models import dit as dit_lib
from vidgen.models import layers
from vidgen.train import t2v_task

SMALL = dict(width=32, depth=2, num_heads=2, mlp_ratio=2.0, patch=(1, 2, 2), in_channels=2)


def _random_params(shapes, scale=0.3):
  """Random values for every param (numpy; no init compile). Random rather than the real init
  because adaLN-Zero's zero weights would make every output identically 0."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype),
                      nn.meta.unbox(shapes))


@pytest.fixture(scope="module")
def small():
  """The small plain-loop DiT and randomised params (shared: init is slow on this CPU)."""
  model = dit_lib.DiT(**SMALL, scan_layers=False)
  x, t, text, mask = _video_inputs()
  return model, _random_params(jax.eval_shape(model.init, jax.random.key(0), x, t, text, mask))


def _video_inputs(b=2, frames=3, hw=4, text_len=4, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k[0], (b, frames, hw, hw, 2))
  t = jax.random.uniform(k[1], (b, frames))
  text = jax.random.normal(k[2], (b, text_len, 8))
  mask = jnp.ones((b, text_len), bool).at[0, 2:].set(False)
  return x, t, text, mask


def test_patchify_unpatchify_identity():
  x = np.random.default_rng(0).standard_normal((2, 4, 6, 8, 3)).astype(np.float32)
  patch = (2, 3, 2)
  tokens = dit_lib.patchify(x, patch)
  assert tokens.shape == (2, 2 * 2 * 4, 2 * 3 * 2 * 3)
  np.testing.assert_array_equal(dit_lib.unpatchify(tokens, patch, (2, 2, 4)), x)
  # Token i holds the patch at grid_positions[i] (t-major order).
  pos = dit_lib.grid_positions((2, 2, 4))
  i = 13
  ti, hi, wi = pos[i]
  want = x[1, 2 * ti:2 * ti + 2, 3 * hi:3 * hi + 3, 2 * wi:2 * wi + 2].reshape(-1)
  np.testing.assert_array_equal(np.asarray(tokens[1, i]), want)
  with pytest.raises(ValueError):
    dit_lib.patchify(x, (3, 3, 2))


def test_rope_scores_depend_only_on_relative_position():
  head_dim = 24
  kq, kk = jax.random.split(jax.random.key(0))
  q = jax.random.normal(kq, (1, 1, 1, head_dim))
  k = jax.random.normal(kk, (1, 1, 1, head_dim))

  def score(pq, pk):
    cq, sq = dit_lib.rope_3d(jnp.array([[pq]]), head_dim)
    ck, sk = dit_lib.rope_3d(jnp.array([[pk]]), head_dim)
    return float(jnp.sum(layers.rotate(q, cq, sq) * layers.rotate(k, ck, sk)))

  base = score((1, 2, 3), (4, 0, 5))
  # Same offset far away, including positions beyond any training grid.
  assert score((11, 7, 8), (14, 5, 10)) == pytest.approx(base, abs=1e-4)
  assert score((61, 90, 33), (64, 88, 35)) == pytest.approx(base, abs=1e-3)
  # Each axis matters.
  for other in ((5, 0, 5), (4, 1, 5), (4, 0, 6)):
    assert abs(score((1, 2, 3), other) - base) > 1e-3
  # Rotation keeps norms.
  c, s = dit_lib.rope_3d(jnp.array([[[7, 3, 9]]]), head_dim)
  np.testing.assert_allclose(jnp.linalg.norm(layers.rotate(q, c, s)), jnp.linalg.norm(q),
                             rtol=1e-5)


def test_segments_do_not_see_each_other(small):
  model, params = small
  n, p = 12, 8
  k = jax.random.split(jax.random.key(1), 4)
  patches = jax.random.normal(k[0], (1, n, p))
  t = jax.random.uniform(k[1], (1, n))
  seg = jnp.array([[0] * 5 + [1] * 7])
  pos = jnp.asarray(np.concatenate([dit_lib.grid_positions((1, 1, 5)),
                                    dit_lib.grid_positions((1, 1, 7))]))[None]
  text = jax.random.normal(k[2], (1, 3, 8))
  tmask = jnp.ones((1, 3), bool)
  fwd = jax.jit(lambda x, t: model.apply(params, x, t, pos, text, tmask, segment_ids=seg,
                                         method=dit_lib.DiT.forward_tokens))
  out = fwd(patches, t)
  out2 = fwd(patches.at[0, 5:].add(1.0), t.at[0, 5:].set(0.9))
  np.testing.assert_allclose(out2[0, :5], out[0, :5], atol=1e-5)
  assert float(jnp.abs(out2[0, 5:] - out[0, 5:]).max()) > 1e-2


def test_text_padding_does_not_change_output_and_text_matters(small):
  model, params = small
  x, t, text, mask = _video_inputs()
  fwd = jax.jit(lambda text, mask: model.apply(params, x, t, text, mask))
  out = fwd(text, mask)
  # Row 0 has 2 valid tokens: change the padding and append more padding.
  text2 = jnp.concatenate([text.at[0, 2:].set(5.0), jnp.full((2, 2, 8), -3.0)], axis=1)
  mask2 = jnp.concatenate([mask, jnp.zeros((2, 2), bool)], axis=1)
  out2 = fwd(text2, mask2)
  np.testing.assert_allclose(out2, out, atol=1e-5)
  out3 = fwd(text.at[0, 1].add(1.0), mask)
  assert float(jnp.abs(out3[0] - out[0]).max()) > 1e-3
  np.testing.assert_allclose(out3[1], out[1], atol=1e-6)


def test_image_text_width_hides_the_rest_of_the_text_from_images(small):
  """`image_text_width`: a one-frame input reads only the text's first channels (clause bags on
  video steps only); a video reads them all. Same params as the plain model."""
  model, params = small
  images = model.clone(image_text_width=4)
  x, t, text, mask = _video_inputs()
  more = text.at[..., 4:].add(1.0)  # Only the channels an image must not read.
  fwd = jax.jit(lambda m, x, t, text: m.apply(params, x, t, text, mask), static_argnums=0)
  one = (x[:, :1], t[:, :1])
  np.testing.assert_allclose(fwd(images, *one, more), fwd(images, *one, text), atol=1e-6)
  np.testing.assert_allclose(fwd(images, *one, text), fwd(model, *one, text.at[..., 4:].set(0)),
                             atol=1e-6)
  assert float(jnp.abs(fwd(images, *one, text.at[..., :4].add(1.0))
                       - fwd(images, *one, text)).max()) > 1e-3
  np.testing.assert_allclose(fwd(images, x, t, text), fwd(model, x, t, text), atol=1e-6)
  assert float(jnp.abs(fwd(images, x, t, more) - fwd(images, x, t, text)).max()) > 1e-3


def test_image_text_apart_gives_images_the_rest_through_weights_of_their_own():
  """`image_text_apart`: an image's channels past `image_text_width` move to channels of their
  own ([head ; 0 ; rest]), a video's stay ([head ; rest ; 0]): the text projection's rows for
  the two are separate params."""
  text = jnp.arange(8.0).reshape(1, 1, 8)
  np.testing.assert_array_equal(dit_lib.image_text(text, 4, True, True)[0, 0],
                                [0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7])
  np.testing.assert_array_equal(dit_lib.image_text(text, 4, False, True)[0, 0],
                                [0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0])
  model = dit_lib.DiT(**SMALL, scan_layers=False, image_text_width=4, image_text_apart=True)
  x, t, text, mask = _video_inputs()
  params = _random_params(jax.eval_shape(model.init, jax.random.key(0), x, t, text, mask))
  assert params["params"]["text_proj_0"]["kernel"].shape[0] == 12
  fwd = jax.jit(lambda p, x, t: model.apply(p, x, t, text, mask))
  # Zeroing the image rows of the projection changes an image's output, not a video's.
  kernel = params["params"]["text_proj_0"]["kernel"]
  cut = jax.tree.map(lambda a: a, params)
  cut["params"]["text_proj_0"]["kernel"] = kernel.at[8:].set(0.0)
  np.testing.assert_allclose(fwd(cut, x, t), fwd(params, x, t), atol=1e-6)
  one = (x[:, :1], t[:, :1])
  assert float(jnp.abs(fwd(cut, *one) - fwd(params, *one)).max()) > 1e-3


def test_position_embedding_tells_identical_tokens_apart(small):
  """RoPE gives only offsets: on a video whose every token is the same, every token's output
  is the same. With pos_embed the tokens know where they are, with the same params."""
  model, params = small
  x, t, text, mask = _video_inputs()
  x = jnp.ones_like(x)
  t = jnp.full_like(t, 0.5)
  for pos_embed in (False, True):
    m = dit_lib.DiT(**SMALL, scan_layers=False, pos_embed=pos_embed)
    tokens = np.asarray(dit_lib.patchify(jax.jit(m.apply)(params, x, t, text, mask), m.patch))
    spread = float(np.abs(tokens - tokens[:, :1]).max())
    assert spread > 1e-2 if pos_embed else spread < 1e-5
  e = np.asarray(dit_lib.position_embedding(jnp.asarray(dit_lib.grid_positions((3, 4, 4))), 32))
  assert e.shape == (48, 32) and len({tuple(r) for r in e.round(5)}) == 48


def test_text_refiner_reads_word_order_and_ignores_padding():
  """Cross-attention alone reads text as a set: swapping two tokens changes nothing. The text
  refiner (RoPE over token order) makes order matter, and padding still does not."""
  x, t, text, mask = _video_inputs(text_len=5)
  mask = jnp.ones_like(mask).at[0, 3:].set(False)
  swapped = text.at[:, 0].set(text[:, 2]).at[:, 2].set(text[:, 0])
  for depth in (0, 2):
    m = dit_lib.DiT(**SMALL, scan_layers=False, text_refiner_depth=depth)
    params = _random_params(jax.eval_shape(m.init, jax.random.key(0), x, t, text, mask))
    assert ("text_refiner" in params["params"]) == bool(depth)
    fwd = jax.jit(lambda text, mask: m.apply(params, x, t, text, mask))
    out = fwd(text, mask)
    change = float(jnp.abs(fwd(swapped, mask) - out).max())
    assert change > 1e-2 if depth else change < 1e-5
    padded = jnp.concatenate([text.at[0, 3:].set(7.0), jnp.full((2, 3, 8), -2.0)], axis=1)
    out2 = fwd(padded, jnp.concatenate([mask, jnp.zeros((2, 3), bool)], axis=1))
    np.testing.assert_allclose(out2, out, atol=1e-5)


def test_text_positions_restart_at_every_segment():
  np.testing.assert_array_equal(dit_lib.text_positions(4, None)[0, :, 0], [0, 1, 2, 3])
  seg = jnp.array([[1, 1, 1, 2, 2, 3], [0, 0, 0, 0, 0, 0]])
  pos = np.asarray(dit_lib.text_positions(6, seg))
  np.testing.assert_array_equal(pos[..., 0], [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
  assert not pos[..., 1:].any()


def _stack_blocks(loop_params, depth):
  p = dict(loop_params)
  blocks = [p.pop(f"block_{i}") for i in range(depth)]
  p["blocks"] = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
  return p


def test_scan_and_remat_match_the_plain_loop(small):
  x, t, text, mask = _video_inputs(seed=2)
  loop, params = small
  params = params["params"]

  def loss_and_grad(model, p):
    f = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x, t, text, mask)))
    return jax.jit(jax.value_and_grad(f))(p)

  ref_loss, ref_grad = loss_and_grad(loop, params)
  stacked, stacked_grad = _stack_blocks(params, 2), _stack_blocks(ref_grad, 2)
  # scan_unroll: one layer per scan iteration, or all of them (the CPU default, 0) - the
  # same stacked params either way.
  variants = [(dict(scan_layers=True, remat="none", scan_unroll=1), stacked, stacked_grad),
              (dict(scan_layers=True, remat="none", scan_unroll=0), stacked, stacked_grad),
              (dict(scan_layers=True, remat="nothing_saveable"), stacked, stacked_grad)]
  for kw, p, want_grad in variants:
    model = dit_lib.DiT(**SMALL, **kw)
    # Param structure and logical names of the scanned model: a leading "layers" axis.
    if kw["scan_layers"]:
      boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, text, mask))
      names = boxed["params"]["blocks"]["self_attention"]["q"]["kernel"].names
      assert names == ("layers", "embed", "heads", "kv")
    if kw.get("scan_unroll") is not None:  # 0 on CPU: both layers in one iteration.
      jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x, t, text, mask))(p)
      unroll = [e.params["unroll"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
      assert unroll == [kw["scan_unroll"] or 2], (kw, unroll)
    l, g = loss_and_grad(model, p)
    assert float(l) == pytest.approx(float(ref_loss), rel=1e-5, abs=1e-5), kw
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-3), g,
                 want_grad)


def test_per_frame_timesteps_modulate_their_frames(small):
  model, params = small
  x, _, text, mask = _video_inputs(seed=3)
  t = jnp.full((2, 3), 0.4)
  fwd = jax.jit(lambda t: model.apply(params, x, t, text, mask))
  # A scalar t per row is the same as that t on every frame.
  np.testing.assert_allclose(fwd(jnp.full((2,), 0.4)), fwd(t), atol=1e-5)
  assert float(jnp.abs(fwd(t.at[:, 0].set(0.0)) - fwd(t)).max()) > 1e-3


def test_every_param_has_logical_names_and_variants_sizes():
  x, t, text, mask = _video_inputs()
  boxed = jax.eval_shape(lambda: dit_lib.DiT(**SMALL).init(jax.random.key(0), x, t, text,
                                                           mask))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda b: isinstance(b, nn.Partitioned))
  assert leaves and all(isinstance(b, nn.Partitioned) for b in leaves)
  # Parameter counts of the table (eval_shape: nothing is allocated), within 15% of the name.
  targets = {"30M": 30e6, "130M": 130e6, "700M": 700e6, "1B": 1e9, "4B": 4e9, "14B": 14e9}
  for name, target in targets.items():
    model = dit_lib.make_dit(name, in_channels=16)
    n = t2v_task.dit_param_count(model, (3, 8, 8, 16), 4096 if "B" in name else 768)
    assert abs(n / target - 1) < 0.15, (name, n)


def _tiny_task_config():
  c = ml_collections.ConfigDict()
  c.task = "t2v"
  c.data = ml_collections.ConfigDict(dict(tokenizer=dict(vocab_size=64)))
  c.model = t2v_task.get_model_config("tiny")
  c.model.width, c.model.num_heads, c.model.depth = 64, 2, 2
  return c


def test_task_keeps_given_frames_clean_and_overfits_one_batch():
  c = _tiny_task_config()
  c.model.diffusion.condition_probs = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # first k
  c.model.diffusion.text_drop_rate = 0.0
  task = t2v_task.T2VTask(c)
  rng = np.random.default_rng(0)
  batch = dict(video=rng.integers(0, 256, (2, 3, 8, 8, 3)).astype(np.uint8),
               tokens=rng.integers(1, 64, (2, 5)).astype(np.int32),
               text_mask=np.ones((2, 5), bool), fps=np.full((2,), 8.0, np.float32))
  batch["text_mask"][1, 3:] = False
  prep = task.prepare(batch, jax.random.key(1))
  cond = np.asarray(prep["cond_mask"])
  assert cond[:, 0].all() and not cond.all(axis=1).any()
  np.testing.assert_array_equal(np.asarray(prep["x_t"])[cond], np.asarray(prep["x0"])[cond])
  assert (np.asarray(prep["t"])[cond] == 0).all() and (np.asarray(prep["t"])[~cond] > 0).all()
  assert not np.allclose(np.asarray(prep["x_t"])[~cond], np.asarray(prep["x0"])[~cond])

  c.model.diffusion.condition_probs = (0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0)
  task = t2v_task.T2VTask(c)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  assert set(params) == {"dit", "text"}  # the tiny text encoder trains jointly
  tx = optax.adam(3e-3)
  key = jax.random.key(7)  # one batch, one noise draw: pure memorisation

  @jax.jit
  def step(params, opt):
    (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(params, batch, key)
    updates, opt = tx.update(g, opt)
    return optax.apply_updates(params, updates), opt, loss, g

  opt = tx.init(params)
  losses = []
  for _ in range(30):
    params, opt, loss, g = step(params, opt)
    losses.append(float(loss))
  assert math.isfinite(losses[-1])
  assert float(optax.tree.norm(g["text"])) > 0  # text gets gradients
  assert losses[-1] < 0.25 * losses[0], losses[::5]
  assert task.flops_per_step(batch) > 0


def test_blockwise_attention_inside_the_model_matches(small):
  model, params = small
  x, t, text, mask = _video_inputs(seed=4)
  mask = mask.at[1].set(False)  # a dropped caption (null text) in row 1
  blockwise = dit_lib.DiT(**SMALL, scan_layers=False, attention="blockwise", block_size=5)
  ref = jax.jit(lambda: model.apply(params, x, t, text, mask))()
  got = jax.jit(lambda: blockwise.apply(params, x, t, text, mask))()
  assert np.all(np.isfinite(ref))
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)

"""Rectified-flow maths, conditioning masks, CFG dropout and samplers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen import diffusion as df


def test_noising_convention_and_velocity():
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k1, (2, 3, 4, 4, 2))
  eps = jax.random.normal(k2, x0.shape)
  np.testing.assert_allclose(df.add_noise(x0, eps, jnp.zeros(2)), x0)
  np.testing.assert_allclose(df.add_noise(x0, eps, jnp.ones(2)), eps)
  # The target is the time derivative of x_t.
  t, h = jnp.array([0.3, 0.7]), 1e-2
  fd = (df.add_noise(x0, eps, t + h) - df.add_noise(x0, eps, t - h)) / (2 * h)
  np.testing.assert_allclose(fd, df.velocity_target(x0, eps), atol=1e-3)
  # Per-frame timesteps: frame 0 at t = 0 stays clean.
  tf = jnp.array([[0.0, 0.5, 0.5], [0.0, 0.9, 0.2]])
  xt = df.add_noise(x0, eps, tf)
  np.testing.assert_array_equal(xt[:, 0], x0[:, 0])
  np.testing.assert_allclose(xt[1, 2], 0.8 * x0[1, 2] + 0.2 * eps[1, 2], atol=1e-6)


def test_timesteps_logit_normal_and_shift():
  t = df.sample_logit_normal(jax.random.key(0), (20000,))
  assert 0 < float(t.min()) and float(t.max()) < 1
  assert abs(float(jnp.median(t)) - 0.5) < 0.02
  # Logit-normal puts less mass near the ends than uniform.
  assert float(jnp.mean(t < 0.1)) < 0.06
  g = jnp.linspace(0, 1, 11)
  np.testing.assert_allclose(df.shift_timesteps(g, 1.0), g, atol=1e-6)
  s3 = df.shift_timesteps(g, 3.0)
  assert float(s3[0]) == 0 and abs(float(s3[-1]) - 1) < 1e-6
  assert np.all(np.asarray(s3[1:-1]) > np.asarray(g[1:-1]))  # towards noise
  assert np.all(np.diff(np.asarray(s3)) > 0)
  # The shift grows with the token count (resolution and duration).
  s = [float(df.shift_for_tokens(n, 256)) for n in (64, 256, 1024, 4096)]
  assert s == [1.0, 1.0, 2.0, 4.0]
  small = df.sample_timesteps(jax.random.key(1), 4000, 256)
  large = df.sample_timesteps(jax.random.key(1), 4000, 4096)
  assert float(large.mean()) > float(small.mean()) + 0.15


_masks = jax.jit(df.sample_condition_mask, static_argnums=(1, 2))


@pytest.mark.parametrize("mode", df.CONDITION_MODES)
def test_condition_masks(mode):
  probs = jnp.array([float(m == mode) for m in df.CONDITION_MODES])
  mask, modes = _masks(jax.random.key(3), 64, 6, probs)
  mask = np.asarray(mask)
  assert np.all(np.asarray(modes) == df.CONDITION_MODES.index(mode))
  assert not mask.all(axis=1).any()  # always something to generate
  if mode == "none":
    assert not mask.any()
  elif mode == "first":
    assert (mask == (np.arange(6) == 0)).all()
  elif mode == "last":
    assert (mask == (np.arange(6) == 5)).all()
  elif mode == "first_last":
    assert (mask == np.isin(np.arange(6), [0, 5])).all()
  elif mode == "first_k":
    k = mask.sum(1)
    assert (mask == (np.arange(6)[None] < k[:, None])).all() and k.min() >= 1
    assert len(set(k)) > 2  # k varies
  elif mode == "last_k":
    k = mask.sum(1)
    assert (mask == (np.arange(6)[None] >= 6 - k[:, None])).all() and k.min() >= 1
  else:
    assert len({tuple(r) for r in mask}) > 10  # varied patterns
  # A single frame (an image) is never conditioned.
  one, _ = _masks(jax.random.key(4), 8, 1, probs)
  assert not np.asarray(one).any()


def test_object_weight_weighs_the_object_and_skips_given_frames():
  # One clip, two latent frames of 4 x 4 x 2: a flat background with a 2 x 2 object.
  x0 = jnp.zeros((1, 2, 4, 4, 2)).at[:, :, 1:3, 1:3].set(3.0)
  target = jnp.zeros_like(x0)
  obj = jnp.zeros_like(x0).at[:, :, 1:3, 1:3].set(1.0)  # An error of 1 on the object only.
  none = jnp.array([[False, False]])
  # 8 of 32 latent pixels are object: (1 + w) * 8 / (24 + (1 + w) * 8).
  np.testing.assert_array_equal(df.object_mask(x0), obj[..., 0] > 0)
  weight = lambda w: 1.0 + w * df.object_mask(x0)
  for w, want in [(0.0, 0.25), (4.0, 40 / 64)]:
    assert float(df.masked_mse(obj, target, none, weight(w))) == pytest.approx(want)
  assert float(df.masked_mse(1.0 - obj, target, none, weight(4.0))) == pytest.approx(24 / 64)
  np.testing.assert_allclose(df.masked_mse(obj, target, none, weight(0.0)),
                             df.masked_mse(obj, target, none))
  # A given frame is out of the loss, object or not.
  given = jnp.array([[True, False]])
  pred = obj.at[:, 0].add(7.0)
  assert float(df.masked_mse(pred, target, given, weight(4.0))) == pytest.approx(40 / 64)


def test_conditioning_frames_clean_and_out_of_loss():
  mask = jnp.array([[True, False, False], [False, False, True]])
  t = df.frame_timesteps(jnp.array([0.6, 0.4]), mask)
  np.testing.assert_allclose(t, [[0, 0.6, 0.6], [0.4, 0.4, 0]])
  k1, k2 = jax.random.split(jax.random.key(0))
  pred = jax.random.normal(k1, (2, 3, 2, 2, 1))
  target = jax.random.normal(k2, pred.shape)
  loss = df.masked_mse(pred, target, mask)
  # Changing the prediction on given frames does not change the loss; elsewhere it does.
  assert float(df.masked_mse(pred.at[0, 0].add(5.0).at[1, 2].add(-3.0), target, mask)) == \
      pytest.approx(float(loss))
  assert float(df.masked_mse(pred.at[0, 1].add(5.0), target, mask)) > float(loss) + 1
  want = np.mean(np.concatenate([(np.asarray(pred - target)[0, 1:] ** 2).ravel(),
                                 (np.asarray(pred - target)[1, :2] ** 2).ravel()]))
  assert float(loss) == pytest.approx(want, rel=1e-5)


def test_drop_text():
  tokens = jnp.arange(1, 1 + 2000 * 4).reshape(2000, 4)
  mask = jnp.ones((2000, 4), bool)
  t2, m2, dropped = df.drop_text(jax.random.key(0), tokens, mask, 0.1)
  assert 0.07 < float(dropped.mean()) < 0.13
  d = np.asarray(dropped)
  assert (np.asarray(t2)[d] == 0).all() and not np.asarray(m2)[d].any()
  np.testing.assert_array_equal(np.asarray(t2)[~d], np.asarray(tokens)[~d])


@pytest.mark.parametrize("method", ["euler", "heun", "multistep"])
def test_samplers_recover_data_with_exact_velocity(method):
  """For one data point x*, the exact field is v(x, t) = (x - x*) / t; the ODE is a straight
  line, so every solver must land on x* (and keep given frames exactly)."""
  x_star = jax.random.normal(jax.random.key(0), (1, 3, 2, 2, 2))
  noise = jax.random.normal(jax.random.key(1), x_star.shape)
  seen_t = []

  def v(x, t):
    seen_t.append(t)
    return (x - x_star) / jnp.maximum(t, 1e-6)[:, :, None, None, None]

  out = df.sample(v, noise, steps=6, shift=3.0, method=method)
  np.testing.assert_allclose(out, x_star, atol=1e-4)
  cond = jnp.array([[True, False, False]])
  given = x_star.at[:, 0].set(7.0)  # The given frame is not x*'s frame: it must be kept.
  out = df.sample(v, noise, steps=6, method=method, cond_x0=given, cond_mask=cond)
  np.testing.assert_array_equal(out[:, 0], given[:, 0])
  np.testing.assert_allclose(out[:, 1:], x_star[:, 1:], atol=1e-4)


def test_guidance():
  cond = lambda x, t: x + 1.0
  uncond = lambda x, t: x - 1.0
  x, t = jnp.zeros((2, 1, 1, 1, 1)), jnp.ones((2, 1))
  np.testing.assert_allclose(df.guided(cond, uncond, 1.0)(x, t), 1.0)
  np.testing.assert_allclose(df.guided(cond, uncond, 4.0)(x, t), 7.0)
  model = lambda x, t, use_text: x + jnp.where(use_text, 1.0, -1.0)[:, None, None, None, None]
  np.testing.assert_allclose(df.guided_batched(model, 4.0)(x, t), 7.0)
  ts = df.timestep_schedule(4, 3.0)
  assert float(ts[0]) == 1.0 and float(ts[-1]) == 0.0 and np.all(np.diff(ts) < 0)

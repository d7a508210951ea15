"""Samplers on an analytic velocity field, schedules, guidance and conditioning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen import sampling

MU, SIGMA = 1.5, 0.3


def gaussian_velocity(x, t_BF):
  """Exact rectified-flow velocity E[eps - x0 | x_t] for data x0 ~ N(MU, SIGMA^2)."""
  t = t_BF[:, :, None, None, None]
  var = (1 - t) ** 2 * SIGMA ** 2 + t ** 2
  d = x - (1 - t) * MU
  return t / var * d - (MU + (1 - t) * SIGMA ** 2 / var * d)


def _noise(shape=(64, 3, 2, 2, 1), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _error(sampler, steps, shift=1.0):
  eps = _noise()
  out = sampling.sample(gaussian_velocity, eps, sampling.timesteps(steps, shift), sampler=sampler)
  # The flow of a Gaussian maps noise eps to MU + SIGMA eps exactly.
  return float(jnp.abs(out - (MU + SIGMA * eps)).max())


def test_schedule_endpoints_shift_and_inverse():
  ts = sampling.timesteps(10, shift=3.0)
  assert ts[0] == pytest.approx(1.0) and ts[-1] == 0.0 and np.all(np.diff(ts) < 0)
  assert np.all(ts[1:-1] > np.linspace(1, 0, 11)[1:-1])  # shift > 1 stays nearer noise
  u = np.linspace(0, 1, 7)
  np.testing.assert_allclose(sampling.unshift_timesteps(sampling.shift_timesteps(u, 2.5), 2.5), u)
  part = sampling.timesteps(4, shift=3.0, start=0.6)
  assert part[0] == pytest.approx(0.6) and part[-1] == 0.0
  assert sampling.resolution_shift(256) == 1.0 and sampling.resolution_shift(4096) == 3.0
  # The same formulas as training's (vidgen.diffusion).
  from vidgen import diffusion
  np.testing.assert_allclose(sampling.shift_timesteps(u, 2.5), diffusion.shift_timesteps(u, 2.5),
                             rtol=1e-6)
  assert sampling.resolution_shift(1024, max_shift=np.inf) == pytest.approx(
      float(diffusion.shift_for_tokens(1024)))


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_samplers_converge_to_the_exact_endpoint(sampler):
  errors = [_error(sampler, n) for n in (4, 16, 64)]
  assert errors[-1] < 0.05 and errors[-1] < errors[0], errors
  if sampler != "dpm++2m":  # dpm++2m is first order from t = 1 on a uniform grid (see sample)
    assert errors[-1] < errors[1] < errors[0], errors


def test_higher_order_solvers_beat_euler_at_few_steps():
  for steps in (8, 16):
    euler = _error("euler", steps)
    assert _error("heun", steps) < 0.2 * euler
    assert _error("dpm++2m", steps) < 0.6 * euler
    assert _error("unipc", steps) < 0.2 * euler
  # At equal model evaluations (16): unshifted, UniPC-style multistep beats Heun (8 steps
  # of 2); with shift 3 Heun wins on this field, and both beat Euler well.
  assert _error("unipc", 16) < _error("heun", 8) < _error("euler", 16)
  assert max(_error("unipc", 16, 3.0), _error("heun", 8, 3.0)) < 0.25 * _error("euler", 16, 3.0)


def test_samples_have_the_data_distribution():
  eps = _noise((4096, 1, 1, 1, 1), seed=1)
  out = np.asarray(sampling.sample(gaussian_velocity, eps, sampling.timesteps(16), sampler="heun"))
  assert out.mean() == pytest.approx(MU, abs=0.03) and out.std() == pytest.approx(SIGMA, abs=0.02)


SEEN = []


def recording_velocity(x, t_BF):
  jax.debug.callback(lambda x, t: SEEN.append((np.asarray(x), np.asarray(t))), x, t_BF)
  return gaussian_velocity(x, t_BF)


@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_given_frames_stay_clean_and_get_time_zero(sampler):
  SEEN.clear()
  eps = _noise((2, 4, 2, 2, 1))
  given = jnp.full(eps.shape, 7.0)
  mask = np.array([[True, False, False, True], [False, True, False, False]])
  cond = sampling.Condition(mask=jnp.asarray(mask), latents=given)
  out = sampling.sample(recording_velocity, eps, sampling.timesteps(3), sampler=sampler,
                        cond=cond)
  np.testing.assert_array_equal(np.asarray(out)[mask], 7.0)
  assert np.all(np.abs(np.asarray(out)[~mask] - 7.0) > 1.0)
  assert len(SEEN) == sampling.nfe(sampler, 3)
  for x, t in SEEN:  # Every evaluation saw the given frames clean and at t = 0.
    np.testing.assert_array_equal(x[mask], 7.0)
    assert np.all(t[mask] == 0.0)
  assert np.all(SEEN[0][1][~mask] == 1.0)


def test_tied_last_frame_equals_first():
  eps = _noise((2, 4, 2, 2, 1))
  cond = sampling.Condition(mask=jnp.zeros((2, 4), bool), latents=jnp.zeros(eps.shape),
                            tie_last_to_first=True)
  out = sampling.sample(gaussian_velocity, eps, sampling.timesteps(4), cond=cond)
  np.testing.assert_array_equal(out[:, -1], out[:, 0])
  assert not np.allclose(out[:, 1], out[:, 0])


def test_sdedit_start_interpolates():
  z = jnp.full((1, 2, 2, 2, 1), 3.0)
  eps = _noise((1, 2, 2, 2, 1))
  np.testing.assert_allclose(sampling.noise_to(z, eps, 0.0), z)
  np.testing.assert_allclose(sampling.noise_to(z, eps, 1.0), eps)


def test_classifier_free_guidance_combines_one_batched_call():
  calls = []

  def model(x, t, emb, mask):
    calls.append(x.shape[0])
    return x + emb[:, :1, :1][:, None, None] * jnp.ones_like(x)  # v = x + first emb value

  x = jnp.zeros((2, 1, 1, 1, 1))
  emb = jnp.array([[[1.0]], [[2.0]]])
  null = jnp.array([[[0.5]]])
  v = sampling.guided_velocity(model, emb, jnp.ones((2, 1), bool), null, jnp.ones((1, 1), bool),
                               guidance=3.0)(x, jnp.ones((2, 1)))
  # v_null + 3 (v_text - v_null) = 0.5 + 3 (e - 0.5)
  np.testing.assert_allclose(np.asarray(v).reshape(-1), [0.5 + 3 * 0.5, 0.5 + 3 * 1.5])
  assert calls == [4]
  v1 = sampling.guided_velocity(model, emb, jnp.ones((2, 1), bool), null, jnp.ones((1, 1), bool),
                                guidance=1.0)(x, jnp.ones((2, 1)))
  np.testing.assert_allclose(np.asarray(v1).reshape(-1), [1.0, 2.0])
  assert calls == [4, 2]


def test_unknown_sampler_refused():
  with pytest.raises(ValueError, match="unknown sampler"):
    sampling.sample(gaussian_velocity, _noise(), sampling.timesteps(2), sampler="ddim")

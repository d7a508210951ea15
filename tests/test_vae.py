"""The causal 3D VAE: causality, streaming == whole, tiling, shapes, statistics, training."""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vidgen.config import load
from vidgen.errors import VidgenError
from vidgen.evaluate import recon
from vidgen import world
from vidgen.models import vae as V
from vidgen.train import vae_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A micro model with the tiny variant's compression (4x time, 4x4 space) and 3-frame time
# kernels at every level, so causality and streaming are exercised everywhere.
MICRO = dict(latent_channels=4, encoder_channels=(8, 8, 8), decoder_channels=(8, 8, 8),
             kernel_t=3, full_res_kernel_t=3)


def shapes_video(frames: int, height: int, width: int, n: int = 1, seed: int = 0) -> np.ndarray:
  """Flat-color moving shapes (uint8 [n, T, H, W, 3]) without depending on vidgen.world."""
  rng = np.random.default_rng(seed)
  out = np.zeros((n, frames, height, width, 3), np.uint8)
  yy, xx = np.mgrid[:height, :width]
  for i in range(n):
    out[i] = rng.integers(0, 120, 3)
    for _ in range(2):
      color = rng.integers(100, 256, 3)
      cy, cx = rng.uniform(0, height), rng.uniform(0, width)
      vy, vx = rng.uniform(-2, 2, 2)
      r = rng.uniform(2, min(height, width) / 3)
      for t in range(frames):
        mask = (np.abs(yy - cy - vy * t) < r) & (np.abs(xx - cx - vx * t) < r)
        out[i, t][mask] = color
  return out


def to_pm1(video: np.ndarray) -> jax.Array:
  return jnp.asarray(video, jnp.float32) / 127.5 - 1.0


@pytest.fixture(scope="module", params=[3, 1], ids=["kernel_t3", "kernel_t1"])
def micro(request):
  """The micro model with 3-frame time kernels everywhere, and with the tiny variant's
  per-frame residual convolutions (frames mix only in the temporal down/upsampling)."""
  model = V.VAE(V.get_vae_config("tiny", **{**MICRO, "kernel_t": request.param,
                                            "full_res_kernel_t": request.param}))
  x = jnp.zeros((1, 5, 16, 16, 3))
  params = jax.jit(lambda r: nn.meta.unbox(model.init({"params": r, "sample": r}, x)["params"])
                   )(jax.random.key(0))
  return model, params


@pytest.mark.parametrize("norm", ["rms", "none"])
def test_params_carry_logical_axis_names(norm):
  model = V.VAE(V.get_vae_config("tiny", **MICRO, norm=norm))
  boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(0),
                                             "sample": jax.random.key(1)},
                                            jnp.zeros((1, 5, 16, 16, 3)))["params"])
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
  names = {n for leaf in leaves for n in leaf.names if n}
  assert names == {"conv_in", "conv_out"} | ({"norm"} if norm == "rms" else set())


@pytest.mark.parametrize("frames,height,width", [(1, 16, 16), (9, 16, 16), (13, 12, 28),
                                                 (5, 32, 8)])
def test_shapes_one_frame_clips_and_non_square(frames, height, width):
  model = V.VAE(V.get_vae_config("tiny", **MICRO))
  x = jax.ShapeDtypeStruct((2, frames, height, width, 3), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init({"params": jax.random.key(0),
                                                   "sample": jax.random.key(1)}, v), x)
  mean, logvar = jax.eval_shape(lambda v, p: model.apply(p, v, method=V.VAE.encode), x,
                                variables)
  expected = (2,) + V.latent_shape(frames, height, width, model.config)
  assert mean.shape == logvar.shape == expected == (2, 1 + (frames - 1) // 4, height // 4,
                                                    width // 4, 4)
  out = jax.eval_shape(lambda z, p: model.apply(p, z, method=V.VAE.decode), mean, variables)
  assert out.shape == (2, frames, height, width, 3)


@pytest.mark.parametrize("tf,frames,latent", [(1, 6, 6), (2, 7, 4), (4, 9, 3)])
def test_temporal_factors(tf, frames, latent):
  model = V.VAE(V.get_vae_config("tiny", **{**MICRO, "temporal_factor": tf}))
  x = jax.ShapeDtypeStruct((1, frames, 8, 8, 3), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init({"params": jax.random.key(0),
                                                   "sample": jax.random.key(1)}, v), x)
  recon_, mean, _ = jax.eval_shape(
      lambda v, p: model.apply(p, v, rngs={"sample": jax.random.key(0)}), x, variables)
  assert mean.shape[1] == latent and recon_.shape == x.shape


def test_bad_sizes_refused_with_nearest_valid():
  with pytest.raises(VidgenError, match=r"nearest valid: 9 or 13"):
    V.check_frames(10, 4)
  with pytest.raises(VidgenError, match=r"28x32, 32x32"):
    V.check_size(30, 32, 4)
  with pytest.raises(VidgenError, match=r"width 30.*32x24, 32x32"):
    V.check_size(32, 30, 8)
  model = V.VAE(V.get_vae_config("tiny", **MICRO))
  x = jax.ShapeDtypeStruct((1, 8, 16, 16, 3), jnp.float32)
  with pytest.raises(VidgenError, match=r"5 or 9"):
    jax.eval_shape(lambda v: model.init({"params": jax.random.key(0),
                                         "sample": jax.random.key(1)}, v), x)
  with pytest.raises(VidgenError, match="unknown autoencoder variant"):
    V.get_vae_config("huge")


def test_causality_exact(micro):
  model, params = micro
  x = to_pm1(shapes_video(13, 16, 16))
  mean, _ = V.encode(model, params, x)
  # Frame 5 is the first frame of latent frame 2: latent frames 0 and 1 must not move at all.
  x2 = x.at[:, 5].set(-x[:, 5])
  mean2, _ = V.encode(model, params, x2)
  np.testing.assert_array_equal(np.asarray(mean2[:, :2]), np.asarray(mean[:, :2]))
  assert float(jnp.abs(mean2[:, 2] - mean[:, 2]).max()) > 1e-3
  # Decoder: latent frame 2 decodes to frames 5..8; frames 0..4 must not move.
  out = V.decode(model, params, mean)
  out2 = V.decode(model, params, mean.at[:, 2].add(1.0))
  np.testing.assert_array_equal(np.asarray(out2[:, :5]), np.asarray(out[:, :5]))
  assert float(jnp.abs(out2[:, 5:9] - out[:, 5:9]).max()) > 1e-3


def test_chunked_equals_whole(micro):
  model, params = micro
  video = shapes_video(13, 16, 16, n=2, seed=1)
  mean, logvar = V.encode(model, params, to_pm1(video))
  for chunk in (4, 8):  # 8 leaves a short last chunk of 4 frames
    mean_c, logvar_c = V.encode_chunked(model, params, video, chunk_frames=chunk)
    np.testing.assert_allclose(np.asarray(mean_c), np.asarray(mean), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logvar_c), np.asarray(logvar), atol=1e-5, rtol=1e-5)
  out = V.decode(model, params, mean)
  out_c = V.decode_chunked(model, params, mean, chunk_latents=1)
  assert out_c.shape == (2, 13, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(out_c), np.asarray(out), atol=1e-5, rtol=1e-5)
  with pytest.raises(VidgenError, match="multiple of the temporal factor"):
    V.encode_chunked(model, params, video, chunk_frames=3)


def test_chunked_per_frame_autoencoder():
  """temporal_factor 1 with 1-frame kernels looks at no other frame: its cache is empty."""
  model = V.VAE(V.get_vae_config("tiny", **{**MICRO, "temporal_factor": 1, "kernel_t": 1,
                                            "full_res_kernel_t": 1}))
  video = shapes_video(5, 16, 16, n=2, seed=4)
  params = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                      to_pm1(video))["params"]
  mean, _ = V.encode(model, params, to_pm1(video))
  assert mean.shape == (2, 5, 4, 4, 4)
  mean_c, _ = V.encode_chunked(model, params, video, chunk_frames=2)
  np.testing.assert_allclose(np.asarray(mean_c), np.asarray(mean), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(V.decode_chunked(model, params, mean)),
                             np.asarray(V.decode(model, params, mean)), atol=1e-5, rtol=1e-5)
  # Per frame: frame 2 alone changes latent frame 2 alone.
  mean2, _ = V.encode(model, params, to_pm1(video).at[:, 2].multiply(-1))
  changed = np.abs(np.asarray(mean2 - mean)).max(axis=(0, 2, 3, 4))
  assert changed[2] > 1e-3 and np.all(np.delete(changed, 2) == 0)


def test_tiled_close_to_whole(micro):
  model, params = micro
  video = shapes_video(5, 16, 64, seed=2)
  mean, _ = V.encode(model, params, to_pm1(video))
  mean = np.asarray(mean)
  # One tile covering everything is exactly whole-frame encoding.
  np.testing.assert_allclose(V.encode_tiled(model, params, video, tile=64, overlap=16), mean,
                             atol=1e-5)
  rel = lambda a, b: np.abs(a - b).mean() / b.std()
  tiled = V.encode_tiled(model, params, video, tile=32, overlap=16)
  seams = V.encode_tiled(model, params, video, tile=32, overlap=0)  # no blending
  other = np.asarray(V.encode(model, params, to_pm1(shapes_video(5, 16, 64, seed=3)))[0])
  assert tiled.shape == mean.shape
  # An untrained net's receptive field exceeds the overlap, so "close", not equal.
  assert rel(tiled, mean) < 0.15 and rel(tiled, mean) < 0.75 * rel(seams, mean)
  assert rel(tiled, mean) < 0.3 * rel(other, mean)
  out = np.asarray(V.decode(model, params, jnp.asarray(mean)))
  out_tiled = V.decode_tiled(model, params, mean, tile=8, overlap=4)
  out_seams = V.decode_tiled(model, params, mean, tile=8, overlap=0)
  assert out_tiled.shape == out.shape
  assert rel(out_tiled, out) < 0.25 and rel(out_tiled, out) < rel(out_seams, out)


def test_latent_stats_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  true_mean = np.array([1.0, -2.0, 0.5, 3.0])
  true_std = np.array([0.5, 2.0, 1.0, 0.1])
  latents = [rng.normal(true_mean, true_std, (4, 3, 5, 5, 4)) for _ in range(20)]
  stats = V.measure_latent_stats(latents)
  np.testing.assert_allclose(stats.mean, true_mean, atol=0.05)
  np.testing.assert_allclose(stats.std, true_std, rtol=0.05)
  z = jnp.asarray(np.concatenate(latents), jnp.float32)
  zn = V.normalize(z, stats)
  np.testing.assert_allclose(np.asarray(zn).reshape(-1, 4).mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(np.asarray(zn).reshape(-1, 4).std(0), 1, atol=1e-4)
  np.testing.assert_allclose(np.asarray(V.denormalize(zn, stats)), np.asarray(z), atol=1e-5)
  path = str(tmp_path / "stats.json")
  stats.save(path)
  loaded = V.LatentStats.load(path)
  np.testing.assert_allclose(loaded.mean, stats.mean, rtol=1e-6)
  np.testing.assert_allclose(loaded.std, stats.std, rtol=1e-6)
  with pytest.raises(VidgenError, match="no latent statistics"):
    V.LatentStats.load(str(tmp_path / "missing.json"))


def micro_config(**loss) -> ml_collections.ConfigDict:
  config = load(os.path.join(ROOT, "configs/vae_tiny.py"),
                [f"model.{k}={v!r}" for k, v in MICRO.items()]
                + [f"loss.{k}={v!r}" for k, v in loss.items()])
  return config


def test_config_builds_task_with_overrides():
  config = micro_config()
  assert config.task == "vae"
  task = vae_task.VAETask(config)
  assert task.model.config.latent_channels == 4
  assert task.model.config.encoder_channels == (8, 8, 8)
  assert task.model.config.temporal_factor == 4  # from the variant
  for frames, height, width, _ in config.data.buckets:
    V.latent_shape(frames, height, width, task.model.config)  # every bucket is valid
  big = load(os.path.join(ROOT, "configs/vae_tiny.py:4x8x8x16"))
  assert vae_task.vae_config_from(big).latent_channels == 16


def test_tiny_model_loss_falls_on_fixed_batch(tmp_path):
  config = micro_config()
  task = vae_task.VAETask(config)
  batch = {"video": jnp.asarray(shapes_video(5, 16, 16, n=2, seed=4))}
  params = jax.jit(lambda r: nn.meta.unbox(task.init(r, batch)))(jax.random.key(0))
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, key):
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, key)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, metrics

  losses = []
  for i in range(40):
    params, opt, metrics = step(params, opt, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
  assert task.flops_per_step(batch) > 0
  # Export and reload: the reloaded model reconstructs identically.
  stats = V.measure_latent_stats([np.asarray(V.encode(task.model, params["vae"],
                                                      to_pm1(batch["video"]))[0])])
  vae_task.export_vae(str(tmp_path), config, params["vae"], stats)
  model2, params2, stats2 = vae_task.load_vae(str(tmp_path))
  a = recon.reconstruct(task.model, params["vae"], np.asarray(batch["video"]))[0]
  b = recon.reconstruct(model2, params2, np.asarray(batch["video"]))[0]
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(stats2.std, stats.std, rtol=1e-6)


def test_adversarial_terms_update_only_their_side():
  config = micro_config(l1=0.0, mse=0.0, grad=0.0, kl=0.0, adv=1.0, disc_channels=(4, 8))
  task = vae_task.VAETask(config)
  batch = {"video": jnp.asarray(shapes_video(5, 16, 16, n=1, seed=5))}
  params = jax.jit(lambda r: nn.meta.unbox(task.init(r, batch)))(jax.random.key(0))
  assert set(params) == {"vae", "disc"}

  def terms(p):
    loss, m = task.loss(p, batch, jax.random.key(1))
    return jnp.stack([loss, m["gen_adv"], m["disc_loss"]])

  jac = jax.jit(jax.jacrev(terms))(params)
  row = lambda i, part: jax.tree.map(lambda g: g[i], jac[part])
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
  # The generator term moves only the VAE, the discriminator term only the discriminator ...
  assert np.all(flat(row(1, "disc")) == 0) and np.abs(flat(row(1, "vae"))).max() > 0
  assert np.all(flat(row(2, "vae")) == 0) and np.abs(flat(row(2, "disc"))).max() > 0
  # ... and the total is exactly their sum on each side.
  np.testing.assert_allclose(flat(row(0, "vae")), flat(row(1, "vae")), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(flat(row(0, "disc")), flat(row(2, "disc")), rtol=1e-4, atol=1e-6)
  warm = micro_config(adv=1.0, adv_start_step=10, disc_channels=(4, 8))
  with pytest.raises(VidgenError, match="needs the step"):
    vae_task.VAETask(warm).loss(params, batch, jax.random.key(0))
  _, m = jax.eval_shape(lambda p: vae_task.VAETask(warm).loss(p, batch, jax.random.key(0),
                                                                step=jnp.int32(3)), params)
  assert m["adv_on"].shape == ()


def test_trainer_switches_the_adversarial_term_on_at_its_step():
  from vidgen.train import state as state_lib
  from vidgen.train import step as step_lib
  config = micro_config(adv=0.1, adv_start_step=2, disc_channels=(4, 8))
  task = vae_task.VAETask(config)
  batch = {"video": jnp.asarray(shapes_video(5, 16, 16, n=1, seed=5))}
  tx = optax.adam(1e-3)
  shapes = {"video": jax.ShapeDtypeStruct(batch["video"].shape, batch["video"].dtype)}
  state = state_lib.init_fn(task, tx, shapes, ema=False, seed=0)
  train_step = jax.jit(step_lib.make_train_step(task, tx, optax.constant_schedule(1e-3)))
  gates = []
  for _ in range(4):
    state, metrics = train_step(state, batch)
    gates.append(float(metrics["train/adv_on"]))
  assert gates == [0.0, 0.0, 1.0, 1.0]


def test_recon_metrics():
  video = shapes_video(3, 24, 24, n=2, seed=6)
  assert recon.psnr(video, video) > 90
  shifted = np.clip(video.astype(int) + 5, 0, 255).astype(np.uint8)
  mse = np.mean((shifted.astype(float) - video) ** 2)
  assert recon.psnr(video, shifted) == pytest.approx(10 * np.log10(255 ** 2 / mse))
  assert recon.ssim(video, video) == pytest.approx(1.0)
  noisy = np.clip(video + np.random.default_rng(0).normal(0, 40, video.shape), 0, 255
                  ).astype(np.uint8)
  assert 0 < recon.ssim(video, noisy) < 0.9
  assert recon.ssim_frames(video, noisy).shape == (2, 3)
  result = recon.report([("3x24x24", video, noisy), ("3x24x24", video, video)])
  assert result["clips"] == 4 and result["buckets"]["3x24x24"]["clips"] == 4
  assert recon.to_uint8(np.array([-1.0, 0.0, 1.0, 2.0])).tolist() == [0, 128, 255, 255]


def test_periodic_samples_show_fixed_clips_above_their_reconstructions(tmp_path):
  config = micro_config()
  task = vae_task.VAETask(config)
  frames, height, width = next(b[:3] for b in config.data.buckets if b[0] > 1)
  batch = {"video": jnp.zeros((1, frames, height, width, 3), jnp.uint8)}
  params = jax.jit(lambda r: nn.meta.unbox(task.init(r, batch)))(jax.random.key(0))
  videos = task.sample(params, 7, str(tmp_path))
  assert os.path.isfile(tmp_path / "samples" / "00000007.png")
  assert len(videos) == 4
  clips = np.stack([world.generate_clip(
      "validation", i, seed=config.data.world.seed, height=height, width=width, frames=frames,
      fps=config.data.world.fps)["video"] for i in range(4)])
  expected = recon.reconstruct(task.model, params["vae"], clips)[0]
  both = videos["reconstruction_2"]
  assert both.dtype == np.uint8 and both.shape == (frames, 2 * height, width, 3)
  np.testing.assert_array_equal(both[:, :height], clips[2])  # The original, above.
  np.testing.assert_array_equal(both[:, height:], expected[2])  # Its reconstruction, below.

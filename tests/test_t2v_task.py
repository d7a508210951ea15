"""The T2V task on a trained autoencoder's workdir: loading, freezing, normalising, refusing."""
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vidgen import config as config_lib
from vidgen import diffusion
from vidgen.errors import VidgenError
from vidgen.models import vae as vae_lib
from vidgen.train import t2v_task, vae_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO_VAE = dict(latent_channels=4, encoder_channels=(8, 8, 8), decoder_channels=(8, 8, 8))


def export_random_vae(workdir: str, videos: np.ndarray | None = None, seed: int = 0,
                      with_stats: bool = True):
  """A tiny random VAE written by vae_task.export_vae; the latent statistics are measured on
  `videos` (uint8 [B, T, H, W, 3]) when given, else fixed off-unit values."""
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(variant="tiny", dtype="float32", **MICRO_VAE))
  model = vae_task.build_model(config)
  params = model.init({"params": jax.random.key(seed), "sample": jax.random.key(1)},
                      jnp.zeros((1, 5, 16, 16, 3)))["params"]
  stats = None
  if with_stats:
    if videos is not None:
      mean = vae_lib.encode(model, params, jnp.asarray(videos, jnp.float32) / 127.5 - 1)[0]
      stats = vae_lib.measure_latent_stats([np.asarray(mean)])
    else:
      stats = vae_lib.LatentStats(np.array([0.1, -0.2, 0.3, 0.0], np.float32),
                                  np.array([0.5, 2.0, 1.5, 0.8], np.float32))
  vae_task.export_vae(workdir, config, params, stats)
  return model, params, stats


def t2v_config(**model) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "t2v"
  c.data = ml_collections.ConfigDict(dict(tokenizer=dict(vocab_size=64)))
  c.model = t2v_task.get_model_config("tiny")
  c.model.width, c.model.num_heads, c.model.depth = 32, 2, 1
  c.model.patch = (1, 2, 2)
  for key, value in model.items():
    c.model[key] = value
  return c


def video_batch(seed: int = 0, b: int = 2, frames: int = 5) -> dict:
  rng = np.random.default_rng(seed)
  return dict(video=rng.integers(0, 256, (b, frames, 16, 16, 3)).astype(np.uint8),
              tokens=rng.integers(1, 64, (b, 6)).astype(np.int32),
              text_mask=np.ones((b, 6), bool), fps=np.full((b,), 8.0, np.float32))


def test_vae_latents_from_a_workdir_are_frozen_and_normalised(tmp_path):
  batch = video_batch()
  model, params, stats = export_random_vae(str(tmp_path), batch["video"])
  c = t2v_config(latent="vae")
  c.model.vae.workdir = str(tmp_path)
  task = t2v_task.T2VTask(c)
  assert task.model.in_channels == 4  # From the exported VAE config.
  z = np.asarray(task.latents(batch))
  assert z.shape == (2, 2, 4, 4, 4)
  # Normalised by the stats measured on these very clips: zero mean, unit std per channel.
  np.testing.assert_allclose(z.reshape(-1, 4).mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(z.reshape(-1, 4).std(0), 1.0, atol=1e-3)
  raw = np.asarray(vae_lib.encode(model, params, jnp.asarray(batch["video"]) / 127.5 - 1)[0])
  np.testing.assert_allclose(z, (raw - stats.mean) / stats.std, rtol=1e-4, atol=1e-4)

  boxed = jax.jit(task.init)(jax.random.key(0), batch)
  p = nn.meta.unbox(boxed)
  assert set(p) == {"dit", "text"}  # The autoencoder is not a trained parameter.
  (loss, metrics), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
      p, batch, jax.random.key(3))
  assert math.isfinite(float(loss)) and float(loss) > 0
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert task.latent_shape(batch) == (2, 4, 4, 4)
  assert task.flops_per_step(batch) > 0


def test_injected_vae_matches_the_workdir(tmp_path):
  batch = video_batch(seed=2)
  model, params, stats = export_random_vae(str(tmp_path))  # Fixed, non-unit stats.
  c = t2v_config(latent="vae")
  c.model.vae.workdir = str(tmp_path)
  from_dir = np.asarray(t2v_task.T2VTask(c).latents(batch))
  c.model.vae.workdir = ""
  injected = np.asarray(t2v_task.T2VTask(c, vae=(model, params, stats)).latents(batch))
  np.testing.assert_allclose(from_dir, injected, rtol=1e-5, atol=1e-5)
  raw = np.asarray(vae_lib.encode(model, params, jnp.asarray(batch["video"]) / 127.5 - 1)[0])
  np.testing.assert_allclose(from_dir * stats.std + stats.mean, raw, rtol=1e-4, atol=1e-4)


def test_missing_or_incomplete_vae_workdir_is_refused(tmp_path):
  c = t2v_config(latent="vae")
  with pytest.raises(VidgenError, match="model.vae.workdir"):
    t2v_task.T2VTask(c)
  c.model.vae.workdir = str(tmp_path / "nowhere")
  with pytest.raises(VidgenError, match="does not exist"):
    t2v_task.T2VTask(c)
  c.model.vae.workdir = str(tmp_path)  # Exists, but nothing exported.
  with pytest.raises(VidgenError, match="vae_export"):
    t2v_task.T2VTask(c)
  export_random_vae(str(tmp_path), with_stats=False)
  with pytest.raises(VidgenError, match="latent statistics"):
    t2v_task.T2VTask(c)
  c.model.latent = "cached"  # Channels come from the workdir's config alone.
  assert t2v_task.T2VTask(c).model.in_channels == 4
  c.model.vae.workdir = ""
  with pytest.raises(VidgenError, match="latent_channels"):
    t2v_task.T2VTask(c)
  c.model.latent = "latent"
  with pytest.raises(VidgenError, match="expected 'pixel', 'vae' or 'cached'"):
    t2v_task.T2VTask(c)
  c.model.latent = "pixel"
  c.model.text.cached = True  # Only a frozen encoder's embeddings can be cached.
  with pytest.raises(VidgenError, match="text.checkpoint"):
    t2v_task.T2VTask(c)


def test_text_settings_that_contradict_each_other_are_refused():
  c = t2v_config(latent="pixel")
  c.model.text.checkpoint = "/nowhere/t5"  # A trained position bias, and an init for it.
  c.model.text.relpos_causal = True
  with pytest.raises(VidgenError, match="drop one of them"):
    t2v_task.T2VTask(c)
  c = t2v_config(latent="pixel")
  c.model.text.image_bags = "none"  # Keeps bags from images, with no bags at all.
  with pytest.raises(VidgenError, match="set text.clause_bags=True"):
    t2v_task.T2VTask(c)
  c.model.text.clause_bags, c.model.text.image_bags = True, "off"
  with pytest.raises(VidgenError, match="expected one of same, none, apart"):
    t2v_task.T2VTask(c)


def test_config_defaults_to_vae_latents_and_keeps_pixel():
  c = config_lib.load(os.path.join(ROOT, "configs/t2v_tiny.py"))
  assert c.model.latent == "vae" and c.model.vae.workdir == ""
  for frames, height, width, _ in c.data.buckets:  # Every bucket is a valid VAE input.
    vae_lib.latent_shape(frames, height, width, vae_lib.get_vae_config("tiny"))
  assert c.data.world.frames >= max(b[0] for b in c.data.buckets)
  with pytest.raises(VidgenError, match="model.vae.workdir"):
    t2v_task.T2VTask(c)
  pixel = config_lib.load(os.path.join(ROOT, "configs/t2v_tiny.py:tiny,pixel"))
  assert pixel.model.latent == "pixel" and tuple(pixel.model.patch) == (1, 4, 4)
  assert pixel.data.buckets[0][0] == 8
  cached = config_lib.load(os.path.join(ROOT, "configs/t2v_tiny.py:30M,cached"),
                           ["model.vae.workdir=/x"])
  assert cached.model.latent == "cached" and cached.model.variant == "30M"
  assert cached.model.vae.workdir == "/x"


def test_periodic_samples_are_written_and_reproducible(tmp_path):
  from vidgen import world
  from vidgen.data import tokenizer as tokenizer_lib
  from vidgen.data.config import tokenizer_path
  c = config_lib.load(os.path.join(ROOT, "configs/t2v_tiny.py:tiny,pixel"),
                      [f"data.data_dir={tmp_path / 'data'}", "data.buckets=[(4, 16, 16, 2)]",
                       "train.sample_steps=2"])
  captions = [cap for i in range(40)
              for cap in world.generate_clip("train", i, seed=0, height=16, width=16, frames=1,
                                             fps=8.0)["captions"]]
  tokenizer_lib.train(captions, tokenizer_path(c.data), c.data.tokenizer.vocab_size)
  task = t2v_task.T2VTask(c)
  batch = {"video": jnp.zeros((2, 4, 16, 16, 3), jnp.uint8),
           "tokens": jnp.ones((2, c.data.tokenizer.max_len), jnp.int32),
           "text_mask": jnp.ones((2, c.data.tokenizer.max_len), bool),
           "fps": jnp.full((2,), 8.0, jnp.float32)}
  params = nn.meta.unbox(task.init(jax.random.key(0), batch))
  videos = task.sample(params, 5, str(tmp_path / "work"))
  prompts = list(c.train.sample_prompts)
  assert sorted(videos) == [f"sample_{i:02d}" for i in range(len(prompts))]
  for i in range(len(prompts)):
    assert videos[f"sample_{i:02d}"].dtype == np.uint8
    assert videos[f"sample_{i:02d}"].shape == (4, 16, 16, 3)
    assert os.path.isfile(tmp_path / "work" / "samples" / "00000005" / f"{i:02d}.gif")
  again = task.sample(params, 6, str(tmp_path / "work"))
  np.testing.assert_array_equal(again["sample_00"], videos["sample_00"])
  # Other params give other samples: the hook samples the params it is given.
  other = jax.tree.map(lambda p: p + 0.05, params)
  assert not np.array_equal(task.sample(other, 7, str(tmp_path / "work"))["sample_00"],
                            videos["sample_00"])


def test_object_weight_reaches_the_loss():
  batch = video_batch(seed=4)
  batch["video"][:] = 0
  batch["video"][:, :, 4:10, 4:10] = 200  # A flat background and one object.
  plain = t2v_task.T2VTask(t2v_config())
  c = t2v_config()
  c.model.diffusion.object_weight = 4.0
  weighted = t2v_task.T2VTask(c)
  params = nn.meta.unbox(jax.jit(plain.init)(jax.random.key(0), batch))
  rng = jax.random.key(1)
  p = weighted.prepare(batch, rng)
  v = weighted.velocity(params, p["x_t"], p["t"], weighted.text(params, p["tokens"],
                                                                 p["text_mask"]),
                        p["text_mask"], batch["fps"])
  want = diffusion.masked_mse(v, p["target"], p["cond_mask"],
                              1.0 + 4.0 * diffusion.object_mask(p["x0"]))
  got = float(weighted.loss(params, batch, rng)[0])
  assert got == pytest.approx(float(want), rel=1e-5)
  assert abs(got - float(plain.loss(params, batch, rng)[0])) > 1e-3

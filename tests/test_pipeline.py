"""Every generation mode on small analytic components (fast), plus the input policy.

The autoencoder here is a pooling one with the causal layout of the real VAE (latent 0 is
frame 0, each later latent averages four frames; 2x2 spatial pooling), so "up to the
autoencoder's error" is exact for blocky, piecewise-constant clips. The bundle tests
(test_export.py) run the same modes through the real VAE, DiT and T5 modules.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.errors import VidgenError
from vidgen.pipeline import Components, Pipeline, nearest_valid_frames

TF, SF, C = 4, 2, 3
H = W = 8


def toy_tokenize(texts, max_len):
  ids = np.zeros((len(texts), max_len), np.int32)
  for i, text in enumerate(texts):
    row = ([3 + (sum(map(ord, w)) % 90) for w in text.split()] + [2])[:max_len]
    ids[i, :len(row)] = row
  return ids, ids != 0


TABLE = jax.random.normal(jax.random.key(1), (100, 6))
PROJ = jax.random.normal(jax.random.key(2), (6, C))


def toy_encode_text(ids, mask):
  return TABLE[ids] * mask[..., None]


def toy_velocity(params, x, t, emb, mask):
  """The exact velocity for data ~ N(text-dependent mean, 0.5^2), plus a cross-frame term."""
  mu = 0.5 * jnp.tanh(emb.sum(1) @ PROJ)[:, None, None, None, :]
  tt = t[:, :, None, None, None]
  var = (1 - tt) ** 2 * 0.25 + tt ** 2
  d = x - (1 - tt) * mu
  return tt / var * d - (mu + (1 - tt) * 0.25 / var * d) + 0.1 * (x - x.mean(1, keepdims=True))


def toy_encode(video):
  video = np.asarray(video, np.float32)
  b, t, h, w, c = video.shape
  assert (t - 1) % TF == 0, t
  pooled = video.reshape(b, t, h // SF, SF, w // SF, SF, c).mean((3, 5))
  rest = pooled[:, 1:].reshape(b, (t - 1) // TF, TF, h // SF, w // SF, c).mean(2)
  return jnp.asarray(np.concatenate([pooled[:, :1], rest], 1))


def toy_decode(z):
  z = np.asarray(z, np.float32)
  frames = np.concatenate([z[:, :1], np.repeat(z[:, 1:], TF, axis=1)], 1)
  return frames.repeat(SF, 2).repeat(SF, 3)


def make_components(**kw):
  return Components(tokenize=toy_tokenize, encode_text=toy_encode_text, velocity=toy_velocity,
                    encode_video=toy_encode, decode_latents=toy_decode, text_max_len=8,
                    temporal_factor=TF, spatial_factor=SF, latent_channels=C, patch=(1, 2, 2),
                    frames=9, height=H, width=W, fps=8.0, shift=1.0, **kw)


@pytest.fixture
def pipe():
  messages = []
  p = Pipeline(make_components(), notify=messages.append)
  p.messages = messages
  return p


def blocky_clip(frames, seed=0, h=H, w=W):
  """A piecewise-constant clip the toy autoencoder reproduces exactly: 2x2 blocks, and
  frames constant within each group of four after the first."""
  rng = np.random.default_rng(seed)
  groups = rng.integers(0, 256, (1 + (frames - 1) // TF, h // SF, w // SF, 3)).astype(np.uint8)
  video = np.concatenate([groups[:1], np.repeat(groups[1:], TF, 0)])
  return video.repeat(SF, 1).repeat(SF, 2)


FAST = dict(steps=3, guidance=3.0)


def test_every_mode_returns_uint8_video_of_the_asked_shape(pipe):
  prompts = ["a red ball", "a blue box"]
  clip, clip2 = blocky_clip(9, 1), blocky_clip(9, 2)
  img = blocky_clip(1, 3)[0]
  cases = {
      "text_to_video": (pipe.text_to_video(prompts, frames=13, **FAST), 13),
      "text_to_image": (pipe.text_to_image(prompts, **FAST), 1),
      "image_to_video": (pipe.image_to_video(prompts, img, position="both", frames=9, **FAST), 9),
      "extend": (pipe.extend(prompts, clip, frames=21, window=9, **FAST), 21),
      "extend_back": (pipe.extend(prompts, clip[1:], frames=21, direction="backward", window=9,
                                  **FAST), 21),
      "loop": (pipe.loop(prompts, frames=13, **FAST), 13),
      "connect": (pipe.connect(prompts, clip, clip2[1:], frames=8, **FAST), 9 + 8 + 8),
      "restyle": (pipe.restyle(prompts, clip, strength=0.5, **FAST), 9),
  }
  for name, (gen, frames) in cases.items():
    assert gen.video.dtype == np.uint8, name
    assert gen.video.shape == (2, frames, H, W, 3), (name, gen.video.shape)
    assert np.isfinite(gen.latents).all(), name
  # The two prompts give different videos.
  t2v = cases["text_to_video"][0].video
  assert not np.array_equal(t2v[0], t2v[1])


@pytest.mark.parametrize("position", ["first", "last", "both"])
def test_image_to_video_keeps_the_encoded_image(pipe, position):
  img, end = blocky_clip(1, 4)[0], blocky_clip(1, 5)[0]
  gen = pipe.image_to_video("a ball", img, position=position, frames=13,
                            end_image=end if position == "both" else None, **FAST)
  z = gen.latents[0]
  if position in ("first", "both"):
    np.testing.assert_array_equal(z[0], np.asarray(pipe.encode(img[None]))[0, 0])
    np.testing.assert_array_equal(gen.video[0, 0], img)  # exact through this autoencoder
  if position in ("last", "both"):
    last = img if position == "last" else end
    np.testing.assert_array_equal(z[-1], np.asarray(pipe.encode_continuation(
        np.repeat(last[None], TF, 0)))[0, 0])
    np.testing.assert_array_equal(gen.video[0, -1], last)
  free = z[1:-1]
  assert not np.allclose(free, z[:1])


def test_loop_ends_where_it_starts(pipe):
  gen = pipe.loop(["waves", "a spinning top"], frames=17, **FAST)
  np.testing.assert_array_equal(gen.latents[:, -1], gen.latents[:, 0])
  np.testing.assert_array_equal(gen.video[:, -1], gen.video[:, 0])
  assert not np.array_equal(gen.video[:, 8], gen.video[:, 0])


def test_extend_forward_begins_with_the_clip_in_several_windows(pipe):
  clip = blocky_clip(9, 6)
  calls = []
  orig = pipe._sample
  pipe._sample = lambda *a, **k: calls.append(a[1]) or orig(*a, **k)
  gen = pipe.extend("a ball rolls on", clip, frames=29, window=9, overlap=1, **FAST)
  assert gen.video.shape[1] == 29
  np.testing.assert_array_equal(gen.latents[0, :3], np.asarray(pipe.encode(clip))[0])
  np.testing.assert_array_equal(gen.video[0, :9], clip)
  # 3 given latents, 8 in all, windows of 3 latents carrying 1: 5 new latents -> 3 windows.
  assert [s[1] for s in calls] == [3, 3, 2]


def test_extend_backward_ends_with_the_clip(pipe):
  clip = blocky_clip(9, 7)[1:]  # 8 frames: a multiple of 4 sits at the end
  gen = pipe.extend("before", clip, frames=21, direction="backward", window=9, overlap=2, **FAST)
  np.testing.assert_array_equal(gen.latents[0, -2:],
                                np.asarray(pipe.encode_continuation(clip))[0])
  np.testing.assert_array_equal(gen.video[0, -8:], clip)
  assert gen.video.shape[1] == 21


def test_connect_keeps_both_videos_around_a_transition(pipe):
  a, b = blocky_clip(9, 8), blocky_clip(9, 9)[1:]
  gen = pipe.connect("a morph", a, b, frames=12, context=1, **FAST)
  np.testing.assert_array_equal(gen.video[0, :9], a)
  np.testing.assert_array_equal(gen.video[0, -8:], b)
  assert gen.video.shape[1] == 9 + 12 + 8


def test_restyle_strength_zero_keeps_and_one_ignores_the_input(pipe):
  clip, other = blocky_clip(9, 10), blocky_clip(9, 11)
  np.testing.assert_array_equal(pipe.restyle("x", clip, strength=0.0, **FAST).video[0], clip)
  full_a = pipe.restyle("in red", clip, strength=1.0, seed=3, **FAST)
  full_b = pipe.restyle("in red", other, strength=1.0, seed=3, **FAST)
  np.testing.assert_array_equal(full_a.video, full_b.video)
  half_a = pipe.restyle("in red", clip, strength=0.5, seed=3, **FAST)
  half_b = pipe.restyle("in red", other, strength=0.5, seed=3, **FAST)
  assert not np.array_equal(half_a.video, half_b.video)
  # Partway, the result stays nearer its own input than the other clip does.
  za, zb = np.asarray(pipe.encode(clip)), np.asarray(pipe.encode(other))
  assert np.abs(half_a.latents - za).mean() < np.abs(half_a.latents - zb).mean()


def test_same_seed_same_video_other_seed_other_video(pipe):
  for sampler in ("euler", "heun", "dpm++2m", "unipc"):
    a = pipe.text_to_video("a cat", seed=5, sampler=sampler, **FAST)
    b = pipe.text_to_video("a cat", seed=5, sampler=sampler, **FAST)
    np.testing.assert_array_equal(a.video, b.video)
  c = pipe.text_to_video("a cat", seed=6, **FAST)
  assert not np.array_equal(a.latents, c.latents)


def test_image_first_starts_from_text_to_image_and_keeps_it(pipe):
  prompts = ["a cat", "a red dog"]
  image = pipe.text_to_image(prompts, seed=3, **FAST)
  video = pipe.text_to_video(prompts, seed=3, image_first=True, **FAST)
  joint = pipe.text_to_video(prompts, seed=3, **FAST)
  assert video.video.shape == joint.video.shape == (2, 9, H, W, 3)
  # The first frame is that image, exactly; the rest was sampled given it.
  np.testing.assert_array_equal(video.latents[:, :1], image.latents)
  np.testing.assert_array_equal(video.video[:, :1], image.video)
  assert not np.allclose(video.latents[:, 1:], joint.latents[:, 1:])
  one = pipe.text_to_video(prompts, frames=1, seed=3, image_first=True, **FAST)
  np.testing.assert_array_equal(one.latents, image.latents)


def test_text_is_encoded_once_per_batch_with_the_null_caption():
  calls = []

  def counting(ids, mask):
    calls.append((np.asarray(ids), np.asarray(mask)))
    return toy_encode_text(ids, mask)

  p = Pipeline(Components(**{**make_components().__dict__, "encode_text": counting}))
  p.text_to_video(["one", "two"], frames=13, sampler="heun", **FAST)
  assert len(calls) == 1  # once for all 6 model calls
  ids, mask = calls[0]
  assert ids.shape[0] == 3 and mask[:2].any(-1).all()
  # The null text is all padding, as training's caption dropout makes it.
  assert not mask[2].any() and not ids[2].any()


def test_guidance_changes_the_result(pipe):
  a = pipe.text_to_video("a cat", guidance=1.0, steps=3)
  b = pipe.text_to_video("a cat", guidance=6.0, steps=3)
  assert not np.allclose(a.latents, b.latents)


def test_bad_input(pipe):
  with pytest.raises(VidgenError, match="empty"):
    pipe.text_to_video(["fine", "  "], **FAST)
  with pytest.raises(VidgenError, match="no prompt"):
    pipe.text_to_video([], **FAST)
  long_prompt = " ".join(f"word{i}" for i in range(20))
  gen = pipe.text_to_video(long_prompt, **FAST)
  assert any("truncated to its first 8 tokens" in m for m in pipe.messages)
  short = pipe.text_to_video(" ".join(long_prompt.split()[:8]) + " other words", **FAST)
  np.testing.assert_array_equal(gen.latents, short.latents)  # only the first 8 tokens count
  pipe.messages.clear()
  assert pipe.text_to_video("x", frames=10, **FAST).video.shape[1] == 9
  assert any("10 frames" in m and "using 9" in m for m in pipe.messages)
  assert pipe.text_to_video("x", frames=7, height=10, width=13, **FAST).video.shape[1:4] == (
      9, 12, 12)
  assert any("using 12x12" in m for m in pipe.messages)
  wide = np.zeros((1, 8, 16, 3), np.uint8)
  wide[:, :, 4:12] = 200  # the center survives a center crop
  with pytest.raises(VidgenError, match="no-resize"):
    pipe.image_to_video("x", wide, resize=False, **FAST)
  pipe.messages.clear()
  gen = pipe.image_to_video("x", wide, steps=1)
  assert any("center-cropped" in m for m in pipe.messages)
  np.testing.assert_array_equal(gen.video[0, 0], np.full((8, 8, 3), 200, np.uint8))
  with pytest.raises(VidgenError, match="not longer"):
    pipe.extend("x", blocky_clip(9), frames=9, **FAST)
  with pytest.raises(VidgenError, match="strength"):
    pipe.restyle("x", blocky_clip(9), strength=1.5)
  with pytest.raises(VidgenError, match="sampler"):
    pipe.text_to_video("x", sampler="ddim")


def test_nearest_valid_frames():
  assert [nearest_valid_frames(n, 4) for n in (0, 1, 2, 3, 4, 5, 7, 16, 17, 19)] == [
      1, 1, 1, 5, 5, 5, 9, 17, 17, 21]

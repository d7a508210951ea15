"""Can a DiT learn shape words at all? Trains a fresh transformer on toy images in minutes.

  .venv/bin/python benchmarks/shape_toy.py --bundle=runs/default/bundle --level=A
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --level=A --patch=1      # 64 tokens
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --level=A --pixel        # no autoencoder
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --level=D --lr=2e-3
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --level=D --size=64     # 64 tokens
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --level=W --steps=8000  # the world
  .venv/bin/python benchmarks/shape_toy.py --bundle=B --gaps   # shape vs color in latents

The images (--size, default 32) are Shapes World objects drawn straight (no video, trails or
pillars), captioned 'a large red circle on a black background' ('... and a small blue ...'):
  A  one large object on black        B  one object, either size, on black
  C  one object, either size, any background       D  two objects, either size, on black
  W  the Shapes World itself: first frames of train clips under one of their 6 captions
     (drawn per image), scored on first frames of test clips under their detailed caption
     (--one: one-object clips only; --caption=K: always caption K in training)
The bundle gives the frozen autoencoder (its normalised latents) and the frozen text encoder;
the DiT (the main job's: width 128, depth 4, 2x2 patches of 8x8 latents) trains from scratch
with rectified flow (logit-normal t, 10 % captions dropped, AdamW, cosine, EMA warm-up) on
`--train` images. Every `--eval_every` steps, with the EMA params: the shape-swap loss ratio
(velocity MSE under captions with circle <-> square and triangle <-> cross swapped, over the
true captions', at t = 0.5 / 0.7 / 0.9), then text to image for 64 captions (Euler 30 steps,
guidance 5) scored per object by the oracle's palette snap and shape fit: color (a region of
the caption's color) and shape (that region's best-fitting template). docs/benchmarks.md,
session 12.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidgen import diffusion, world  # noqa: E402
from vidgen.evaluate import oracle  # noqa: E402
from vidgen.models import dit as dit_lib  # noqa: E402
from vidgen.pipeline import Pipeline  # noqa: E402
from vidgen.world import draw, palette as P  # noqa: E402

SWAP = {"circle": "square", "square": "circle", "triangle": "cross", "cross": "triangle"}


def scene(rng: np.random.Generator, level: str) -> dict:
  colors = rng.choice(len(P.OBJECT_COLORS), 2 if level == "D" else 1, replace=False)
  background = str(rng.choice(list(P.BACKGROUNDS))) if level == "C" else "black"
  objects = []
  for i in colors:
    size = "large" if level == "A" else str(rng.choice(list(P.SIZES)))
    objects.append(dict(color=list(P.OBJECT_COLORS)[i], shape=P.SHAPES[rng.integers(4)],
                        size=size))
  return dict(background=background, objects=objects)


def render(sc: dict, rng: np.random.Generator, size: int) -> np.ndarray:
  """uint8 [size, size, 3]; objects placed uniformly, centers at least a size apart."""
  image = np.empty((size, size, 3), np.uint8)
  image[:] = P.BACKGROUNDS[sc["background"]]
  xs = np.arange(size) + 0.5
  placed = []
  for o in sc["objects"]:
    px = P.SIZES[o["size"]] * size
    for _ in range(100):
      cx, cy = rng.uniform(px / 2, size - px / 2, 2)
      if all(np.hypot(cx - x, cy - y) > px for x, y in placed):
        break
    placed.append((cx, cy))
    image[draw.shape_mask(o["shape"], cx, cy, px, xs, xs)] = P.OBJECT_COLORS[o["color"]]
  return image


def world_images(split: str, n: int, size: int, fps: float, one: bool, caption_index: int,
                 rng: np.random.Generator) -> tuple[list, np.ndarray, list]:
  """First frames of the first n clips of a split (one-object clips only with `one`): their
  scenes, uint8 images and captions (caption_index < 0: one of each clip's drawn by rng)."""
  scenes, images, captions = [], [], []
  index = 0
  while len(scenes) < n:
    clip = world.generate_clip(split, index, seed=0, height=size, width=size, frames=9, fps=fps)
    index += 1
    if one and len(clip["metadata"]["objects"]) > 1:
      continue
    options = clip["captions"]
    scenes.append(clip["metadata"])
    images.append(clip["video"][0])
    captions.append(options[caption_index if caption_index >= 0
                            else rng.integers(len(options))])
  return scenes, np.stack(images), captions


def caption(sc: dict) -> str:
  words = " and ".join(f"a {o['size']} {o['color']} {o['shape']}" for o in sc["objects"])
  return f"{words} on a {sc['background']} background"


def score(images: np.ndarray, scenes: list) -> tuple[float, float, float]:
  """(color, shape) per object and all-shapes-right per image, by the oracle's snap/fit."""
  labels = oracle.snap(images[:, None])[:, 0]
  color = shape = objects = whole = 0
  for lab, sc in zip(labels, scenes):
    ok = True
    for o in sc["objects"]:
      objects += 1
      mask = lab == P.PALETTE_INDEX[o["color"]]
      if mask.sum() < 3:
        ok = False
        continue
      color += 1
      region = oracle._largest_components(mask[None])[0]
      right = oracle.classify_shape(mask if region is None else region)[0] == o["shape"]
      shape += right
      ok &= right
    whole += ok
  return color / objects, shape / objects, whole / len(scenes)


def latents(c, images: np.ndarray, pixel: bool = False) -> jax.Array:
  """uint8 images [N, H, W, 3] -> one-frame videos in [-1, 1], or (not `pixel`) the
  autoencoder's normalised latents of them, encoded 256 at a time."""
  video = jnp.asarray(images[:, None].astype(np.float32) / 127.5 - 1)
  return video if pixel else jnp.concatenate(
      [c.encode_video(video[i:i + 256]) for i in range(0, len(video), 256)])


def latent_gaps(c, n: int = 256) -> None:
  """How far apart the autoencoder puts images that differ in one word: mean square difference
  of normalised latents for one object with its shape swapped, or its color changed, keeping
  place, size and background; per background and size (n image pairs each)."""
  rng, names = np.random.default_rng(0), list(P.OBJECT_COLORS)
  encode = lambda images: np.asarray(latents(c, np.stack(images)))
  for background in P.BACKGROUNDS:
    for size in P.SIZES:
      base, shape, color = [], [], []
      for _ in range(n):
        col, other = rng.choice(names, 2, replace=False)
        sh, seed = P.SHAPES[rng.integers(4)], rng.integers(1 << 30)
        draw = lambda s, k: render(dict(background=background, objects=[
            dict(color=str(k), shape=s, size=size)]), np.random.default_rng(seed), 32)
        base.append(draw(sh, col))
        shape.append(draw(SWAP[sh], col))
        color.append(draw(sh, other))
      x = encode(base)
      print(f"{background} {size}: shape swapped {np.mean((x - encode(shape)) ** 2):.3f}, "
            f"color changed {np.mean((x - encode(color)) ** 2):.3f}, "
            f"latent mean square {np.mean(x ** 2):.3f}", flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--bundle", required=True, help="its autoencoder and text encoder are used")
  ap.add_argument("--level", default="A", choices=list("ABCDW"))
  ap.add_argument("--one", action="store_true", help="level W: one-object clips only")
  ap.add_argument("--caption", type=int, default=-1,
                  help="level W: train on this caption of each clip (-1: any, per image)")
  ap.add_argument("--size", type=int, default=32, help="image edge in pixels")
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--eval_every", type=int, default=1000)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--train", type=int, default=4096, help="training images")
  ap.add_argument("--lr", type=float, default=6e-4)
  ap.add_argument("--depth", type=int, default=4)
  ap.add_argument("--width", type=int, default=128)
  ap.add_argument("--patch", type=int, default=2, help="spatial patch edge")
  ap.add_argument("--pixel", action="store_true", help="pixels, not latents (try --patch=4)")
  ap.add_argument("--pos_embed", action="store_true")
  ap.add_argument("--refiner", type=int, default=0, help="DiT text_refiner_depth")
  ap.add_argument("--conv_head", action="store_true",
                  help="the DiT emits 32 features a latent pixel; two 3x3 convs render them")
  ap.add_argument("--guidance", type=float, default=5.0)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--gaps", action="store_true", help="print latent_gaps and exit")
  a = ap.parse_args()
  c = Pipeline.load(a.bundle).c
  if a.gaps:
    return latent_gaps(c)
  down = 1 if a.pixel else c.spatial_factor

  def data(n, seed, split="train"):
    rng = np.random.default_rng(seed)
    if a.level == "W":
      scenes, images, captions = world_images(split, n, a.size, c.fps, a.one,
                                              a.caption if split == "train" else 0, rng)
    else:
      scenes = [scene(rng, a.level) for _ in range(n)]
      images = np.stack([render(s, rng, a.size) for s in scenes])
      captions = [caption(s) for s in scenes]
    ids, mask = c.tokenize(captions, c.text_max_len)
    text = jnp.concatenate([c.encode_text(jnp.asarray(ids[i:i + 256]),
                                          jnp.asarray(mask[i:i + 256]))
                            for i in range(0, n, 256)])
    return scenes, images, latents(c, images, a.pixel), text, jnp.asarray(mask)

  start = time.time()
  _, _, x_train, e_train, m_train = data(a.train, a.seed)
  scenes, images, x_eval, e_eval, m_eval = data(64, 999, "test")
  swapped = [dict(sc, objects=[dict(o, shape=SWAP[o["shape"]]) for o in sc["objects"]])
             for sc in scenes]
  write = world.detailed_caption if a.level == "W" else caption
  ids, _ = c.tokenize([write(s) for s in swapped], c.text_max_len)
  e_swap = c.encode_text(jnp.asarray(ids), m_eval)
  # Binding: the shapes of the objects exchanged (a bag of words reads the same caption).
  bound = [dict(sc, objects=[dict(o, shape=p["shape"]) for o, p in
                             zip(sc["objects"], sc["objects"][::-1])]) for sc in scenes]
  ids, _ = c.tokenize([write(s) for s in bound], c.text_max_len)
  e_bind = c.encode_text(jnp.asarray(ids), m_eval)
  print(f"data {tuple(x_train.shape)} in {time.time() - start:.1f}s; real images score "
        f"{score(images, scenes)}", flush=True)

  channels = x_train.shape[-1]
  dit = dit_lib.make_dit("tiny", depth=a.depth, width=a.width, in_channels=channels,
                         out_channels=32 if a.conv_head else channels,
                         patch=(1, a.patch, a.patch), pos_embed=a.pos_embed,
                         text_refiner_depth=a.refiner)

  class ConvHead(nn.Module):
    @nn.compact
    def __call__(self, x, t, text, mask):
      y = dit.clone()(x, t, text, mask)
      b, f, h, w, _ = y.shape
      y = nn.silu(nn.Conv(64, (3, 3), padding="SAME")(y.reshape(b * f, h, w, -1)))
      return nn.Conv(channels, (3, 3), padding="SAME")(y).reshape(b, f, h, w, channels)

  model = ConvHead() if a.conv_head else dit
  params = nn.meta.unbox(model.init(jax.random.key(a.seed), x_train[:2], jnp.zeros((2, 1)),
                                    e_train[:2], m_train[:2])["params"])
  schedule = optax.warmup_cosine_decay_schedule(0, a.lr, 200, a.steps, a.lr * 0.1)
  opt = optax.chain(optax.clip_by_global_norm(1.0),
                    optax.adamw(schedule, 0.9, 0.99, weight_decay=0.0))

  @jax.jit
  def step(state, i, x0, text, mask, key):
    params, opt_state, ema = state
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    t = diffusion.sample_logit_normal(k_t, (x0.shape[0],))
    eps = jax.random.normal(k_eps, x0.shape)
    mask = jnp.where(jax.random.uniform(k_drop, (x0.shape[0], 1)) < 0.1, False, mask)
    x_t = diffusion.add_noise(x0, eps, t)
    loss_fn = lambda p: jnp.mean(jnp.square(
        model.apply({"params": p}, x_t, t[:, None], text, mask)
        - diffusion.velocity_target(x0, eps)))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    decay = jnp.minimum(0.999, (1 + i) / (10 + i))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    return (params, opt_state, ema), loss

  @jax.jit
  def probe(p, text, t, key):
    eps = jax.random.normal(key, x_eval.shape)
    x_t = diffusion.add_noise(x_eval, eps, jnp.full((len(x_eval),), t))
    v = model.apply({"params": p}, x_t, jnp.full((len(x_eval), 1), t), text, m_eval)
    return jnp.mean(jnp.square(v - diffusion.velocity_target(x_eval, eps)))

  @jax.jit
  def sample(p, noise):  # Euler, 30 steps, CFG on a doubled batch (the null text: no mask).
    def model_fn(x, t, use_text):
      mask = jnp.where(use_text[:, None], jnp.concatenate([m_eval, m_eval]), False)
      return model.apply({"params": p}, x, t, jnp.concatenate([e_eval, e_eval]), mask)
    return diffusion.sample(diffusion.guided_batched(model_fn, a.guidance), noise, steps=30)

  def generate(p):
    x = sample(p, jax.random.normal(jax.random.key(11),
                                    (64, 1, a.size // down, a.size // down, channels)))
    video = x if a.pixel else c.decode_latents(x)
    return np.clip((np.asarray(video)[:, 0] + 1) * 127.5, 0, 255).astype(np.uint8)

  state = (params, opt.init(params), params)
  key, rng = jax.random.key(a.seed + 1), np.random.default_rng(a.seed + 2)
  start, losses = time.time(), []
  for i in range(1, a.steps + 1):
    idx = rng.integers(0, len(x_train), a.batch)
    key, k = jax.random.split(key)
    state, loss = step(state, i, x_train[idx], e_train[idx], m_train[idx], k)
    if i % 50 == 0:
      losses.append(float(loss))
    if i % a.eval_every == 0 or i == a.steps:
      ema = state[2]
      base = [probe(ema, e_eval, t, jax.random.key(7)) for t in (0.5, 0.7, 0.9)]
      ratios, bind = ([float(probe(ema, e, t, jax.random.key(7)) / b)
                       for t, b in zip((0.5, 0.7, 0.9), base)] for e in (e_swap, e_bind))
      color, shape, whole = score(generate(ema), scenes)
      print(f"step {i} {time.time() - start:.0f}s loss {np.mean(losses[-10:]):.4f} "
            f"shape-swapped x{ratios[0]:.3f} / {ratios[1]:.3f} / {ratios[2]:.3f} "
            f"bind-swapped x{bind[0]:.3f} / {bind[1]:.3f} / {bind[2]:.3f} "
            f"color {color:.2f} shape {shape:.2f} all shapes {whole:.2f}", flush=True)


if __name__ == "__main__":
  main()

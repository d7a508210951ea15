"""Seconds per sample of every generation mode, with a tiny random model, through a bundle.

  .venv/bin/python benchmarks/sampling.py                  # the CPU default (t2v_tiny shapes)
  .venv/bin/python benchmarks/sampling.py --latent=vae --steps=10

Builds random tiny weights (DiT "tiny": width 128, depth 2; T5 "tiny"; optionally the tiny
VAE), writes a bundle with vidgen.export.write_bundle, loads it with Pipeline.load and times
each mode after one untimed warm-up call (compilation). Sizes default to configs/t2v_tiny.py:
pixel latents, 32x32, patch 1x4x4, 9 frames. Prints one line per mode and a JSON summary.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidgen import export  # noqa: E402
from vidgen.data import tokenizer as tok_lib  # noqa: E402
from vidgen.models import dit as dit_lib  # noqa: E402
from vidgen.models import text as text_lib  # noqa: E402
from vidgen.models import vae as vae_lib  # noqa: E402
from vidgen.pipeline import Pipeline  # noqa: E402

CAPTIONS = [f"a {c} {s} moves {d}" for c in ("red", "blue", "green", "yellow")
            for s in ("ball", "box", "star") for d in ("left", "right", "up", "down")]


def random_params(module, *args, seed=0):
  """Random params of the init shapes (no init compile)."""
  import flax.linen as nn
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), *args)["params"]))
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  rng = np.random.default_rng(seed)
  return tree.unflatten([(rng.standard_normal(x.shape) / np.sqrt(max(1, np.prod(x.shape[:-1]))))
                         .astype(np.float32) for x in leaves])


def make_bundle(out: str, latent: str, size: int, frames: int, variant: str) -> None:
  tmp = tempfile.mkdtemp()
  tok_path = tok_lib.train(CAPTIONS, os.path.join(tmp, "tokenizer.model"), 64)
  t5_cfg = text_lib.get_t5_config("tiny", vocab_size=tok_lib.Tokenizer(tok_path).vocab_size)
  text = text_lib.T5Encoder(t5_cfg)
  params = {"text": random_params(text, jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))}
  configs = {"text": dataclasses.asdict(t5_cfg)}
  stats = None
  if latent == "vae":
    vae_cfg = vae_lib.get_vae_config("tiny")
    params["vae"] = random_params(vae_lib.VAE(vae_cfg), jnp.zeros((1, 5, size, size, 3)))
    configs["vae"] = {k: list(v) if isinstance(v, tuple) else v
                      for k, v in dataclasses.asdict(vae_cfg).items()}
    c, sf = vae_cfg.latent_channels, vae_cfg.spatial_factor
    stats = {"mean": np.zeros(c), "std": np.ones(c)}
    dit = dit_lib.make_dit(variant, in_channels=c)
    z = jnp.zeros((1, 2, size // sf, size // sf, c))
  else:
    dit = dit_lib.make_dit(variant, in_channels=3, patch=(1, 4, 4))
    z = jnp.zeros((1, 2, size, size, 3))
  params["dit"] = random_params(dit, z, jnp.zeros((1, 2)), jnp.zeros((1, 8, t5_cfg.d_model)),
                                jnp.ones((1, 8), bool))
  configs["dit"] = export._module_config(dit)
  export.write_bundle(out, params=params, configs=configs, tokenizer_path=tok_path,
                      latent_stats=stats, pipeline={
                          "latent": latent, "frames": frames, "height": size, "width": size,
                          "fps": 8.0, "text_max_len": 32})


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--latent", default="pixel", choices=("pixel", "vae"))
  p.add_argument("--variant", default="tiny")
  p.add_argument("--size", type=int, default=32)
  p.add_argument("--frames", type=int, default=9)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--sampler", default="unipc")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--modes", default="text_to_video,text_to_image,image_to_video,extend,loop,"
                                    "connect,restyle")
  args = p.parse_args()
  out = os.path.join(tempfile.mkdtemp(), "bundle")
  make_bundle(out, args.latent, args.size, args.frames, args.variant)
  pipe = Pipeline.load(out, notify=lambda m: None)
  n = args.frames
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (n, args.size, args.size, 3)).astype(np.uint8)
  kw = dict(steps=args.steps, sampler=args.sampler, guidance=5.0)
  prompt = "a red ball moves left"
  tf = pipe.c.temporal_factor
  runs = {
      "text_to_video": lambda: pipe.text_to_video(prompt, frames=n, **kw),
      "text_to_image": lambda: pipe.text_to_image(prompt, **kw),
      "image_to_video": lambda: pipe.image_to_video(prompt, clip[0], position="both",
                                                    frames=n, **kw),
      # Twice the clip: with the default half-window overlap, two or more windows.
      "extend": lambda: pipe.extend(prompt, clip, frames=2 * n - 1, window=n, **kw),
      "loop": lambda: pipe.loop(prompt, frames=n, **kw),
      "connect": lambda: pipe.connect(prompt, clip, clip[1:], frames=n - 1, **kw),
      "restyle": lambda: pipe.restyle(prompt, clip, strength=0.6, **kw),
  }
  results = {}
  print(f"device {jax.devices()[0].platform}, latent={args.latent}, DiT {args.variant}, "
        f"{args.size}x{args.size}, {n} frames, {args.steps} {args.sampler} steps, CFG (batch 2)")
  for mode in args.modes.split(","):
    t0 = time.perf_counter()
    gen = runs[mode]()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      gen = runs[mode]()
      times.append(time.perf_counter() - t0)
    best = min(times)
    results[mode] = {"s_per_sample": round(best, 3), "first_call_s": round(first, 2),
                     "frames_out": int(gen.video.shape[1])}
    print(f"{mode:<15} {best:7.3f} s/sample  (first call incl. compile {first:6.1f} s; "
          f"{gen.video.shape[1]} frames out)")
  print(json.dumps(results))


if __name__ == "__main__":
  main()

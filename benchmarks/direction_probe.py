"""Does a bundle's transformer read direction words? Caption-swap probes: the loss and the oracle.

  .venv/bin/python benchmarks/direction_probe.py --bundle=runs/default/bundle
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --clips=128 --strengths=0.6,0.9,1
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --strengths=   # the loss gap only
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --strengths= --frames=1 \
      --given=none --split=test --caption=0 --all_clips    # text to image, every scene
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --strengths= --bind --caption=0
      # two-object clips: does the model bind each motion to its object?
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --i2v --caption=0 --clips=64
      # image to video from the real first frames: direction per object, by object count
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --i2v --alone --caption=0 \
      --split=test --clips=160   # and each of two objects under a caption naming it alone

Takes the clips (of the first --clips of --split, default heldout) with one object moving
left, right, up or down, restyles each (noised to `strength`, then denoised) with its short
caption and again with its direction words swapped (left <-> right, up <-> down), and counts
whose direction the oracle measures in the result: the caption's, the input's, or another.
A model that reads direction words follows the swapped caption at high strength; at strength
1 this is text to video.

First, in seconds, the loss gap: with each clip's first latent frame given (image to video;
`--given=none`: nothing given, text to video or, with `--frames=1`, text to image) and the
rest noised to time t, the velocity MSE of the generated frames under the true caption, the
direction-swapped one, a color-swapped one (a control: colors are known to be read) and a
shape-swapped one (circle <-> square, triangle <-> cross). A ratio swapped / true of 1.000
means the words change nothing the model predicts. `--all_clips` takes every clip for the
gap, not just the one-object ones moving left, right, up or down.
Prints one line per probe and a JSON summary (docs/benchmarks.md, "Session 4", "Session 5"
and "Session 10").
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidgen import diffusion, world  # noqa: E402
from vidgen.evaluate import commands, oracle  # noqa: E402
from vidgen.pipeline import Pipeline  # noqa: E402

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SWAP = dict(OPPOSITE, leftward="rightward", rightward="leftward", upward="downward",
            downward="upward")


COLOR_SWAP = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue",
              "cyan": "magenta", "magenta": "cyan", "orange": "white", "white": "orange"}
SHAPE_SWAP = {"circle": "square", "square": "circle", "triangle": "cross", "cross": "triangle"}
TABLES = {"direction": SWAP, "color": COLOR_SWAP, "shape": SHAPE_SWAP}


def swap_words(caption: str, table: dict[str, str]) -> str:
  return " ".join(table.get(word, word) for word in caption.split(" "))


def bound_swapped(meta: dict, caption: int) -> str:
  """Caption `caption` (0 detailed, 1 short) of the scene with the objects' motions (direction,
  speed, bounces) exchanged: the same words, bound to other objects."""
  objects = meta["objects"]
  keys = ("direction", "speed", "bounces")
  swapped = [dict(o, **{k: p[k] for k in keys}) for o, p in zip(objects, objects[::-1])]
  write = (world.detailed_caption, world.short_caption)[caption]
  return write(dict(meta, objects=swapped))


def loss_gap(pipe: Pipeline, clips: list, times: list[float], seed: int, *,
             given_first: bool = True, caption: int = 1, bind: bool = False) -> dict:
  """{t: {"true": mse, "direction" | "color" | "shape" [| "bind"]: ratio}} over the generated
  frames (all, or those after the given first one), under each clip's captions[caption]."""
  z = jnp.concatenate([pipe.encode(clip["video"]) for clip in clips])  # [N, F, h, w, c]
  true = [clip["captions"][caption] for clip in clips]
  texts = {"true": true, **{k: [swap_words(c, table) for c in true]
                            for k, table in TABLES.items()}}
  if bind:
    texts["bind"] = [bound_swapped(clip["metadata"], caption) for clip in clips]
  texts = {k: pipe.encode_prompts(v)[:2] for k, v in texts.items()}
  velocity = jax.jit(pipe.c.velocity)
  eps = jax.random.normal(jax.random.key(seed), z.shape)
  given = jnp.broadcast_to((jnp.arange(z.shape[1]) == 0) & given_first, z.shape[:2])
  target = diffusion.velocity_target(z, eps)
  out = {}
  for t in times:
    t_frames = diffusion.frame_timesteps(jnp.full(z.shape[:1], t), given)
    x = diffusion.add_noise(z, eps, t_frames)
    mse = {k: float(diffusion.masked_mse(
        velocity(pipe.c.velocity_params, x, t_frames, emb, mask), target, given))
        for k, (emb, mask) in texts.items()}
    out[str(t)] = {"true": round(mse["true"], 4),
                   **{k: round(mse[k] / mse["true"], 4) for k in texts if k != "true"}}
  return out


def i2v_directions(pipe: Pipeline, clips: list, steps: int, guidance: float, seed: int,
                   caption: int, alone: bool = False) -> dict:
  """Image to video from each clip's real first frame under captions[caption]: the fraction
  of moving objects whose measured direction is theirs, for one- and two-object clips.

  alone: also, for two-object clips whose objects move differently, each object under a
  caption that describes only it (the other object is in the first frame, unnamed), scored
  for that object: what binding the caption's motions to their objects costs.
  """
  right, total = collections.Counter(), collections.Counter()

  def generate(text: str, clip: dict) -> list:
    video = pipe.image_to_video([text], clip["video"][:1], steps=steps, guidance=guidance,
                                seed=seed).video
    return oracle.score_clip(np.asarray(video)[0], clip["metadata"],
                             details=True)["details"]["objects"]

  def count(group: str, obj: dict) -> None:
    if obj.get("direction") is not None:
      total[group] += 1
      right[group] += bool(obj["direction"])

  write = (world.detailed_caption, world.short_caption)[min(caption, 1)]
  for clip in clips:
    objects = clip["metadata"]["objects"]
    scored = generate(clip["captions"][caption], clip)
    differ = len(objects) == 2 and len({o["direction"] for o in objects}) == 2
    for obj in scored:
      count(f"{len(objects)} objects", obj)
      if alone and differ:
        count("2 objects moving differently", obj)
    if alone and differ:
      for i, obj in enumerate(objects):
        count("2 objects moving differently, each described alone",
              generate(write(dict(clip["metadata"], objects=[obj])), clip)[i])
  return {g: {"objects": total[g], "direction": round(right[g] / total[g], 3)}
          for g in sorted(total)}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--bundle", required=True)
  ap.add_argument("--split", default="heldout", help="world split the clips come from")
  ap.add_argument("--clips", type=int, default=128, help="clips of the split to draw from")
  ap.add_argument("--strengths", default="0.6,0.9,1.0", help="empty: the loss gap only")
  ap.add_argument("--gap_times", default="0.3,0.5,0.7,0.9")
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--guidance", type=float, default=5.0)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--frames", type=int, default=0, help="0: the bundle's; 1: images")
  ap.add_argument("--given", choices=("first", "none"), default="first",
                  help="loss gap: the first latent frame given, or nothing")
  ap.add_argument("--caption", type=int, default=1, help="caption index (0 detailed, 1 short)")
  ap.add_argument("--all_clips", action="store_true", help="loss gap over every clip")
  ap.add_argument("--bind", action="store_true",
                  help="the loss gap over two-object clips whose objects move differently, "
                       "with 'bind': their motions exchanged in the caption (--caption 0 or 1)")
  ap.add_argument("--i2v", action="store_true",
                  help="only: image to video from the real first frame of every clip, "
                       "per-object direction by number of objects")
  ap.add_argument("--alone", action="store_true",
                  help="with --i2v: two-object clips also under each object's own caption")
  args = ap.parse_args()

  pipe = Pipeline.load(args.bundle)
  frames, height, width = args.frames or pipe.c.frames, pipe.c.height, pipe.c.width
  spec = commands.VideoSpec(frames=frames, height=height, width=width, fps=pipe.c.fps)
  every = commands.world_prompts(args.split, args.clips, spec)
  if args.i2v:
    result = i2v_directions(pipe, every, args.steps, args.guidance, args.seed, args.caption,
                            args.alone)
    print(json.dumps({"bundle": args.bundle, "split": args.split, "i2v": result}))
    return
  clips = [c for c in every if len(c["metadata"]["objects"]) == 1
           and c["metadata"]["objects"][0]["direction"] in OPPOSITE]
  gap_clips = every if args.all_clips else clips
  if args.bind:
    gap_clips = [c for c in every if len(c["metadata"]["objects"]) == 2 and len(
        {(o["direction"], o["speed"]) for o in c["metadata"]["objects"]}) == 2]
  gap = loss_gap(pipe, gap_clips, [float(t) for t in args.gap_times.split(",")], args.seed,
                 given_first=args.given == "first", caption=args.caption, bind=args.bind)
  for t, row in gap.items():
    print(f"loss gap at t={t} ({len(gap_clips)} clips): true-caption MSE {row['true']}, "
          + ", ".join(f"{k}-swapped x{v:.4f}" for k, v in row.items() if k != "true"),
          flush=True)
  summary = {"bundle": args.bundle, "split": args.split,
             "clips": len(gap_clips), "loss_gap": gap,
             "strengths": {}}
  for strength in (float(s) for s in args.strengths.split(",") if s):
    counts = collections.Counter()
    for clip in clips:
      truth = clip["metadata"]["objects"][0]["direction"]
      short = clip["captions"][1]
      for kind, caption, wanted in (("true", short, truth),
                                    ("swapped", swap_words(short, SWAP), OPPOSITE[truth])):
        video = pipe.restyle([caption], clip["video"], strength=strength, steps=args.steps,
                             guidance=args.guidance, seed=args.seed).video
        scored = oracle.score_clip(np.asarray(video)[0], clip["metadata"], details=True)
        measured = scored["details"]["objects"][0].get("measured", {}).get("direction")
        outcome = ("caption" if measured == wanted else
                   "input" if measured == truth else "other")
        counts[f"{kind}_follows_{outcome}"] += 1
    summary["strengths"][str(strength)] = dict(sorted(counts.items()))
    print(f"strength {strength}: {len(clips)} clips, {dict(sorted(counts.items()))}",
          flush=True)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()

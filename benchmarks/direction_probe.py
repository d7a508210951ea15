"""Does a bundle's transformer read direction words? A caption-swap probe with the oracle.

  .venv/bin/python benchmarks/direction_probe.py --bundle=runs/default/bundle
  .venv/bin/python benchmarks/direction_probe.py --bundle=B --clips=128 --strengths=0.6,0.9,1

Takes the heldout clips (of the first --clips) with one object moving left, right, up or down,
restyles each (noised to `strength`, then denoised) with its short caption and again with its
direction words swapped (left <-> right, up <-> down), and counts whose direction the oracle
measures in the result: the caption's, the input's, or another. A model that reads direction
words follows the swapped caption at high strength; at strength 1 this is text to video.
Prints one line per strength and a JSON summary (docs/benchmarks.md, "Session 4").
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidgen.evaluate import commands, oracle  # noqa: E402
from vidgen.pipeline import Pipeline  # noqa: E402

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SWAP = dict(OPPOSITE, leftward="rightward", rightward="leftward", upward="downward",
            downward="upward")


def swap_directions(caption: str) -> str:
  return " ".join(SWAP.get(word, word) for word in caption.split(" "))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--bundle", required=True)
  ap.add_argument("--clips", type=int, default=128, help="heldout clips to draw from")
  ap.add_argument("--strengths", default="0.6,0.9,1.0")
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--guidance", type=float, default=5.0)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()

  pipe = Pipeline.load(args.bundle)
  frames, height, width = pipe.c.frames, pipe.c.height, pipe.c.width
  spec = commands.VideoSpec(frames=frames, height=height, width=width, fps=pipe.c.fps)
  clips = [c for c in commands.world_prompts("heldout", args.clips, spec)
           if len(c["metadata"]["objects"]) == 1
           and c["metadata"]["objects"][0]["direction"] in OPPOSITE]
  summary = {"bundle": args.bundle, "clips": len(clips), "strengths": {}}
  for strength in (float(s) for s in args.strengths.split(",")):
    counts = collections.Counter()
    for clip in clips:
      truth = clip["metadata"]["objects"][0]["direction"]
      short = clip["captions"][1]
      for kind, caption, wanted in (("true", short, truth),
                                    ("swapped", swap_directions(short), OPPOSITE[truth])):
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

"""Clips per second of Shapes World rendering and of the full input pipeline.

  .venv/bin/python benchmarks/pipeline.py --out=benchmarks/pipeline.json

For 16 frames of 32x32 and of 64x64: renders clips alone, then builds a small Shapes World
(TFDS ArrayRecord), trains its tokenizer, and times the grain pipeline (read, sample, resize,
tokenize, batch) with 0 and more worker processes. Prints a table; --out writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()  # grain workers read absl flags.

import ml_collections  # noqa: E402

from vidgen import world  # noqa: E402
from vidgen.data import commands, pipeline  # noqa: E402
from vidgen.data import config as data_config  # noqa: E402


def bench_render(size: int, frames: int, clips: int) -> float:
  """Rendered clips per second."""
  start = time.perf_counter()
  for i in range(clips):
    world.generate_clip("train", i, seed=123, height=size, width=size, frames=frames, fps=8.0)
  return clips / (time.perf_counter() - start)


def make_config(data_dir: str, size: int, frames: int, clips: int,
                batch: int) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.data = data_config.get_config()
  d = config.data
  d.data_dir = data_dir
  d.world.height = d.world.width = size
  d.world.frames = frames
  d.world.train_size = clips
  d.world.validation_size = d.world.test_size = d.world.heldout_size = 16
  d.buckets = [(frames, size, size, batch)]
  d.tokenizer.vocab_size = 256
  return config


def bench_pipeline(config: ml_collections.ConfigDict, workers: int, batches: int) -> float:
  """Pipeline clips per second after a warm-up batch (excludes worker start-up)."""
  config = config.copy_and_resolve_references()
  config.data.worker_count = workers
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  try:
    first = next(it)
    start = time.perf_counter()
    clips = 0
    for _ in range(batches):
      clips += next(it)["video"].shape[0]
    return clips / (time.perf_counter() - start)
  finally:
    del first, it


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="32,64")
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--clips", type=int, default=256, help="train clips built per size")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--batches", type=int, default=30, help="timed batches per setting")
  parser.add_argument("--workers", default="0,2")
  parser.add_argument("--render_clips", type=int, default=100)
  parser.add_argument("--data_dir", default="", help="default: a temporary folder")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="vidgen_bench_")
  rows = []
  for size in (int(s) for s in args.sizes.split(",")):
    config = make_config(data_dir, size, args.frames, args.clips, args.batch)
    render = bench_render(size, args.frames, args.render_clips)
    rows.append({"stage": "render", "frames": args.frames, "size": size, "workers": 0,
                 "clips_per_s": render})
    commands.build(config.data)
    commands.train_tokenizer(config.data)
    for workers in (int(w) for w in args.workers.split(",")):
      rate = bench_pipeline(config, workers, args.batches)
      rows.append({"stage": "pipeline", "frames": args.frames, "size": size,
                   "workers": workers, "clips_per_s": rate})
    if size > 32:  # Also the resize path: stored at size, batched at half (bilinear crop).
      half = config.copy_and_resolve_references()
      half.data.buckets = [(args.frames, size // 2, size // 2, args.batch)]
      rate = bench_pipeline(half, 0, args.batches)
      rows.append({"stage": f"resize>{size // 2}", "frames": args.frames, "size": size,
                   "workers": 0, "clips_per_s": rate})
  print(f"\n{'stage':<9} {'clip':>12} {'workers':>8} {'clips/s':>9}")
  for r in rows:
    print(f"{r['stage']:<9} {r['frames']:>3}x{r['size']}x{r['size']:<5} {r['workers']:>8} "
          f"{r['clips_per_s']:>9.1f}")
  result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "settings": vars(args), "results": rows}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

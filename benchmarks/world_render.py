"""Clips per second of Shapes World generation (scene, render, captions) on one core.

Generation is numpy on one thread; the input pipeline's workers multiply it.

  .venv/bin/python benchmarks/world_render.py [--clips 300] [--out world_render.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

from vidgen import world


def clips_per_second(height: int, width: int, frames: int, fps: float, clips: int,
                     split: str = "train") -> tuple[float, float]:
  """(wall-clock, CPU-time) generation rate of `clips` consecutive clips, best of 2 runs.

  The CPU-time rate is what one uncontended core would do on a shared machine.
  """
  best_wall = best_cpu = float("inf")
  for _ in range(2):
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(clips):
      world.generate_clip(split, i, seed=0, height=height, width=width, frames=frames, fps=fps)
    best_wall = min(best_wall, time.perf_counter() - wall)
    best_cpu = min(best_cpu, time.process_time() - cpu)
  return clips / best_wall, clips / best_cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clips", type=int, default=300)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--fps", type=float, default=8.0)
  parser.add_argument("--sizes", default="32x32,64x64", help="comma-separated HxW")
  parser.add_argument("--out", default=None, help="also write the figures to this JSON")
  args = parser.parse_args()
  results = []
  for size in args.sizes.split(","):
    height, width = (int(v) for v in size.split("x"))
    rate, cpu_rate = clips_per_second(height, width, args.frames, args.fps, args.clips)
    results.append({"height": height, "width": width, "frames": args.frames,
                    "fps": args.fps, "clips_per_second": round(rate, 1),
                    "clips_per_cpu_second": round(cpu_rate, 1)})
    print(f"{args.frames} frames of {height}x{width}: {rate:.1f} clips/s "
          f"({cpu_rate:.1f} per CPU-second)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"machine": platform.processor() or platform.machine(), "results": results},
                f, indent=2)


if __name__ == "__main__":
  main()

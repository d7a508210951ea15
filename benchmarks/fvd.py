"""I3D feature throughput (clips/s) for FVD, and the cost of the distances themselves.

  .venv/bin/python benchmarks/fvd.py [--frames 16] [--size 32] [--batch-sizes 4,8] [--out f.json]

Clips are resized to 224x224 inside the jitted function, so the input size barely matters;
compute grows with the frame count. CPU seconds per clip are printed too: on a shared machine
they say more than wall time. Compile time is reported apart from steady-state time
(best of --repeats timed batches after one warm-up). Also times Fréchet distance (scipy
sqrtm and numpy eigh) and KVD on 400-dim features.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vidgen.evaluate import fvd  # noqa: E402


def features_throughput(i3d: fvd.I3D, batch: int, frames: int, size: int,
                        repeats: int) -> dict[str, float]:
  """Compile seconds and steady-state clips/s of I3D features for one batch shape."""
  videos = np.random.default_rng(0).integers(0, 256, (batch, frames, size, size, 3), np.uint8)
  start = time.perf_counter()
  fvd.i3d_features(videos, batch_size=batch, i3d=i3d)
  first = time.perf_counter() - start
  best, best_cpu = float("inf"), float("inf")
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fvd.i3d_features(videos, batch_size=batch, i3d=i3d)
    best = min(best, time.perf_counter() - start)
    best_cpu = min(best_cpu, time.process_time() - start_cpu)
  # CPU seconds (all threads) per clip: less sensitive than wall time to other processes.
  return {"batch": batch, "frames": frames, "size": size, "first_call_s": first,
          "batch_s": best, "clips_per_s": batch / best, "cpu_s_per_clip": best_cpu / batch}


def distance_timings(n: int, dim: int = 400) -> dict[str, float]:
  """Seconds for FVD (scipy, eigh) and KVD on n random feature vectors per set."""
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim)) + 0.1
  out = {"n": n}
  for name, fn in (("fvd_scipy_s", lambda: fvd.fvd_from_features(a, b, method="scipy")),
                   ("fvd_eigh_s", lambda: fvd.fvd_from_features(a, b, method="eigh")),
                   ("kvd_s", lambda: fvd.kvd_from_features(a, b))):
    start = time.perf_counter()
    fn()
    out[name] = time.perf_counter() - start
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--size", type=int, default=32, help="input clip height = width")
  parser.add_argument("--batch-sizes", default="4,8")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--distance-n", type=int, default=256)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  start = time.perf_counter()
  i3d = fvd.load_i3d()
  load_s = time.perf_counter() - start
  results = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
             "machine": platform.machine(), "load_s": load_s, "features": [],
             "distances": distance_timings(args.distance_n)}
  print(f"I3D load {load_s:.2f}s on {results['device']} ({os.cpu_count()} CPUs)")
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    r = features_throughput(i3d, batch, args.frames, args.size, args.repeats)
    results["features"].append(r)
    print(f"batch {batch:>3} x {args.frames} frames of {args.size}px -> 224px: "
          f"{r['clips_per_s']:.2f} clips/s ({r['batch_s']:.2f}s a batch; "
          f"first call {r['first_call_s']:.1f}s with compile; "
          f"{r['cpu_s_per_clip']:.2f} CPU-s a clip)")
  d = results["distances"]
  print(f"distances on {d['n']} x 400 features: FVD scipy {d['fvd_scipy_s']:.2f}s, "
        f"eigh {d['fvd_eigh_s']:.2f}s, KVD {d['kvd_s']:.3f}s")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()

"""Checkpoint overhead: how long a save blocks the training loop, async vs blocking.

  .venv/bin/python benchmarks/checkpoint.py [--mb=256] [--repeats=3]

Saves a train-state-like pytree of `--mb` MiB (f32, sharded over 8 forced CPU devices) plus
a grain iterator state and the config through vidgen.train.checkpoint, and reports the time
`save()` blocks the caller and the time until the checkpoint is complete on disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--mb", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from tests._toy_task import get_config, make_iterator
  from vidgen.train import checkpoint as ckpt

  config = get_config()
  mesh = jax.make_mesh((jax.device_count(),), ("fsdp",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  rows = args.mb * 2**20 // 4 // 1024
  rows -= rows % jax.device_count()
  sharding = NamedSharding(mesh, P("fsdp"))
  state = {f"w{i}": jax.device_put(jnp.full((rows // 4, 1024), i, jnp.float32), sharding)
           for i in range(4)}
  jax.block_until_ready(state)
  iterator = make_iterator(config, process_index=0, process_count=1)
  results = {}
  for mode in ("blocking", "async"):
    blocked, total = [], []
    for r in range(args.repeats):
      workdir = tempfile.mkdtemp(prefix=f"ckpt_bench_{mode}_")
      manager = ckpt.make_manager(workdir, keep=2, async_save=mode == "async")
      t0 = time.perf_counter()
      ckpt.save(manager, r + 1, state, iterator, config)
      t1 = time.perf_counter()
      manager.wait_until_finished()
      t2 = time.perf_counter()
      manager.close()
      blocked.append(t1 - t0)
      total.append(t2 - t0)
      shutil.rmtree(workdir)
    results[mode] = {"blocks_loop_s": float(np.median(blocked)),
                     "until_on_disk_s": float(np.median(total))}
  results["state_mib"] = 4 * (rows // 4) * 1024 * 4 / 2**20
  print(json.dumps(results))
  b, a = results["blocking"], results["async"]
  print(f"{results['state_mib']:.0f} MiB state on {jax.device_count()} devices: blocking save "
        f"stops the loop {b['blocks_loop_s']:.2f} s; async save stops it "
        f"{a['blocks_loop_s']:.2f} s (complete on disk after {a['until_on_disk_s']:.2f} s)")


if __name__ == "__main__":
  main()

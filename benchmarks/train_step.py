"""Train-step time on 1 and 8 forced CPU devices, same global batch.

  .venv/bin/python benchmarks/train_step.py [--task=t2v|toy] [--steps=5]

Each device count runs in a fresh process (forced CPU devices must be set before jax
starts). The step is the trainer's real one (vidgen.train.step, jit with explicit
shardings, donated state) on the config's mesh (fsdp fills the devices).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(task_name: str, steps: int, mesh_context: bool) -> dict:
  sys.path.insert(0, ROOT)
  import jax
  import flax.linen as nn
  import numpy as np
  from vidgen.train import aot, sharding as shd, state as state_lib, step as step_lib
  from vidgen.train.optimizer import make_optimizer
  from vidgen.train.tasks import get_task
  if task_name == "toy":
    from tests._toy_task import get_config
    config = get_config()
    config.model.embed, config.model.mlp = 256, 1024
    config.data.update(global_batch=8, frames=4, height=16, width=16)
  else:
    from vidgen import config as config_lib
    config = config_lib.load(os.path.join(ROOT, "configs/t2v_tiny.py") + ":tiny,pixel")
  task = get_task(config)
  mesh = shd.make_mesh(config.mesh)
  rules = shd.rules_from_config(config.mesh)
  tx, schedule = make_optimizer(config.train)
  shapes = aot.batch_shapes_for(task, config)[0]
  state, shardings = state_lib.create_train_state(task, tx, shapes, True, 0, mesh, rules)
  fn = step_lib.jit_train_step(step_lib.make_train_step(
      task, tx, schedule, microbatches=1, ema_decay=0.999, mesh=mesh), shardings, mesh)
  rng = np.random.default_rng(0)
  local = {}
  for k, v in shapes.items():
    if v.dtype == np.uint8:
      local[k] = rng.integers(0, 256, v.shape, np.uint8)
    elif v.dtype == np.int32:
      local[k] = rng.integers(1, 32, v.shape, np.int32)  # within every vocab here
    elif v.dtype == np.bool_:
      local[k] = np.ones(v.shape, np.bool_)
    else:
      local[k] = np.full(v.shape, 8.0, v.dtype)
  batch = shd.to_global(local, mesh)
  ctx = shd.use(mesh, rules) if mesh_context else nn.logical_axis_rules(rules)
  with ctx:
    t0 = time.perf_counter()
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, m = fn(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
  return {"task": task_name, "devices": jax.device_count(), "mesh": dict(mesh.shape),
          "batch": {k: list(v.shape) for k, v in shapes.items()},
          "params": state_lib.param_count(state.params), "first_step_s": compile_s,
          "step_s_median": float(np.median(times)), "step_s_min": float(np.min(times)),
          "flops_per_step": float(task.flops_per_step(batch)), "mesh_context": mesh_context,
          "loss": float(m["train/loss"])}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--task", default="t2v", choices=("t2v", "toy"))
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--devices", type=int, default=0, help="(internal) child run")
  parser.add_argument("--no_mesh_context", action="store_true",
                      help="trace without jax.set_mesh (activation constraints off)")
  args = parser.parse_args()
  if args.devices:
    print(json.dumps(measure(args.task, args.steps, not args.no_mesh_context)), flush=True)
    return
  results = []
  for n in (1, 8):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    cmd = [sys.executable, __file__, f"--task={args.task}", f"--steps={args.steps}",
           f"--devices={n}"] + (["--no_mesh_context"] if args.no_mesh_context else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
      sys.exit(f"{n} devices failed:\n{out.stderr[-3000:]}")
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(results[-1]), flush=True)
  one, eight = results
  print(f"{args.task}: {one['params'] / 1e6:.2f} M params, batch {one['batch'].get('video')}; "
        f"step {one['step_s_median'] * 1e3:.0f} ms on 1 device, "
        f"{eight['step_s_median'] * 1e3:.0f} ms on 8 forced CPU devices "
        f"(ratio {eight['step_s_median'] / one['step_s_median']:.2f}); "
        f"first step incl. compile {one['first_step_s']:.1f} s / {eight['first_step_s']:.1f} s")


if __name__ == "__main__":
  main()

"""`vidgen compile --config=configs/X.py --devices=N`: will it fit?

Lowers and compiles the train step for N forced CPU devices with the config's mesh and
prints per-device memory from the compiled executable. Forced devices must be set before
jax starts, so the command re-runs itself in a fresh process with XLA_FLAGS set.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

_CHILD_ENV = "VIDGEN_AOT_CHILD"


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  from vidgen import config as config_lib  # pylint: disable=g-import-not-at-top
  rest, overrides = config_lib.split_overrides(argv)
  parser = argparse.ArgumentParser(prog="vidgen compile", description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="configs/X.py[:ARG]")
  parser.add_argument("--devices", type=int, required=True, help="number of devices")
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  parser.add_argument("--no_mesh_context", action="store_true",
                      help="trace without jax.set_mesh: activation sharding constraints off, "
                           "XLA propagates shardings from the state and batch")
  return parser.parse_args(rest), overrides


def batch_shapes_for(task: Any, config: Any) -> list[dict]:
  """Global batch shapes to compile for: the task's `batch_spec()` if it has one, else one
  per `config.data.buckets` entry (frames, height, width, global batch) in the batch layout
  of docs/design.md, else one real batch from the iterator."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if hasattr(task, "batch_spec"):
    return [dict(task.batch_spec())]
  data = config.get("data")
  if data is not None and "buckets" in data and "tokenizer" in data:
    length = int(data.tokenizer.max_len)
    return [{"video": jax.ShapeDtypeStruct((b, t, h, w, 3), np.uint8),
             "tokens": jax.ShapeDtypeStruct((b, length), np.int32),
             "text_mask": jax.ShapeDtypeStruct((b, length), np.bool_),
             "fps": jax.ShapeDtypeStruct((b,), np.float32)}
            for t, h, w, b in data.buckets]
  from vidgen.train import loop, sharding  # pylint: disable=g-import-not-at-top
  make = getattr(task, "make_train_iterator", None) or loop.default_iterator
  iterator = make(config, process_index=0, process_count=1)
  return [sharding.global_batch_shapes(next(iterator), 1)]


def compile_report(config: Any, task: Any = None, shapes: dict | None = None, *,
                   mesh_context: bool = True, devices: Any = None) -> dict:
  """Compiles the train step for `devices` (default: all) and one batch shape (default: the
  first of `batch_shapes_for`); returns sizes in bytes per device."""
  import jax  # pylint: disable=g-import-not-at-top
  from vidgen.train import sharding as shd  # pylint: disable=g-import-not-at-top
  from vidgen.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from vidgen.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from vidgen.train.config import validate  # pylint: disable=g-import-not-at-top
  from vidgen.train.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  from vidgen.train.tasks import get_task  # pylint: disable=g-import-not-at-top

  devices = jax.devices() if devices is None else list(devices)
  validate(config, len(devices))
  task = get_task(config) if task is None else task
  mesh = shd.make_mesh(config.mesh, devices)
  rules = shd.rules_from_config(config.mesh)
  tx, schedule = make_optimizer(config.train)
  ema = config.train.ema_decay > 0
  shapes = batch_shapes_for(task, config)[0] if shapes is None else shapes
  abstract, shardings = state_lib.state_shardings(task, tx, shapes, ema, config.seed, mesh,
                                                  rules)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(task, tx, schedule, microbatches=config.train.microbatches,
                               ema_decay=config.train.ema_decay,
                               ema_warmup=config.train.ema_warmup, mesh=mesh), shardings, mesh)
  target = state_lib.with_shardings(abstract, shardings)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  with shd.use(mesh, rules) if mesh_context else nn.logical_axis_rules(rules):
    compiled = step.lower(target, shd.abstract_batch(shapes, mesh)).compile()
  mem = compiled.memory_analysis()

  def per_device(tree) -> int:
    total = 0
    for a in jax.tree.leaves(tree):
      shard = a.sharding.shard_shape(a.shape)
      total += int(jax.numpy.dtype(a.dtype).itemsize * max(1, _prod(shard)))
    return total

  report = {
      "devices": len(devices),
      "activation_constraints": mesh_context,
      "mesh": dict(mesh.shape),
      "batch": {k: list(v.shape) for k, v in shapes.items()},
      "params": state_lib.param_count(abstract.params),
      "state_bytes_per_device": per_device(target),
      "params_bytes_per_device": per_device(target.params),
      "flops_per_step": float(task.flops_per_step(shd.abstract_batch(shapes, mesh)) or 0.0),
  }
  if mem is not None:
    for name in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                 "temp_size_in_bytes", "generated_code_size_in_bytes"):
      report[name] = int(getattr(mem, name, 0) or 0)
    report["peak_bytes_per_device_estimate"] = (
        report["argument_size_in_bytes"] + report["output_size_in_bytes"]
        - report["alias_size_in_bytes"] + report["temp_size_in_bytes"])
  return report


def _prod(xs) -> int:
  out = 1
  for x in xs:
    out *= int(x)
  return out


def format_report(r: dict) -> str:
  def gib(b: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
      if b >= scale:
        return f"{b / scale:.2f} {unit}"
    return f"{int(b)} B"
  lines = [f"devices {r['devices']}, mesh {r['mesh']}"
           + ("" if r.get("activation_constraints", True) else
              " (activation constraints off: --no_mesh_context)"),
           f"batch {r['batch']}",
           f"params {r['params'] / 1e6:.3f} M; per device: params "
           f"{gib(r['params_bytes_per_device'])}, train state {gib(r['state_bytes_per_device'])}",
           f"flops/step {r['flops_per_step']:.3e}"]
  if "temp_size_in_bytes" in r:
    lines += [f"compiled, per device: arguments {gib(r['argument_size_in_bytes'])}, "
              f"outputs {gib(r['output_size_in_bytes'])}, "
              f"aliased {gib(r['alias_size_in_bytes'])}, "
              f"temporaries {gib(r['temp_size_in_bytes'])}, "
              f"code {gib(r['generated_code_size_in_bytes'])}",
              f"peak estimate per device: {gib(r['peak_bytes_per_device_estimate'])} "
              "(arguments + outputs - aliased + temporaries)"]
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  args, overrides = _parse(argv)
  from vidgen.errors import VidgenError  # pylint: disable=g-import-not-at-top
  if args.devices < 1:
    raise VidgenError("--devices must be >= 1")
  if os.environ.get(_CHILD_ENV) != "1":
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{_CHILD_ENV: "1"})
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={args.devices}").strip()
    return subprocess.call([sys.executable, "-m", "vidgen.train.aot", *argv], env=env)
  from vidgen import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config, overrides)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() != args.devices:
    raise VidgenError(f"expected {args.devices} devices, jax sees {jax.device_count()}: "
                      "run `vidgen compile` in a fresh process")
  from vidgen.train.tasks import get_task  # pylint: disable=g-import-not-at-top
  task = get_task(config)
  for shapes in batch_shapes_for(task, config):
    report = compile_report(config, task, shapes, mesh_context=not args.no_mesh_context)
    print(json.dumps(report) if args.json else format_report(report) + "\n", flush=True)
  return 0


if __name__ == "__main__":
  from vidgen.errors import VidgenError as _Err  # pylint: disable=g-import-not-at-top
  try:
    sys.exit(main(sys.argv[1:]))
  except _Err as e:
    print(f"vidgen compile: error: {e}", file=sys.stderr)
    sys.exit(2)

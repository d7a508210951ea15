"""The `train` and `mesh` config sections that every task config embeds, and their checks.

A task config does `config.train = get_train_config()` and `config.mesh = get_mesh_config()`
and overrides what it needs. `validate(config, device_count)` runs before any work starts.
"""
from __future__ import annotations

import math

import ml_collections

from vidgen.errors import VidgenError

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

# Logical name -> mesh axes, in priority order (flax takes the first rule whose mesh axes are
# still free in a spec, so `batch` claims data+fsdp before `embed` could take fsdp).
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("text_length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("channels", None),
    ("frames", None),
    ("height", None),
    ("width", None),
    ("layers", None),
    ("norm", None),
    ("patch", None),
)


def get_train_config() -> ml_collections.ConfigDict:
  """Steps, optimizer, schedule, EMA, accumulation, logging and checkpoint cadence."""
  c = ml_collections.ConfigDict()
  c.steps = 1000
  c.microbatches = 1  # Gradient accumulation: the global batch is split into this many.
  c.lr = 3e-4
  c.warmup_steps = 100
  c.schedule = "cosine"  # cosine | constant (both after a linear warm-up)
  c.final_lr_fraction = 0.1  # cosine decays to lr * this at `steps`
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.weight_decay = 0.01
  # Params whose path contains one of these substrings get no weight decay.
  c.no_decay_names = ("bias", "scale", "norm", "embedding")
  c.grad_clip_norm = 1.0  # 0 disables clipping
  c.ema_decay = 0.999  # 0 disables EMA
  c.ema_warmup = True  # decay min(ema_decay, (1 + step) / (10 + step)): vidgen.train.step
  c.log_every = 10
  c.checkpoint_every = 500
  c.keep = 3  # keep the last K checkpoints ...
  c.keep_period = 0  # ... and every M-th step's forever (0: none)
  c.async_checkpoint = True
  c.sample_every = 0  # 0: never call task.sample
  c.sample_prompts = ()  # t2v: prompts sampled every sample_every steps
  c.sample_steps = 20
  # Every N steps: task.evaluate(params, step, workdir) -> scalars (EMA params), logged.
  # A t2v task without one gets vidgen.evaluate.val_loss.hook. 0: never.
  c.eval_every = 0
  c.eval_max_batches = 0  # eval batches per evaluation (0: the whole eval split)
  c.max_consecutive_nonfinite = 10
  c.progress_bar = True
  return c


def get_mesh_config() -> ml_collections.ConfigDict:
  """Mesh axis sizes (-1 = fill with the remaining devices) and logical axis rules."""
  c = ml_collections.ConfigDict()
  c.data = 1
  c.fsdp = -1
  c.tensor = 1
  c.sequence = 1
  # Multi-slice: how many slices each axis spans over DCN (product = number of slices).
  c.dcn_data = 1
  c.dcn_fsdp = 1
  c.dcn_tensor = 1
  c.dcn_sequence = 1
  c.rules = DEFAULT_RULES
  return c


def resolve_axis_sizes(sizes: dict[str, int], total: int, what: str) -> dict[str, int]:
  """Replaces one -1 by what is left of `total`; checks the product equals `total`."""
  fill = [k for k, v in sizes.items() if v == -1]
  if len(fill) > 1:
    raise VidgenError(f"mesh: at most one {what} axis may be -1 (fill), got {fill}")
  for k, v in sizes.items():
    if v != -1 and v < 1:
      raise VidgenError(f"mesh: {what} axis {k}={v} must be >= 1 or -1 (fill)")
  known = math.prod(v for v in sizes.values() if v != -1)
  if fill:
    if total % known:
      raise VidgenError(f"mesh: {total} {what} devices do not divide by the fixed axes "
                        f"{ {k: v for k, v in sizes.items() if v != -1} } (product {known})")
    sizes = {**sizes, fill[0]: total // known}
  if math.prod(sizes.values()) != total:
    raise VidgenError(f"mesh: axis sizes {sizes} multiply to {math.prod(sizes.values())} but "
                      f"there are {total} {what} devices; set one axis to -1 to fill")
  return sizes


def mesh_shapes(mesh_config: ml_collections.ConfigDict,
                device_count: int) -> tuple[dict[str, int], dict[str, int]]:
  """Returns (ici sizes, dcn sizes) per mesh axis, validated for `device_count` devices."""
  dcn = {a: int(mesh_config[f"dcn_{a}"]) for a in MESH_AXES}
  for a, v in dcn.items():
    if v < 1:
      raise VidgenError(f"mesh.dcn_{a}={v} must be >= 1")
  slices = math.prod(dcn.values())
  if device_count % slices:
    raise VidgenError(f"mesh: {device_count} devices cannot form {slices} slices "
                      f"(dcn sizes {dcn})")
  ici = resolve_axis_sizes({a: int(mesh_config[a]) for a in MESH_AXES},
                           device_count // slices, "per-slice")
  return ici, dcn


def validate(config: ml_collections.ConfigDict, device_count: int,
             process_count: int = 1) -> None:
  """Checks the train and mesh sections before any work; raises VidgenError."""
  t = config.train
  if t.steps < 1:
    raise VidgenError(f"train.steps={t.steps} must be >= 1")
  if t.microbatches < 1:
    raise VidgenError(f"train.microbatches={t.microbatches} must be >= 1")
  if t.schedule not in ("cosine", "constant"):
    raise VidgenError(f"train.schedule={t.schedule!r}: expected 'cosine' or 'constant'")
  if t.warmup_steps < 0 or t.lr <= 0:
    raise VidgenError(f"train.lr={t.lr} must be > 0 and train.warmup_steps={t.warmup_steps} "
                      ">= 0")
  if not 0.0 <= t.ema_decay < 1.0:
    raise VidgenError(f"train.ema_decay={t.ema_decay} must be in [0, 1)")
  for key in ("log_every", "checkpoint_every"):
    if t[key] < 1:
      raise VidgenError(f"train.{key}={t[key]} must be >= 1")
  if t.keep < 1 or t.keep_period < 0 or t.sample_every < 0:
    raise VidgenError("train.keep must be >= 1, train.keep_period and train.sample_every >= 0")
  if t.get("eval_every", 0) < 0 or t.get("eval_max_batches", 0) < 0:
    raise VidgenError("train.eval_every and train.eval_max_batches must be >= 0")
  if t.max_consecutive_nonfinite < 1:
    raise VidgenError("train.max_consecutive_nonfinite must be >= 1")
  ici, dcn = mesh_shapes(config.mesh, device_count)
  if process_count > 1 and device_count % process_count:
    raise VidgenError(f"{device_count} devices do not split over {process_count} processes")
  for rule in config.mesh.rules:
    if len(rule) != 2:
      raise VidgenError(f"mesh.rules: each rule is (logical name, mesh axes), got {rule!r}")
    axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
    for axis in axes:
      if axis is not None and axis not in MESH_AXES:
        raise VidgenError(f"mesh.rules: {rule!r} names mesh axis {axis!r}; mesh axes are "
                          f"{MESH_AXES}")
  del ici, dcn


def batch_divisor(mesh_config: ml_collections.ConfigDict, device_count: int) -> int:
  """The global batch must be a multiple of this (the data x fsdp devices)."""
  ici, dcn = mesh_shapes(mesh_config, device_count)
  return ici["data"] * ici["fsdp"] * dcn["data"] * dcn["fsdp"]

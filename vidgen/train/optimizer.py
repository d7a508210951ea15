"""AdamW with warm-up + cosine/constant schedule, global-norm clipping and a decay mask."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import optax


def make_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to `lr`, then cosine decay to lr * final_lr_fraction, or constant."""
  warmup = max(int(t.warmup_steps), 0)
  if t.schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(t.lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, t.lr, warmup), optax.constant_schedule(t.lr)], [warmup])
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.lr, warmup_steps=warmup,
      decay_steps=max(int(t.steps), warmup + 1), end_value=t.lr * t.final_lr_fraction)


def path_name(path: Sequence[Any]) -> str:
  """'a/b/kernel' for a pytree key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def decay_mask(params: Any, no_decay_names: Sequence[str]) -> Any:
  """True where weight decay applies: leaves whose path names none of `no_decay_names`."""
  names = tuple(n.lower() for n in no_decay_names)
  return jax.tree_util.tree_map_with_path(
      lambda p, _: not any(n in path_name(p).lower() for n in names), params)


def make_optimizer(t: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  """Returns (transformation, schedule). Clipping first, then AdamW with the mask."""
  schedule = make_schedule(t)
  no_decay = tuple(t.no_decay_names)
  parts = []
  if t.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(t.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay,
                           mask=lambda p: decay_mask(p, no_decay)))
  return optax.chain(*parts), schedule

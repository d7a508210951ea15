"""What the trainer needs of a model family (the autoencoder, the text-to-video transformer).

One trainer (`vidgen.train.loop`) serves every task. A task is a small object built from the
config; it owns its Flax module(s) and any frozen parts (a trained autoencoder, a frozen text
encoder) and exposes pure functions that the trainer jits with explicit shardings.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

import jax

Batch = Mapping[str, jax.Array]  # Global arrays; see docs/design.md for the keys.
Params = Any  # A pytree of arrays; at init time leaves are nn.Partitioned (logical names).


class Task(Protocol):
  """A trainable model family."""

  def init(self, rng: jax.Array, batch: Batch) -> Params:
    """Returns the trainable params, boxed with logical axis names (nn.Partitioned).

    The trainer calls it under `jax.eval_shape` to get shapes and logical specs, then jits
    it with the resulting out_shardings, so state is born sharded.
    """

  def loss(self, params: Params, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
    """Returns (scalar f32 loss, flat dict of scalar metrics). Pure; jitted by the trainer."""

  def flops_per_step(self, batch: Batch) -> float:
    """Analytic training FLOPs (forward + backward) of one step on this batch, for MFU."""

"""The train state and how it is born sharded (eval_shape -> logical specs -> jit(init))."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from vidgen.train import sharding as shd


class TrainState(flax.struct.PyTreeNode):
  """Everything a step reads and writes; all leaves are global arrays."""
  step: jax.Array  # int32 scalar: steps taken (including skipped ones)
  params: Any
  opt_state: Any
  ema_params: Any  # {} when EMA is off
  rng: jax.Array  # raw uint32 key; the step key is fold_in(rng, step)
  nonfinite_streak: jax.Array  # int32: consecutive skipped steps
  nonfinite_total: jax.Array  # int32: all skipped steps


def _dummy_batch(batch_shapes: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
  return {k: jnp.zeros(v.shape, v.dtype) for k, v in batch_shapes.items()}


def init_fn(task: Any, tx: optax.GradientTransformation, batch_shapes: Mapping[str, Any],
            ema: bool, seed: int, *, boxed: bool = False) -> TrainState:
  """Builds the state from a seed; `boxed` keeps nn.Partitioned params (for specs only)."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  boxed_params = task.init(init_rng, _dummy_batch(batch_shapes))
  params = boxed_params if boxed else nn.unbox(boxed_params)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(
      step=zero, params=params,
      opt_state=None if boxed else tx.init(params),
      ema_params=jax.tree.map(lambda x: x, params) if ema else {},
      rng=state_rng, nonfinite_streak=zero, nonfinite_total=zero)


def state_shardings(task: Any, tx: optax.GradientTransformation,
                    batch_shapes: Mapping[str, Any], ema: bool, seed: int, mesh: Mesh,
                    rules: shd.Rules) -> tuple[TrainState, TrainState]:
  """Returns (abstract state, NamedSharding tree) without allocating anything.

  Param shardings come from the task's logical names; optimizer-state leaves that mirror
  params (Adam's mu, nu) take the params' shardings via optax.tree_map_params; the rest
  (counts) are replicated.
  """
  # Init is traced without a mesh in context: flax's DenseGeneral unboxes its flat kernel
  # under the kernel's (higher-rank) logical names, which fails when a mesh is set.
  # out_shardings alone place the state.
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda: init_fn(task, tx, batch_shapes, ema, seed, boxed=True))
    abstract = jax.eval_shape(lambda: init_fn(task, tx, batch_shapes, ema, seed))
  param_sh = shd.logical_to_shardings(boxed.params, mesh, rules)
  rep = shd.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_sh,
                                 transform_non_params=lambda _: rep)
  shardings = TrainState(step=rep, params=param_sh, opt_state=opt_sh,
                         ema_params=param_sh if ema else {}, rng=rep,
                         nonfinite_streak=rep, nonfinite_total=rep)
  return abstract, shardings


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """Abstract arrays carrying shardings: the target for restore and AOT lowering."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def create_train_state(task: Any, tx: optax.GradientTransformation,
                       batch_shapes: Mapping[str, Any], ema: bool, seed: int,
                       mesh: Mesh, rules: shd.Rules) -> tuple[TrainState, TrainState]:
  """Returns (state born sharded, its shardings)."""
  _, shardings = state_shardings(task, tx, batch_shapes, ema, seed, mesh, rules)
  with nn.logical_axis_rules(rules):
    state = jax.jit(lambda: init_fn(task, tx, batch_shapes, ema, seed),
                    out_shardings=shardings)()
  return state, shardings


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))

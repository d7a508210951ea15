"""The pure train step: accumulate grads over micro-batches, AdamW, EMA, non-finite skip."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidgen.train import sharding as shd
from vidgen.train.state import TrainState


def split_microbatches(batch: Mapping[str, jax.Array], n: int,
                       mesh: Mesh | None) -> dict[str, jax.Array]:
  """[B, ...] -> [n, B/n, ...] with micro-batch m = rows m, m+n, m+2n, ...

  Strided rows keep every micro-batch spread over all batch shards (a contiguous split
  would put each micro-batch on a few devices).
  """
  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} does not split into {n} micro-batches")
    y = jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1)
    if mesh is not None:
      y = jax.lax.with_sharding_constraint(
          y, NamedSharding(mesh, P(None, shd.BATCH_AXES)))
    return y
  return {k: split(v) for k, v in batch.items()}


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
  """The EMA decay used at `step`: `decay`, or with warm-up min(decay, (1 + step) / (10 + step))
  (diffusers' EMAModel default), so the average forgets the initial params within a few
  hundred steps instead of keeping decay**step of them (13 % after 2000 steps at 0.999)."""
  if not warmup:
    return jnp.float32(decay)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def make_train_step(task: Any, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    microbatches: int = 1, ema_decay: float = 0.0, ema_warmup: bool = False,
                    mesh: Mesh | None = None) -> Callable[[TrainState, Any],
                                                         tuple[TrainState, dict]]:
  """Returns train_step(state, batch) -> (state, metrics); pure, for jax.jit.

  A task whose `loss` takes a `step` keyword (a schedule inside the loss, e.g. the VAE's
  adversarial warm-up) gets the state's step."""
  takes_step = "step" in inspect.signature(task.loss).parameters

  def loss_and_grads(params, batch, rng, step):
    kw = {"step": step} if takes_step else {}
    (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng,
                                                                         **kw)
    return loss, metrics, grads

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    step_rng = jax.random.fold_in(state.rng, state.step)
    if microbatches == 1:
      loss, metrics, grads = loss_and_grads(state.params, batch, step_rng, state.step)
    else:
      micro = split_microbatches(batch, microbatches, mesh)

      def body(carry, xs):
        i, mb = xs
        loss, metrics, grads = loss_and_grads(state.params, mb, jax.random.fold_in(step_rng, i),
                                              state.step)
        return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

      zeros = jax.eval_shape(loss_and_grads, state.params,
                             jax.tree.map(lambda x: x[0], micro), step_rng, state.step)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32 if jnp.issubdtype(
          s.dtype, jnp.floating) else s.dtype), zeros)
      zeros = (zeros[0], zeros[1], jax.tree.map(jnp.zeros_like, state.params))
      total, _ = jax.lax.scan(body, zeros, (jnp.arange(microbatches), micro))
      loss, metrics, grads = jax.tree.map(lambda x: x / microbatches, total)

    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if ema_decay > 0:
      decay = ema_decay_at(state.step, ema_decay, ema_warmup)
      new_ema = jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype),
                             state.ema_params, new_params)
    else:
      new_ema = state.ema_params
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    streak = jnp.where(ok, 0, state.nonfinite_streak + 1)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        ema_params=keep(new_ema, state.ema_params),
        nonfinite_streak=streak,
        nonfinite_total=state.nonfinite_total + (~ok).astype(jnp.int32))
    out = {f"train/{k}": jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    out.update({
        "train/loss": loss.astype(jnp.float32),
        "train/grad_norm": grad_norm,
        "train/param_norm": optax.tree.norm(new_state.params),
        "train/lr": jnp.asarray(schedule(state.step), jnp.float32),
        "train/skipped": (~ok).astype(jnp.float32),
        "train/nonfinite_streak": streak,
    })
    return new_state, out

  return train_step


def jit_train_step(train_step: Callable, state_shardings: TrainState, mesh: Mesh) -> Callable:
  """jax.jit with explicit shardings; the state is donated."""
  return jax.jit(train_step,
                 in_shardings=(state_shardings, shd.batch_sharding(mesh)),
                 out_shardings=(state_shardings, shd.replicated(mesh)),
                 donate_argnums=(0,))

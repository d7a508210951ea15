"""Rectified flow: timesteps, shift, noising, targets, conditioning masks, CFG, samplers.

Convention (SD3 / Wan): t in [0, 1], t = 0 is data and t = 1 is noise,
    x_t = (1 - t) x0 + t eps,        velocity v = dx_t/dt = eps - x0.
The model predicts v; sampling integrates dx/dt = v from t = 1 down to t = 0
(x_{t - dt} = x_t - dt v). Timesteps are per latent frame ([B, T]): frames given as
conditioning keep t = 0, i.e. they stay exactly the clean latents, and are left out of the loss.
Everything here is pure and computed in f32.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# Conditioning modes, in the order of `condition_probs`.
CONDITION_MODES = ("none", "first", "last", "first_last", "first_k", "last_k", "random")


# ---------------------------------------------------------------------------------------------
# Noising and targets.

def add_noise(x0: Array, eps: Array, t: Array) -> Array:
  """x_t = (1 - t) x0 + t eps; t broadcasts from the left ([B] or per frame [B, T])."""
  t = _expand(t, x0.ndim)
  return ((1.0 - t) * x0.astype(jnp.float32) + t * eps.astype(jnp.float32))


def velocity_target(x0: Array, eps: Array) -> Array:
  """d x_t / dt = eps - x0."""
  return eps.astype(jnp.float32) - x0.astype(jnp.float32)


def _expand(t: Array, ndim: int) -> Array:
  t = jnp.asarray(t, jnp.float32)
  return t.reshape(t.shape + (1,) * (ndim - t.ndim))


# ---------------------------------------------------------------------------------------------
# Timesteps.

def sample_logit_normal(rng: Array, shape: Sequence[int], mean: float = 0.0,
                        std: float = 1.0) -> Array:
  """t = sigmoid(N(mean, std^2)): SD3's logit-normal density, concentrated mid-way."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(rng, shape, jnp.float32))


def shift_timesteps(t: Array, shift: float | Array) -> Array:
  """shift(t, s) = s t / (1 + (s - 1) t): s > 1 moves time towards noise (t = 1)."""
  t = jnp.asarray(t, jnp.float32)
  return shift * t / (1.0 + (shift - 1.0) * t)


def shift_for_tokens(num_tokens: int | Array, base_tokens: int = 256,
                     base_shift: float = 1.0) -> Array:
  """Resolution/duration-dependent shift s = base_shift * sqrt(num_tokens / base_tokens).

  SD3's rule (sec. 5.3.2): the same noise level destroys less signal when there are more
  tokens, so s grows with the square root of the token count; s >= 1.
  """
  s = base_shift * jnp.sqrt(jnp.asarray(num_tokens, jnp.float32) / base_tokens)
  return jnp.maximum(s, 1.0)


def sample_timesteps(rng: Array, batch: int, num_tokens: int, *, mean: float = 0.0,
                     std: float = 1.0, base_tokens: int = 256, base_shift: float = 1.0,
                     shift: Optional[float] = None) -> Array:
  """Training timesteps [B]: logit-normal, then shifted for the token count (or `shift`)."""
  t = sample_logit_normal(rng, (batch,), mean, std)
  s = shift_for_tokens(num_tokens, base_tokens, base_shift) if shift is None else shift
  return shift_timesteps(t, s)


# ---------------------------------------------------------------------------------------------
# Conditioning masks (which latent frames are given).

def sample_condition_mask(rng: Array, batch: int, frames: int,
                          probs: Sequence[float] = (0.5, 0.15, 0.05, 0.05, 0.1, 0.05, 0.1),
                          max_k: Optional[int] = None) -> tuple[Array, Array]:
  """Per example a mode from CONDITION_MODES (with `probs`), -> (mask [B, T] bool, mode [B]).

  True marks a given (clean) latent frame. k for first_k / last_k is uniform in
  [1, min(max_k, T - 1)]; "random" keeps each frame with a per-example rate in (0, 1).
  At least one frame is always left to generate (a clip of one frame is never conditioned).
  """
  if len(probs) != len(CONDITION_MODES):
    raise ValueError(f"condition probs need {len(CONDITION_MODES)} entries "
                     f"{CONDITION_MODES}, got {len(probs)}")
  k_mode, k_k, k_rate, k_rand = jax.random.split(rng, 4)
  logits = jnp.log(jnp.maximum(jnp.asarray(probs, jnp.float32), 1e-30))
  mode = jax.random.categorical(k_mode, logits, shape=(batch,))
  idx = jnp.arange(frames)[None, :]
  top = max(1, min(frames - 1, max_k or frames - 1))
  k = jax.random.randint(k_k, (batch, 1), 1, top + 1)
  rate = jax.random.uniform(k_rate, (batch, 1))
  random = jax.random.uniform(k_rand, (batch, frames)) < rate
  first, last = idx == 0, idx == frames - 1
  options = jnp.stack([
      jnp.zeros((batch, frames), bool),
      jnp.broadcast_to(first, (batch, frames)),
      jnp.broadcast_to(last, (batch, frames)),
      jnp.broadcast_to(first | last, (batch, frames)),
      idx < k,
      idx >= frames - k,
      random,
  ], axis=1)  # [B, modes, T]
  mask = jnp.take_along_axis(options, mode[:, None, None], axis=1)[:, 0]
  mask = jnp.where(jnp.all(mask, axis=1, keepdims=True), False, mask)
  return mask, mode


def frame_timesteps(t: Array, cond_mask: Array) -> Array:
  """Per-frame timesteps [B, T]: t for generated frames, 0 for given ones."""
  return jnp.where(cond_mask, 0.0, jnp.asarray(t, jnp.float32)[:, None])


def masked_mse(pred: Array, target: Array, cond_mask: Array,
               pixel_weight: Array | None = None) -> Array:
  """Mean squared error over the generated frames only. pred/target [B, T, ...], mask [B, T];
  pixel_weight [B, T, H, W] (optional) weighs each latent pixel (a weighted mean)."""
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  weight = jnp.broadcast_to(_expand(~cond_mask, err.ndim), err.shape[:-1] + (1,))
  if pixel_weight is not None:
    weight = weight * pixel_weight.astype(jnp.float32)[..., None]
  return jnp.sum(err * weight) / jnp.maximum(jnp.sum(weight) * err.shape[-1], 1.0)


def object_mask(x0: Array) -> Array:
  """Latent pixels off their frame's flat background (objects, trails, pillars): bool
  [B, T, H, W] from x0 [B, T, H, W, C], by the squared distance to the per-channel spatial
  median, above a quarter of the frame's largest."""
  x0 = x0.astype(jnp.float32)
  dev = jnp.mean(jnp.square(x0 - jnp.median(x0, axis=(2, 3), keepdims=True)), axis=-1)
  return dev > 0.25 * jnp.max(dev, axis=(2, 3), keepdims=True)


def drop_text(rng: Array, tokens: Array, mask: Array, rate: float) -> tuple[Array, Array, Array]:
  """CFG training: replace captions by the null text (all padding) with probability `rate`.

  Returns (tokens, mask, dropped [B]). The null text is an empty mask, which the DiT's
  cross-attention turns into a zero update; sampling uses the same for the unconditional pass.
  """
  dropped = jax.random.uniform(rng, (tokens.shape[0],)) < rate
  return (jnp.where(dropped[:, None], 0, tokens), jnp.where(dropped[:, None], False, mask),
          dropped)


def null_text_like(mask: Array) -> Array:
  """The null-text mask for a batch (all padding)."""
  return jnp.zeros_like(mask, dtype=bool)


# ---------------------------------------------------------------------------------------------
# Sampling.

# velocity_fn(x_t [B, T, H, W, C], t [B, T]) -> v [B, T, H, W, C]
VelocityFn = Callable[[Array, Array], Array]


def timestep_schedule(steps: int, shift: float = 1.0) -> Array:
  """steps + 1 times from 1 to 0, uniform then shifted (more steps near the noise)."""
  return shift_timesteps(jnp.linspace(1.0, 0.0, steps + 1), shift)


def guided(cond_fn: VelocityFn, uncond_fn: VelocityFn, scale: float) -> VelocityFn:
  """Classifier-free guidance: v = v_uncond + scale (v_cond - v_uncond)."""
  def fn(x, t):
    vc, vu = cond_fn(x, t), uncond_fn(x, t)
    return vu + scale * (vc - vu)
  return fn


def guided_batched(model_fn: Callable[[Array, Array, Array], Array],
                   scale: float) -> Callable[[Array, Array], Array]:
  """CFG with one model call on a doubled batch: model_fn(x, t, use_text [2B] bool)."""
  def fn(x, t):
    b = x.shape[0]
    use = jnp.concatenate([jnp.ones((b,), bool), jnp.zeros((b,), bool)])
    v = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), use)
    vc, vu = v[:b], v[b:]
    return vu + scale * (vc - vu)
  return fn


def _condition(x: Array, t: Array, cond_x0: Optional[Array], cond_mask: Optional[Array]):
  """Replaces given frames by their clean latents and sets their time to 0."""
  b, frames = x.shape[:2]
  t_frames = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b, frames))
  if cond_mask is None:
    return x, t_frames
  m = _expand(cond_mask, x.ndim)
  return jnp.where(m, cond_x0.astype(x.dtype), x), jnp.where(cond_mask, 0.0, t_frames)


def sample(velocity_fn: VelocityFn, noise: Array, *, steps: int = 50, shift: float = 1.0,
           method: str = "euler", cond_x0: Optional[Array] = None,
           cond_mask: Optional[Array] = None, timesteps: Optional[Array] = None) -> Array:
  """Integrates dx/dt = v from t = 1 (noise [B, T, H, W, C]) to t = 0; returns x0 in f32.

  method: "euler" (1 call/step), "heun" (2nd order, 2 calls/step except the last) or
  "multistep" (2nd-order Adams-Bashforth on the velocity, 1 call/step).
  cond_x0/cond_mask [B, T]: given latent frames, held clean at t = 0 at every call (the
  image-to-video, extension, looping and connecting modes). Wrap the model with `guided`
  or `guided_batched` for CFG.
  """
  ts = timestep_schedule(steps, shift) if timesteps is None else jnp.asarray(timesteps)
  x = noise.astype(jnp.float32)

  def v_at(x, t):
    xc, tf = _condition(x, t, cond_x0, cond_mask)
    return velocity_fn(xc, tf).astype(jnp.float32)

  if method == "euler":
    def step(x, i):
      t, t_next = ts[i], ts[i + 1]
      return x + (t_next - t) * v_at(x, t), None
    x, _ = jax.lax.scan(step, x, jnp.arange(len(ts) - 1))
  elif method == "heun":
    def step(x, i):
      t, t_next = ts[i], ts[i + 1]
      v = v_at(x, t)
      x_euler = x + (t_next - t) * v
      v2 = jax.lax.cond(t_next > 0, lambda: v_at(x_euler, t_next), lambda: v)
      return x + (t_next - t) * 0.5 * (v + v2), None
    x, _ = jax.lax.scan(step, x, jnp.arange(len(ts) - 1))
  elif method == "multistep":
    def step(carry, i):
      x, v_prev, dt_prev = carry
      t, t_next = ts[i], ts[i + 1]
      dt = t_next - t
      v = v_at(x, t)
      # Variable-step AB2; the first step (dt_prev = 0) is Euler.
      ratio = jnp.where(dt_prev != 0, dt / jnp.where(dt_prev != 0, dt_prev, 1.0), 0.0)
      v_eff = v + 0.5 * ratio * (v - v_prev)
      return (x + dt * v_eff, v, dt), None
    (x, _, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x), jnp.float32(0.0)),
                                jnp.arange(len(ts) - 1))
  else:
    raise ValueError(f"unknown sampler {method!r}; expected euler, heun or multistep")
  x, _ = _condition(x, 0.0, cond_x0, cond_mask)
  return x

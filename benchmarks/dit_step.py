"""DiT training-step benchmark: parameter counts of every variant, step time, analytic FLOPs.

  python benchmarks/dit_step.py                       # counts + tiny and 30M on this machine
  python benchmarks/dit_step.py --variants=tiny,30M --batch=2 --latent=5,16,16,8 --steps=5
  python benchmarks/dit_step.py --variants=130M --dtype=bfloat16 --attention=cudnn  # GPU
  python benchmarks/dit_step.py --variants=tiny --no_counts --cached_text --depth=4 \
      --batch=16 --latent=3,8,8,8 --text_len=48 --refiner=2 --steps=10  # the main job's step

Counts use jax.eval_shape (nothing allocated). A step is loss + gradients + an AdamW update
of the DiT and the jointly trained text encoder, jitted; the time is the median of `--steps`
runs after one warm-up. FLOPs follow T2VTask.flops_per_step (6 P N + 12 L D N^2 + cross-attn,
fwd + bwd). MFU is reported against `--peak` TFLOP/s when given (989 for an H100 in bf16).
"""
from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib
from vidgen.train import t2v_task


def count_all(latent_shape, text_len: int) -> None:
  print(f"{'variant':>8} {'width':>5} {'depth':>5} {'heads':>5} {'DiT params':>14} "
        f"{'text encoder':>14} {'text params':>14}")
  for name, spec in dit_lib.VARIANTS.items():
    model = dit_lib.make_dit(name, in_channels=latent_shape[-1])
    tcfg = text_lib.get_t5_config(spec["text"])
    n = t2v_task.dit_param_count(model, latent_shape, tcfg.d_model, text_len)
    shapes = jax.eval_shape(lambda: text_lib.T5Encoder(tcfg).init(
        jax.random.key(0), jnp.zeros((1, text_len), jnp.int32), jnp.ones((1, text_len), bool)))
    nt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
    print(f"{name:>8} {spec['width']:>5} {spec['depth']:>5} {spec['num_heads']:>5} {n:>14,} "
          f"{spec['text']:>14} {nt:>14,}")


def time_steps(step, state: tuple, n: int) -> tuple[float, list[float]]:
  """Runs `state = step(state, i)[:-1]` once (the first call: compile), then n timed times;
  the last output (the loss) is waited for. Returns (first call s, [step s])."""
  times = []
  for i in range(n + 1):
    t0 = time.perf_counter()
    *state, loss = step(state, i)
    loss.block_until_ready()
    times.append(time.perf_counter() - t0)
  return times[0], times[1:]


def bench(variant: str, args) -> None:
  task = t2v_task.T2VTask(t2v_task.cached_latent_config(
      variant, args.latent[-1], args.vocab, dtype=args.dtype, attention=args.attention,
      remat=args.remat))
  rng = np.random.default_rng(0)
  b = args.batch
  batch = dict(latents=rng.standard_normal((b,) + args.latent).astype(np.float32),
               tokens=rng.integers(1, args.vocab, (b, args.text_len)).astype(np.int32),
               text_mask=np.ones((b, args.text_len), bool),
               fps=np.full((b,), 8.0, np.float32))
  batch = jax.tree.map(jnp.asarray, batch)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  tx = optax.adamw(1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, rng):
    (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  compile_s, times = time_steps(lambda s, i: step(*s, jax.random.key(i)), (params, opt),
                                args.steps)
  dt = statistics.median(times)
  flops = task.flops_per_step(batch)
  n_tok = int(np.prod(args.latent[:3])) // int(np.prod(task.model.patch))
  p_dit, p_text = task.param_counts(args.latent, args.text_len)
  line = (f"{variant}: DiT {p_dit / 1e6:.2f}M + text {p_text / 1e6:.2f}M params, batch {b} x "
          f"{n_tok} tokens, step {dt * 1e3:.0f} ms (median of {len(times)}; first call "
          f"{compile_s:.1f} s), {flops / 1e9:.2f} GFLOP/step, {flops / dt / 1e9:.2f} GFLOP/s")
  if args.peak:
    line += f", MFU {flops / dt / (args.peak * 1e12) * 100:.1f}%"
  print(line, f"[{jax.devices()[0].device_kind}, {args.dtype}, attention={args.attention}]")


def bench_cached_text(variant: str, args) -> None:
  """The main job's step: the DiT alone (AdamW) on given latents and fixed text features (a
  frozen encoder's, cached), so the text encoder costs nothing; `--refiner` adds
  `text_refiner_depth` blocks. Velocity MSE at t = 0.5; the time is the median of --steps."""
  depth = {"depth": args.depth} if args.depth else {}
  model = dit_lib.make_dit(variant, in_channels=args.latent[-1],
                           text_refiner_depth=args.refiner, **depth)
  b, rng = args.batch, np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((b,) + args.latent), jnp.float32)
  t = jnp.full((b,), 0.5)
  text = jnp.asarray(rng.standard_normal((b, args.text_len, 128)), jnp.float32)
  mask = jnp.ones((b, args.text_len), bool)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x, t, text, mask))
  tx = optax.adamw(1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    loss, g = jax.value_and_grad(
        lambda p: jnp.mean(jnp.square(model.apply(p, x, t, text, mask) - x)))(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  _, times = time_steps(lambda s, i: step(*s), (params, opt), args.steps)
  n_tok = int(np.prod(args.latent[:3])) // int(np.prod(model.patch))
  print(f"{variant} depth {model.depth}, text refiner {args.refiner}, cached text "
        f"[{b}, {args.text_len}, 128]: batch {b} x {n_tok} tokens, step "
        f"{statistics.median(times) * 1e3:.0f} ms (median of {len(times)}) "
        f"[{jax.devices()[0].device_kind}]")


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--variants", default="tiny,30M")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--latent", default="5,16,16,8", help="T',H',W',C of the latents")
  p.add_argument("--text_len", type=int, default=32)
  p.add_argument("--vocab", type=int, default=512)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--attention", default="auto")
  p.add_argument("--remat", default="none")
  p.add_argument("--peak", type=float, default=0.0, help="peak TFLOP/s for MFU")
  p.add_argument("--no_counts", action="store_true")
  p.add_argument("--cached_text", action="store_true",
                 help="the DiT alone on fixed text features (the main job's step)")
  p.add_argument("--refiner", type=int, default=0, help="with --cached_text: text refiner")
  p.add_argument("--depth", type=int, default=None, help="with --cached_text: DiT depth")
  args = p.parse_args()
  args.latent = tuple(int(v) for v in args.latent.split(","))
  if not args.no_counts:
    count_all(args.latent, 8)
  for v in args.variants.split(","):
    if v:
      (bench_cached_text if args.cached_text else bench)(v, args)


if __name__ == "__main__":
  main()

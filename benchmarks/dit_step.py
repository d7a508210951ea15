"""DiT training-step benchmark: parameter counts of every variant, step time, analytic FLOPs.

  python benchmarks/dit_step.py                       # counts + tiny and 30M on this machine
  python benchmarks/dit_step.py --variants=tiny,30M --batch=2 --latent=5,16,16,8 --steps=5
  python benchmarks/dit_step.py --variants=130M --dtype=bfloat16 --attention=cudnn  # GPU

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

  t0 = time.perf_counter()
  params, opt, loss = step(params, opt, jax.random.key(0))
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(args.steps):
    t0 = time.perf_counter()
    params, opt, loss = step(params, opt, jax.random.key(i + 1))
    loss.block_until_ready()
    times.append(time.perf_counter() - t0)
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
  args = p.parse_args()
  args.latent = tuple(int(v) for v in args.latent.split(","))
  if not args.no_counts:
    count_all(args.latent, 8)
  for v in args.variants.split(","):
    if v:
      bench(v, args)


if __name__ == "__main__":
  main()

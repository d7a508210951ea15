"""vidgen's DiT against diffusers' Wan 2.1 transformer: one training step, same shape, one run.

  # The peer lives in its own venv (torch is never a vidgen dependency):
  python3 -m venv /work/peervenv
  /work/peervenv/bin/pip install torch==2.13.0+cpu -e '.[peer]'   # or any torch 2.13/2.14
  /work/peervenv/bin/python benchmarks/peer_step.py --out=/tmp/peer.json
  /work/peervenv/bin/python benchmarks/peer_step.py --shapes=tiny:4x16x16,30M:4x16x16 --steps=5
  # On a GPU (jax[cuda] and a CUDA torch in the venv): cuDNN attention for JAX, SDPA for torch.
  python benchmarks/peer_step.py --device=cuda --dtype=bfloat16 --shapes=130M:16x32x32 --batch=4

Both sides build the same diffusion-transformer shape: width, depth, heads, head dim, MLP
width, patch, latent channels and grid (so the token count), text length and text width,
batch. A step on each side is: random clean latents and noise, a timestep per example, the
noised input, forward, an MSE against the velocity target, backward, and one AdamW update.

  * vidgen: `T2VTask.loss` exactly as the trainer calls it, with cached text embeddings in the
    batch (`text_embeddings` [B, L, Dt]), so no text encoder runs; that also samples the
    conditioning-frame mask and caption dropout, whose cost is a few elementwise ops. Jitted,
    params and optimizer state donated (as the trainer does), `optax.adamw`.
    `--with_text_encoder` adds a third side: the same step with the jointly trained T5
    encoder (tokens in the batch, encoder forward + backward + update), vidgen's default.
  * peer: `diffusers.WanTransformer3DModel` (Wan 2.1's architecture: adaLN-single with a
    per-block table, 3D RoPE, QK RMS-norm, cross-attention to text, GELU FFN) in eager
    PyTorch, `torch.optim.AdamW` with its defaults for the device; attention through
    diffusers' dispatcher (torch SDPA). Wan takes precomputed text embeddings too.

Differences in the parameter count (printed per shape): Wan has biases on every projection
and its FFN, an affine LayerNorm before cross-attention (vidgen: RMSNorm scale) and QK norms
across heads (vidgen: per head); vidgen has a frame-rate embedding. Wan's text input is not
masked (vidgen passes an all-true text mask). Neither side uses remat; vidgen scans its
layers (the trainer's default); `--compare_no_scan` adds the unscanned model as a side, and
`--compare_attention=xla` the attention path that was the CPU default before "flash".
On a shared machine use `--threads=1` under `taskset -c K`: two OpenMP threads on a loaded
2-core machine make torch's step many times slower (benchmarks.md).

Timing: both sides are compiled / warmed up first, then their steps alternate (jax, torch,
jax, torch, ...) so machine load hits both alike; the table gives each side's median and the
ratio of medians torch / jax (> 1: vidgen is faster), plus the median of the per-pair ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

# Shapes come from vidgen's variants table; torch is imported only inside the peer's side.
from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib


def parse_shape(spec: str) -> tuple[str, tuple[int, int, int]]:
  """"30M:4x16x16" -> ("30M", (4, 16, 16)): a DiT variant and its latent grid T' x H' x W'."""
  variant, _, grid = spec.partition(":")
  if variant not in dit_lib.VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; expected one of {list(dit_lib.VARIANTS)}")
  dims = tuple(int(v) for v in grid.lower().split("x")) if grid else (4, 16, 16)
  if len(dims) != 3:
    raise ValueError(f"latent grid {grid!r} must be T'xH'xW'")
  return variant, dims


def text_dim(variant: str) -> int:
  """Width of the text embeddings the variant's DiT is built for (its text encoder's)."""
  return text_lib.get_t5_config(dit_lib.VARIANTS[variant]["text"]).d_model


def wan_config(variant: str, latent_channels: int, text_width: int | None = None) -> dict:
  """`diffusers.WanTransformer3DModel` keyword arguments for a vidgen DiT variant's shape."""
  spec = dit_lib.VARIANTS[variant]
  width, heads = int(spec["width"]), int(spec["num_heads"])
  if width % heads:
    raise ValueError(f"{variant}: width {width} not divisible by {heads} heads")
  return dict(
      patch_size=tuple(int(p) for p in spec["patch"]),
      num_attention_heads=heads,
      attention_head_dim=width // heads,
      in_channels=latent_channels,
      out_channels=latent_channels,
      text_dim=text_dim(variant) if text_width is None else text_width,
      freq_dim=256,  # vidgen's timestep_embedding(t, 256)
      ffn_dim=int(round(width * float(spec["mlp_ratio"]))),
      num_layers=int(spec["depth"]),
      cross_attn_norm=True,
      qk_norm="rms_norm_across_heads",
      eps=1e-6,
      image_dim=None,
      added_kv_proj_dim=None,
      rope_max_seq_len=1024,
  )


def tokens_per_sample(variant: str, grid: tuple[int, int, int]) -> int:
  patch = dit_lib.VARIANTS[variant]["patch"]
  for g, p in zip(grid, patch):
    if g % p:
      raise ValueError(f"latent grid {grid} not divisible by patch {tuple(patch)}")
  return math.prod(g // p for g, p in zip(grid, patch))


# ---------------------------------------------------------------------------------------------
# vidgen side.

class JaxSide:
  """vidgen's training step (T2VTask.loss + AdamW), jitted, params and optimizer donated."""

  def __init__(self, variant: str, grid, args, *, with_text_encoder: bool):
    import flax.linen as nn
    import jax
    import numpy as np
    import optax
    from vidgen.train import t2v_task
    self.jax = jax
    task = t2v_task.T2VTask(t2v_task.cached_latent_config(
        variant, args.channels, args.vocab, dtype=args.dtype, attention=args.attention,
        scan_layers=not getattr(args, "no_scan", False)))
    rng = np.random.default_rng(0)
    b, L = args.batch, args.text_len
    batch = dict(latents=rng.standard_normal((b, *grid, args.channels)).astype(np.float32),
                 tokens=rng.integers(1, args.vocab, (b, L)).astype(np.int32),
                 text_mask=np.ones((b, L), bool), fps=np.full((b,), 8.0, np.float32))
    if not with_text_encoder:
      batch["text_embeddings"] = rng.standard_normal((b, L, task.text_dim)).astype(np.float32)
    self.batch = jax.device_put(batch)
    params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), self.batch))
    self.params_dit = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params["dit"]))
    self.params_text = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
        params.get("text", {})))
    tx = optax.adamw(1e-4, weight_decay=1e-4)
    self.state = (params, tx.init(params))

    def step(state, batch, rng):
      params, opt = state
      (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(params, batch, rng)
      updates, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, updates), opt), loss

    self._step = jax.jit(step, donate_argnums=0)
    self.i = 0
    t0 = time.perf_counter()
    self.run()
    self.compile_s = time.perf_counter() - t0

  def run(self) -> float:
    self.i += 1
    self.state, loss = self._step(self.state, self.batch, self.jax.random.key(self.i))
    return float(loss)  # Blocks until the step is done.


# ---------------------------------------------------------------------------------------------
# PyTorch peer side.

class TorchSide:
  """diffusers' WanTransformer3DModel, eager, forward + MSE + backward + AdamW."""

  def __init__(self, variant: str, grid, args, text_width: int):
    import torch
    from diffusers import WanTransformer3DModel
    self.torch = torch
    self.device = torch.device(args.device)
    torch.manual_seed(0)
    self.config = wan_config(variant, args.channels, text_width)
    model = WanTransformer3DModel(**self.config).to(self.device)
    model.train()
    if args.torch_compile:
      model = torch.compile(model)
    self.model = model
    self.params = sum(p.numel() for p in model.parameters())
    self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    b = args.batch
    gen = torch.Generator().manual_seed(0)
    # Wan's layout: [B, C, F, H, W].
    self.x0 = torch.randn((b, args.channels) + tuple(grid), generator=gen).to(self.device)
    self.text = torch.randn((b, args.text_len, text_width), generator=gen).to(self.device)
    self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                     if args.dtype == "bfloat16" else None)
    t0 = time.perf_counter()
    self.run()
    self.compile_s = time.perf_counter() - t0

  def run(self) -> float:
    torch = self.torch
    b = self.x0.shape[0]
    eps = torch.randn_like(self.x0)
    t = torch.rand((b,), device=self.device)
    tb = t.view(b, 1, 1, 1, 1)
    x_t = (1 - tb) * self.x0 + tb * eps
    target = eps - self.x0
    if self.autocast is not None:
      with self.autocast:
        out = self.model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=self.text,
                         return_dict=False)[0]
    else:
      out = self.model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=self.text,
                       return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out.float(), target)
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return float(loss.item())  # Synchronises.


# ---------------------------------------------------------------------------------------------

def timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def bench(spec: str, args) -> dict[str, Any]:
  variant, grid = parse_shape(spec)
  n = tokens_per_sample(variant, grid)
  jx = JaxSide(variant, grid, args, with_text_encoder=False)
  jt = JaxSide(variant, grid, args, with_text_encoder=True) if args.with_text_encoder else None
  jc = None
  if args.compare_attention:
    other = argparse.Namespace(**{**vars(args), "attention": args.compare_attention})
    jc = JaxSide(variant, grid, other, with_text_encoder=False)
  jn = None
  if args.compare_no_scan:
    jn = JaxSide(variant, grid, argparse.Namespace(**{**vars(args), "no_scan": True}),
                 with_text_encoder=False)
  th = TorchSide(variant, grid, args, text_dim(variant))
  sides = [("jax", jx.run), ("torch", th.run)]
  sides += [("jax_text", jt.run)] if jt else []
  sides += [(f"jax_{args.compare_attention}", jc.run)] if jc else []
  sides += [("jax_noscan", jn.run)] if jn else []
  times: dict[str, list[float]] = {k: [] for k, _ in sides}
  for _ in range(args.steps):
    for k, fn in sides:
      times[k].append(timed(fn))
  med = {k: statistics.median(v) for k, v in times.items()}
  spec_ = dit_lib.VARIANTS[variant]
  row = dict(
      shape=spec, variant=variant, width=spec_["width"], depth=spec_["depth"],
      heads=spec_["num_heads"], patch=list(spec_["patch"]), latent_grid=list(grid),
      channels=args.channels, tokens=n, batch=args.batch, text_len=args.text_len,
      text_dim=text_dim(variant), wan_config={k: list(v) if isinstance(v, tuple) else v
                                              for k, v in th.config.items()},
      params_jax=jx.params_dit, params_torch=th.params,
      params_text_encoder=jt.params_text if jt else None,
      first_call_s=dict(jax=jx.compile_s, torch=th.compile_s,
                        **({"jax_text": jt.compile_s} if jt else {}),
                        **({f"jax_{args.compare_attention}": jc.compile_s} if jc else {}),
                        **({"jax_noscan": jn.compile_s} if jn else {})),
      step_s=med, times_s=times,
      ratio_torch_over_jax=med["torch"] / med["jax"],
      pair_ratio_median=statistics.median(t / j for t, j in zip(times["torch"], times["jax"])),
      tokens_per_s={k: args.batch * n / v for k, v in med.items()},
  )
  del jx, jt, jc, jn, th
  return row


def print_table(rows: list[dict]) -> None:
  extra = sorted({k for r in rows for k in r["step_s"]} - {"jax", "torch"})
  head = (f"{'shape':>14} {'tokens':>9} {'params jax':>11} {'params wan':>11} {'jax ms':>8} "
          f"{'torch ms':>9} {'torch/jax':>9} {'pairs':>6} {'jax tok/s':>10} {'torch tok/s':>11}")
  head += "".join(f" {k + ' ms':>14}" for k in extra)
  print(head)
  for r in rows:
    s, tps = r["step_s"], r["tokens_per_s"]
    line = (f"{r['shape']:>14} {r['batch']:>3}x{r['tokens']:<5} {r['params_jax'] / 1e6:>10.3f}M "
            f"{r['params_torch'] / 1e6:>10.3f}M {s['jax'] * 1e3:>8.0f} {s['torch'] * 1e3:>9.0f} "
            f"{r['ratio_torch_over_jax']:>9.2f} {r['pair_ratio_median']:>6.2f} "
            f"{tps['jax']:>10.0f} {tps['torch']:>11.0f}")
    line += "".join(f" {s.get(k, float('nan')) * 1e3:>14.0f}" for k in extra)
    print(line)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", default="tiny:4x16x16,tiny:4x32x32,30M:4x16x16",
                 help="comma-separated VARIANT:T'xH'xW' latent grids")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--channels", type=int, default=16, help="latent channels")
  p.add_argument("--text_len", type=int, default=32)
  p.add_argument("--vocab", type=int, default=512, help="tokenizer size (text encoder side)")
  p.add_argument("--steps", type=int, default=5, help="timed steps per side, interleaved")
  p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
  p.add_argument("--dtype", default=None, help="float32 (CPU default) | bfloat16 (GPU default)")
  p.add_argument("--attention", default=None,
                 help="vidgen attention; default auto (flash) on CPU, cudnn on GPU")
  p.add_argument("--with_text_encoder", action="store_true",
                 help="also time vidgen's step with its jointly trained text encoder")
  p.add_argument("--compare_attention", default="",
                 help="also time vidgen with this attention implementation (e.g. xla, the CPU "
                 "default before the flash path), as side jax_<name>")
  p.add_argument("--compare_no_scan", action="store_true",
                 help="also time vidgen with config.model.scan_layers=False (a Python loop over "
                 "the blocks; a different parameter tree), as side jax_noscan")
  p.add_argument("--torch_compile", action="store_true", help="torch.compile the peer")
  p.add_argument("--threads", type=int, default=0,
                 help="torch intra-op threads (0: its default); 1 also makes XLA's CPU "
                 "client single-threaded (use with `taskset -c K` on a shared machine)")
  p.add_argument("--out", default="", help="write the rows as JSON here")
  args = p.parse_args(argv)
  if args.dtype is None:
    args.dtype = "bfloat16" if args.device == "cuda" else "float32"
  if args.attention is None:
    args.attention = "cudnn" if args.device == "cuda" else "auto"
  if args.device == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.threads == 1:  # Before jax is imported: XLA's CPU client reads it at start.
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                 "=false intra_op_parallelism_threads=1").strip()
  import jax
  import torch
  import diffusers
  if args.threads:
    torch.set_num_threads(args.threads)
  if args.device == "cuda" and jax.default_backend() != "gpu":
    sys.exit("--device=cuda needs a CUDA jaxlib (pip install 'jax[cuda12]') in this venv")
  load0 = os.getloadavg()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), diffusers {diffusers.__version__}; "
        f"{os.cpu_count()} CPUs, load {load0[0]:.1f}; {args.dtype}, batch {args.batch}, "
        f"text {args.text_len}, {args.steps} steps a side", flush=True)
  rows = []
  for spec in args.shapes.split(","):
    if spec:
      rows.append(bench(spec, args))
      r = rows[-1]
      print(f"  {spec}: jax {r['step_s']['jax'] * 1e3:.0f} ms, torch "
            f"{r['step_s']['torch'] * 1e3:.0f} ms, first calls "
            + ", ".join(f"{k} {v:.1f} s" for k, v in r["first_call_s"].items()), flush=True)
  print_table(rows)
  if args.out:
    meta = dict(argv=sys.argv, platform=platform.platform(), processor=platform.processor(),
                cpus=os.cpu_count(), load_start=load0, load_end=os.getloadavg(),
                jax=jax.__version__, jax_device=jax.devices()[0].device_kind,
                torch=torch.__version__, torch_threads=torch.get_num_threads(),
                diffusers=diffusers.__version__, dtype=args.dtype, attention=args.attention,
                device=args.device)
    with open(args.out, "w") as f:
      json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

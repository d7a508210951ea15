"""Measured figures of the autoencoder; prints one JSON line per measurement.

  python benchmarks/vae.py params                       # parameter counts per variant
  python benchmarks/vae.py speed [--frames=9 --size=32]  # tiny encode/decode clips/s
  python benchmarks/vae.py memory                        # peak RSS, 16 vs 256 frames chunked
  python benchmarks/vae.py train --workdir=DIR --minutes=18  # time-budgeted CPU training run

`train` trains `configs/vae_tiny.py` on Shapes World clips generated on the fly (videos and
one-frame images), exports the params and latent statistics into the workdir and reports
validation PSNR/SSIM with vidgen.evaluate.recon.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _emit(**kw) -> None:
  print(json.dumps(kw), flush=True)


def cmd_params(args) -> None:
  import jax
  import jax.numpy as jnp
  from vidgen.models import vae as V
  for name in V.VARIANTS:
    cfg = V.get_vae_config(name)
    model = V.VAE(cfg)
    x = jax.ShapeDtypeStruct((1, 1 + cfg.temporal_factor, 2 * cfg.spatial_factor,
                              2 * cfg.spatial_factor, 3), jnp.float32)
    shapes = jax.eval_shape(lambda v: model.init({"params": jax.random.key(0),
                                                  "sample": jax.random.key(1)}, v), x)
    enc = V.param_count(shapes["params"]["encoder"])
    dec = V.param_count(shapes["params"]["decoder"])
    _emit(variant=name, params=enc + dec, encoder=enc, decoder=dec,
          compression=f"{cfg.temporal_factor}x{cfg.spatial_factor}x{cfg.spatial_factor}"
                      f"x{cfg.latent_channels}")


def _tiny(init_frames: int, size: int):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from vidgen.models import vae as V
  model = V.VAE(V.get_vae_config("tiny"))
  x = jnp.zeros((1, init_frames, size, size, 3))
  params = jax.jit(lambda r: nn.meta.unbox(model.init({"params": r, "sample": r}, x)["params"])
                   )(jax.random.key(0))
  return model, params


def cmd_speed(args) -> None:
  import jax
  import jax.numpy as jnp
  from vidgen.models import vae as V
  model, params = _tiny(args.frames, args.size)
  x = jax.random.uniform(jax.random.key(1), (args.batch, args.frames, args.size, args.size, 3),
                         minval=-1, maxval=1)
  mean, _ = V.encode(model, params, x)
  jax.block_until_ready(V.decode(model, params, mean))
  reps = args.reps
  t = time.perf_counter()
  for _ in range(reps):
    mean, _ = V.encode(model, params, x)
  jax.block_until_ready(mean)
  enc_s = (time.perf_counter() - t) / reps
  t = time.perf_counter()
  for _ in range(reps):
    out = V.decode(model, params, mean)
  jax.block_until_ready(out)
  dec_s = (time.perf_counter() - t) / reps
  _emit(variant="tiny", clip=f"{args.frames}x{args.size}x{args.size}", batch=args.batch,
        encode_clips_per_s=args.batch / enc_s, decode_clips_per_s=args.batch / dec_s,
        devices=str(jax.devices()[0].platform), cpu_count=os.cpu_count(),
        loadavg=os.getloadavg()[0])


def cmd_memory_one(args) -> None:
  """Child process: encode `frames` frames chunked (or whole) and report peak RSS."""
  import jax
  from vidgen.models import vae as V
  model, params = _tiny(5, args.size)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  video = np.random.default_rng(0).integers(0, 256, (1, args.frames, args.size, args.size, 3),
                                            dtype=np.uint8)
  t = time.perf_counter()
  if args.whole:
    import jax.numpy as jnp
    mean, _ = V.encode(model, params, jnp.asarray(video, jnp.float32) / 127.5 - 1)
  else:
    mean, _ = V.encode_chunked(model, params, video, chunk_frames=4)
  jax.block_until_ready(mean)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  _emit(frames=args.frames, size=args.size, mode="whole" if args.whole else "chunked",
        latent_shape=list(mean.shape), peak_rss_mb=peak / 1024, rss_before_mb=before / 1024,
        input_mb=video.nbytes / 2 ** 20, seconds=time.perf_counter() - t)


def cmd_memory(args) -> None:
  for frames, whole in ((17, False), (257, False), (17, True), (65, True)):
    cmd = [sys.executable, __file__, "memory_one", f"--frames={frames}", f"--size={args.size}"]
    if whole:
      cmd.append("--whole")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    sys.stdout.write(out.stdout or out.stderr[-2000:])
    sys.stdout.flush()


def cmd_train(args) -> None:
  import jax
  import jax.numpy as jnp
  import flax.linen as nn
  import optax
  from vidgen.config import load
  from vidgen.evaluate import recon
  from vidgen.models import vae as V
  from vidgen.train import vae_task
  from vidgen.world import generate_clip

  config = load(os.path.join(ROOT, "configs/vae_tiny.py"), args.override)
  data = config.data
  task = vae_task.VAETask(config)
  rng = np.random.default_rng(args.seed)
  buckets = [tuple(b) for b in data.buckets]

  def make_batch(bucket) -> dict:
    frames, h, w, b = bucket
    idx = rng.integers(0, 1_000_000, b)
    return {"video": np.stack([generate_clip("train", int(i), seed=data.world.seed, height=h,
                                             width=w, frames=frames, fps=data.world.fps)["video"]
                               for i in idx])}

  params = jax.jit(lambda r, v: nn.meta.unbox(task.init(r, {"video": v})))(
      jax.random.key(config.seed), jnp.asarray(make_batch(buckets[0])["video"]))
  if args.init_from:  # Continue from an exported run (cumulative training: report both).
    _, previous, _ = vae_task.load_vae(args.init_from)
    params["vae"] = jax.tree.map(jnp.asarray, previous)
  _emit(event="init", params=V.param_count(params), buckets=buckets, init_from=args.init_from)
  t = config.train
  lr = optax.inject_hyperparams(optax.adamw)(learning_rate=t.lr, b1=t.b1, b2=t.b2,
                                             weight_decay=t.weight_decay)
  tx = optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch, key, lr_now):
    (loss, m), g = jax.value_and_grad(task.loss, has_aux=True)(params, batch, key)
    opt[1].hyperparams["learning_rate"] = lr_now
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, m

  budget = args.minutes * 60.0
  start = time.time()
  n = 0
  weights = np.asarray(data.bucket_weights or [1.0] * len(buckets), np.float64)
  weights /= weights.sum()
  history = []
  while True:
    elapsed = time.time() - start
    if elapsed > budget or (args.max_steps and n >= args.max_steps):
      break
    frac = elapsed / budget
    warm = 1.0 if args.init_from else min(1.0, (n + 1) / max(1, t.warmup_steps))
    decay = 1.0 if frac < 0.6 else max(t.final_lr_fraction, 1.0 - (frac - 0.6) / 0.4)
    bucket = buckets[rng.choice(len(buckets), p=weights)]
    batch = make_batch(bucket)
    params, opt, m = step(params, opt, batch, jax.random.fold_in(jax.random.key(1), n),
                          jnp.float32(t.lr * warm * decay))
    n += 1
    if n % args.log_every == 0 or n <= 2:
      m = {k: float(v) for k, v in m.items()}
      history.append(dict(step=n, wall=round(time.time() - start, 1), **m))
      _emit(event="step", step=n, wall=round(time.time() - start, 1),
            bucket=list(bucket[:3]), lr=float(t.lr * warm * decay),
            **{k: round(v, 5) for k, v in m.items()})
  wall = time.time() - start
  _emit(event="trained", steps=n, wall_s=round(wall, 1), cpu_s=round(time.process_time(), 1))

  # Latent statistics on training clips, then export and evaluate on the validation split.
  model = task.model
  stat_latents = []
  for i in range(4):
    video = make_batch((9, data.world.height, data.world.width, 16))["video"]
    stat_latents.append(np.asarray(V.encode_chunked(model, params["vae"], video)[0]))
  stats = V.measure_latent_stats(stat_latents)
  vae_task.export_vae(args.workdir, config, params["vae"], stats)
  with open(os.path.join(args.workdir, "train_history.json"), "w") as f:
    json.dump(history, f)
  result = recon.evaluate_vae(config, args.workdir, max_clips=args.eval_clips)
  _emit(event="eval", steps=n, wall_s=round(wall, 1), psnr=result["psnr"], ssim=result["ssim"],
        buckets=result["buckets"], png=result["png"])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("cmd", choices=["params", "speed", "memory", "memory_one", "train"])
  parser.add_argument("--frames", type=int, default=9)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--whole", action="store_true")
  parser.add_argument("--workdir", default="/tmp/vae_tiny_run")
  parser.add_argument("--minutes", type=float, default=18.0)
  parser.add_argument("--max_steps", type=int, default=0)
  parser.add_argument("--log_every", type=int, default=25)
  parser.add_argument("--eval_clips", type=int, default=96)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--init_from", default="", help="workdir of an exported earlier run")
  parser.add_argument("--override", action="append", default=[],
                      help="config override a.b=v (repeatable)")
  args = parser.parse_args()
  {"params": cmd_params, "speed": cmd_speed, "memory": cmd_memory,
   "memory_one": cmd_memory_one, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
  main()

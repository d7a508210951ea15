"""The autoencoder's training task: L1 + gradient (edge) loss + small KL, optional 3D-GAN.

Params are `{"vae": ..., "disc": ...}` ("disc" only when the adversarial term is on) under one
optimizer; stop_gradient keeps the generator term from moving the discriminator and the
discriminator term from moving the autoencoder.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidgen.errors import VidgenError
from vidgen.models import vae as vae_lib

Params = Any

LOSS_DEFAULTS = dict(l1=1.0, mse=0.0, grad=1.0, kl=1e-6, adv=0.0, adv_start_step=0,
                     disc_channels=(32, 64, 128))


def to_float_video(video: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> f32 [-1, 1] (float input passes through as f32)."""
  if video.dtype == jnp.uint8:
    return video.astype(jnp.float32) / 127.5 - 1.0
  return video.astype(jnp.float32)


def vae_config_from(config: ml_collections.ConfigDict) -> vae_lib.VAEConfig:
  """The VAEConfig of `config.model`: its variant plus every non-None override."""
  model = config.model
  overrides = {k: v for k, v in model.items()
               if k not in ("variant", "dtype", "loss")
               and not isinstance(v, ml_collections.ConfigDict)}
  return vae_lib.get_vae_config(model.variant, **overrides)


def build_model(config: ml_collections.ConfigDict) -> vae_lib.VAE:
  dtype = jnp.dtype(config.model.get("dtype", "float32"))
  return vae_lib.VAE(vae_config_from(config), dtype=dtype, param_dtype=jnp.float32)


def loss_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  settings = dict(LOSS_DEFAULTS)
  if "loss" in config:
    settings.update(config.loss.to_dict())
  return settings


def gradient_l1(recon: jax.Array, target: jax.Array) -> jax.Array:
  """Mean L1 between finite differences along height, width and (if T > 1) time: the
  structural term, sharp on the Shapes World's hard edges."""
  terms = []
  for axis in (2, 3) + ((1,) if recon.shape[1] > 1 else ()):
    terms.append(jnp.mean(jnp.abs(jnp.diff(recon, axis=axis) - jnp.diff(target, axis=axis))))
  return sum(terms) / len(terms)


def psnr_pm1(recon: jax.Array, target: jax.Array) -> jax.Array:
  """PSNR in dB of [-1, 1] videos (range 2), after clipping the reconstruction."""
  mse = jnp.mean((jnp.clip(recon, -1.0, 1.0) - target) ** 2)
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))


class VAETask:
  """Task protocol (vidgen.train.task) for `config.task = "vae"`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = build_model(config)
    self.losses = loss_config(config)
    dtype = self.model.dtype
    self.disc = (vae_lib.Discriminator3D(tuple(self.losses["disc_channels"]), dtype=dtype)
                 if self.losses["adv"] > 0 else None)
    self._flops: dict[tuple, float] = {}

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]) -> Params:
    video = to_float_video(batch["video"])
    r_vae, r_sample, r_disc = jax.random.split(rng, 3)
    params = {"vae": self.model.init({"params": r_vae, "sample": r_sample}, video)["params"]}
    if self.disc is not None:
      params["disc"] = self.disc.init(r_disc, video)["params"]
    return params

  def loss(self, params: Params, batch: Mapping[str, jax.Array], rng: jax.Array,
           step: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Returns (loss, metrics). The adversarial warm-up needs the step: `step=` (the trainer
    passes it, vidgen.train.step) or `batch["step"]`."""
    params = nn.meta.unbox(params)
    w = self.losses
    x = to_float_video(batch["video"])
    recon, mean, logvar = self.model.apply({"params": params["vae"]}, x,
                                           rngs={"sample": rng})
    recon = recon.astype(jnp.float32)
    l1 = jnp.mean(jnp.abs(recon - x))
    mse = jnp.mean((recon - x) ** 2)
    grad = gradient_l1(recon, x)
    kl = vae_lib.kl_divergence(mean, logvar)
    loss = w["l1"] * l1 + w["mse"] * mse + w["grad"] * grad + w["kl"] * kl
    metrics = {"l1": l1, "mse": mse, "grad_l1": grad, "kl": kl, "psnr": psnr_pm1(recon, x),
               "latent_std": jnp.std(mean)}
    if self.disc is not None:
      step = batch.get("step", step)
      if step is None:
        if w["adv_start_step"] > 0:
          raise VidgenError("loss.adv_start_step > 0 needs the step in the loss (batch['step'] "
                            "or loss(..., step=)); set loss.adv_start_step=0 to train the "
                            "discriminator from the first step")
        gate = jnp.float32(1.0)
      else:
        gate = (jnp.asarray(step) >= w["adv_start_step"]).astype(jnp.float32)
      d = params["disc"]
      fake_logits = self.disc.apply({"params": jax.lax.stop_gradient(d)}, recon)
      gen_adv = -jnp.mean(fake_logits)
      real_logits = self.disc.apply({"params": d}, x)
      fake_logits_d = self.disc.apply({"params": d}, jax.lax.stop_gradient(recon))
      disc_loss = (jnp.mean(jax.nn.relu(1.0 - real_logits))
                   + jnp.mean(jax.nn.relu(1.0 + fake_logits_d)))
      loss = loss + gate * (w["adv"] * gen_adv + disc_loss)
      metrics.update(gen_adv=gen_adv, disc_loss=disc_loss, adv_on=gate)
    metrics["loss"] = loss
    return loss, metrics

  def sample(self, params: Params, step: int, workdir: str) -> dict[str, Any]:
    """The trainer's periodic samples: fixed validation clips of the first video bucket above
    their reconstructions, as a PNG in WORKDIR/samples/ and videos for TensorBoard."""
    import numpy as np
    from vidgen import world
    from vidgen.evaluate import recon
    data = self.config.data
    frames, height, width = next((b[:3] for b in data.buckets if b[0] > 1), data.buckets[0][:3])
    clips = np.stack([world.generate_clip(
        "validation", i, seed=int(data.world.seed), height=int(height), width=int(width),
        frames=int(frames), fps=float(data.world.fps))["video"] for i in range(4)])
    vae_params = jax.device_get(nn.meta.unbox(params))["vae"]
    reconstruction, _ = recon.reconstruct(self.model, vae_params, clips)
    if jax.process_index() == 0:
      out = os.path.join(workdir, "samples")
      os.makedirs(out, exist_ok=True)
      recon.side_by_side(clips, reconstruction, os.path.join(out, f"{int(step):08d}.png"))
    both = np.concatenate([clips, np.asarray(reconstruction)], axis=2)  # Original above.
    return {f"reconstruction_{i}": video for i, video in enumerate(both)}

  def flops_per_step(self, batch: Mapping[str, Any]) -> float:
    """Forward FLOPs from XLA's cost analysis of the lowered forward pass, times 3."""
    shape = tuple(batch["video"].shape)
    if shape not in self._flops:
      x = jax.ShapeDtypeStruct(shape, jnp.float32)
      p = jax.eval_shape(lambda v: nn.meta.unbox(self.init(jax.random.key(0), {"video": v})), x)

      def forward(params, video):
        out = self.model.apply({"params": params["vae"]}, video, sample=False)[0]
        if self.disc is not None:
          out = out.sum() + 2 * self.disc.apply({"params": params["disc"]}, video).sum()
        return out

      try:
        cost = jax.jit(forward).lower(p, x).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self._flops[shape] = 3.0 * float(cost.get("flops", 0.0))
      except Exception:  # Cost analysis is best-effort; MFU is then not reported.
        self._flops[shape] = 0.0
    return self._flops[shape]


# ----------------------------------------------------------------------------- workdir I/O

STATS_FILE = "latent_stats.json"
EXPORT_DIR = "vae_export"


def export_vae(workdir: str, config: ml_collections.ConfigDict, vae_params: Params,
               stats: vae_lib.LatentStats | None = None) -> str:
  """Writes `workdir/vae_export/{params.msgpack, vae_config.json[, latent_stats.json]}`."""
  from flax import serialization
  out = os.path.join(workdir, EXPORT_DIR)
  os.makedirs(out, exist_ok=True)
  params = jax.device_get(nn.meta.unbox(vae_params))
  with open(os.path.join(out, "params.msgpack"), "wb") as f:
    f.write(serialization.to_bytes(params))
  vae_config = dataclasses.asdict(vae_config_from(config))
  with open(os.path.join(out, "vae_config.json"), "w") as f:
    json.dump({"vae": vae_config, "dtype": config.model.get("dtype", "float32")}, f, indent=1)
  if stats is not None:
    stats.save(os.path.join(out, STATS_FILE))
  return out


def restore_vae_params(workdir: str) -> Params | None:
  """params["vae"] of the trainer's newest checkpoint (EMA params when kept), or None.

  Reads WORKDIR/checkpoints/STEP/state (vidgen.train.checkpoint's layout) without a target.
  """
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(
      ckpt_dir) else []
  if not steps:
    return None
  import orbax.checkpoint as ocp
  state = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(steps[-1]), "state"))
  get = (lambda tree, key: tree.get(key) if isinstance(tree, dict) else getattr(tree, key, None))
  for key in ("ema_params", "params"):
    params = get(state, key)
    if params and get(params, "vae"):
      return get(params, "vae")
  return None


def load_vae(workdir: str) -> tuple[vae_lib.VAE, Params, vae_lib.LatentStats | None]:
  """(model, params, latent stats or None) of a trained autoencoder workdir, from
  `workdir/vae_export/` (written by `export_vae`, or by `evaluate_vae` from a checkpoint)."""
  from flax import serialization
  export = os.path.join(workdir, EXPORT_DIR)
  if not os.path.isfile(os.path.join(export, "params.msgpack")):
    raise VidgenError(f"{workdir} has no {EXPORT_DIR}/; after `vidgen train` run "
                      f"vidgen.evaluate.recon.evaluate_vae(config, workdir) (`vidgen evaluate`), "
                      f"which exports the newest checkpoint with its latent statistics")
  with open(os.path.join(export, "vae_config.json")) as f:
    meta = json.load(f)
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["vae"].items()}
  model = vae_lib.VAE(vae_lib.VAEConfig(**fields).validate(), dtype=jnp.dtype(meta["dtype"]))
  with open(os.path.join(export, "params.msgpack"), "rb") as f:
    params = serialization.msgpack_restore(f.read())
  stats_path = os.path.join(export, STATS_FILE)
  stats = vae_lib.LatentStats.load(stats_path) if os.path.exists(stats_path) else None
  return model, params, stats

"""The text-to-video task: rectified-flow training of the DiT on (latent) video.

Per step and example: latents x0 (frozen autoencoder, cached latents, or pixels), a
logit-normal timestep shifted for the token count, a conditioning mode (which latent frames
are given: kept clean at t = 0 and left out of the loss), caption dropout to the null text
(classifier-free guidance), and a masked MSE between the predicted and true velocity eps - x0.

Latent sources (`config.model.latent`):
  * "pixel": the video itself in [-1, 1] (no autoencoder; CPU tests and smoke runs);
  * "vae":   a frozen autoencoder trained by `vidgen train --config=configs/vae_tiny.py`,
             loaded from its workdir `config.model.vae.workdir` (vae_task.load_vae: the
             `vae_export/` params, config and latent statistics), encoded on the fly and
             normalised with the stored statistics; tests may pass `vae=(module, params,
             LatentStats)` instead;
  * "cached": the same latents encoded ahead by `vidgen data cache --config=...` (stored next
             to the dataset, vidgen.data.cache); batches carry `latents` [B, T', H', W', C]
             (normalised). Any batch with `latents` uses them.
Text: the tiny T5 encoder is trained jointly (its params live under params["text"]); with
`config.model.text.checkpoint` a pretrained T5 v1.1 / umT5 encoder is loaded and frozen, and
with `config.model.text.frozen` the encoder is frozen at its random init (the main job's
default: the DiT learns direction words far sooner from these fixed features than with the
encoder trained alongside; docs/benchmarks.md, "Session 16"); with
`config.model.text.cached` too (frozen only), `vidgen data cache` precomputes its embeddings
and batches carry `text_embeddings` [B, L, D] (with `text_mask`), which skip the encoder.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidgen import diffusion
from vidgen.errors import VidgenError
from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib

_DIT_FIELDS = ("width", "depth", "num_heads", "mlp_ratio", "patch", "qk_norm", "rope_theta",
               "use_fps", "pos_embed", "scan_layers", "scan_unroll", "remat", "attention",
               "block_size", "text_refiner_depth")


def get_model_config(variant: str = "tiny") -> ml_collections.ConfigDict:
  """The `config.model` section: DiT variant + overrides, latents, text, diffusion."""
  c = ml_collections.ConfigDict()
  c.variant = variant
  # DiT overrides (None: the variant's value).
  for name in _DIT_FIELDS:
    c[name] = None
  c.scan_layers = True
  c.remat = "none"  # none | nothing_saveable | dots_saveable | dots_with_no_batch_dims_saveable
  c.attention = "auto"  # auto | xla | cudnn | splash | blockwise
  c.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  c.param_dtype = "float32"
  c.latent = "pixel"  # pixel | vae (encoded on the fly) | cached (`vidgen data cache`)
  c.latent_channels = 0  # 0: the autoencoder's; for "cached" without vae.workdir: required
  c.vae = ml_collections.ConfigDict()
  c.vae.workdir = ""  # A VAE training workdir holding vae_export/ (vae_task.export_vae).
  c.vae.variant = ""  # Informational (vidgen run checks it); the workdir defines the model.
  c.text = ml_collections.ConfigDict()
  c.text.variant = ""  # "": the DiT variant's text encoder
  c.text.checkpoint = ""  # HF safetensors file/dir of a T5 v1.1 / umT5 encoder -> frozen
  # True: the encoder is frozen at its random initialisation (seed text.seed), with no
  # checkpoint: its fixed features serve the DiT's cross-attention, which learns to read them.
  c.text.frozen = False
  c.text.seed = 0
  # The encoder's position bias at init (text.T5Config.relative_attention_init_*): one slope
  # a head for a local, ALiBi-style bias (empty: T5's random one), and whether each word
  # sees only the words before it. A frozen random encoder so initialised binds each word to
  # its neighbours ("circle" in "a red circle" carries "red"); T5's barely depends on order.
  c.text.relpos_slopes = ()
  c.text.relpos_causal = False
  # Each token's feature followed by its clause's bag of token embeddings (clauses end at
  # '.', ',', ';'; text.clause_bags): the words of one object kept together, which a
  # frozen random encoder does not do (docs/benchmarks.md, "Session 21", "Session 22").
  c.text.clause_bags = False
  # What images (one-frame clips, and text to image at sampling) read of the bags: "same" as
  # videos; "none": the plain features alone (DiT.image_text_width); "apart": the bags through
  # weights of their own (DiT.image_text_apart). Image captions name a motion no still frame
  # shows, and image steps taught the full mix to discount the bags ("Session 22", "Session 23").
  c.text.image_bags = "same"
  c.text.cached = False  # Frozen only: embeddings precomputed by `vidgen data cache`.
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.timestep_mean = 0.0  # logit-normal location
  c.diffusion.timestep_std = 1.0
  c.diffusion.shift = 0.0  # > 0: a fixed timestep shift; 0: sqrt(tokens / shift_base_tokens)
  c.diffusion.shift_base_tokens = 256
  c.diffusion.shift_base = 1.0
  c.diffusion.text_drop_rate = 0.1
  # > 0: latent pixels off the flat background (objects, trails, pillars) weigh 1 + this in
  # the loss (diffusion.object_mask). 4 raised the main job's generated color from 0.72 /
  # 0.55 to 0.83 / 0.62 (heldout / test), not shape or direction (docs/benchmarks.md,
  # "Session 11"); configs/default.py sets it, the model default stays off.
  c.diffusion.object_weight = 0.0
  # none, first, last, first_last, first_k, last_k, random (diffusion.CONDITION_MODES)
  c.diffusion.condition_probs = (0.5, 0.15, 0.05, 0.05, 0.1, 0.05, 0.1)
  c.diffusion.condition_max_k = 0  # 0: up to T' - 1 frames
  return c


def cached_latent_config(variant: str, latent_channels: int, vocab_size: int,
                         **model: Any) -> ml_collections.ConfigDict:
  """The smallest config a T2VTask builds from: `variant` over cached latents of
  `latent_channels`, a jointly trained text encoder over `vocab_size` pieces, and `model`
  overrides (dtype, attention, remat, ...); no dataset (benchmarks, tests)."""
  c = ml_collections.ConfigDict()
  c.task = "t2v"
  c.data = ml_collections.ConfigDict(dict(tokenizer=dict(vocab_size=vocab_size)))
  c.model = get_model_config(variant)
  c.model.latent = "cached"
  c.model.latent_channels = latent_channels
  c.model.update(model)
  return c


def dit_param_count(model: dit_lib.DiT, latent_shape: tuple[int, ...], text_dim: int,
                    text_len: int = 8) -> int:
  """Parameters of a DiT via jax.eval_shape (nothing is allocated)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(latent_shape), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros((1,)),
                         jnp.zeros((1, text_len, text_dim)), jnp.ones((1, text_len), bool)))
  return int(sum(math.prod(l.shape) for l in jax.tree.leaves(nn.meta.unbox(shapes))))


class T2VTask:
  """Implements vidgen.train.task.Task for text-to-video rectified flow."""

  def __init__(self, config: ml_collections.ConfigDict, *, vae: Optional[tuple] = None):
    self.config = config
    m = config.model
    self.diff = m.diffusion
    variant = dit_lib.VARIANTS[m.variant]
    self.latent = m.latent
    self.vae = vae
    if self.latent == "vae" and self.vae is None:
      self.vae = load_frozen_vae(vae_workdir(m))
    if self.latent == "pixel":
      channels = 3
    elif self.latent == "vae":
      channels = self.vae[0].config.latent_channels
    elif self.latent == "cached":
      channels = m.latent_channels or (
          vae_channels(vae_workdir(m)) if m.vae.get("workdir") else 0)
      if channels <= 0:
        raise VidgenError("config.model.latent='cached' needs config.model.vae.workdir (the "
                          "autoencoder whose latents were cached) or "
                          "config.model.latent_channels > 0")
    else:
      raise VidgenError(f"config.model.latent={m.latent!r}: expected 'pixel', 'vae' or "
                        "'cached'")
    check_text_config(m)

    # Text encoder: trained jointly, or frozen (pretrained, or at its random init).
    self.text_frozen = None
    frozen = frozen_text_encoder(config)
    if frozen is not None:
      self.text_model, self.text_frozen = frozen
    else:
      self.text_model = _text_module(config)
    self.text_dim = self.text_model.config.output_dim

    overrides = {k: m[k] for k in _DIT_FIELDS if k in m and m[k] is not None}
    if "patch" in overrides:
      overrides["patch"] = tuple(overrides["patch"])
    if m.text.get("clause_bags") and m.text.get("image_bags", "same") != "same":
      overrides["image_text_width"] = self.text_model.config.d_model
      overrides["image_text_apart"] = m.text.image_bags == "apart"
    self.model = dit_lib.make_dit(m.variant, in_channels=channels,
                                  dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype),
                                  **overrides)
    self._param_counts: dict = {}
    if (self.latent == "cached" and m.vae.get("workdir")) or m.text.get("cached"):
      self.batch_spec = self._cached_batch_spec  # AOT compiles (vidgen.train.aot) read it.

  def _cached_batch_spec(self) -> dict:
    """Global shapes of a first-bucket batch as the cached pipeline yields it."""
    from vidgen.models import vae as vae_lib
    data, m = self.config.data, self.config.model
    t, h, w, b = (int(x) for x in data.buckets[0])
    length = int(data.tokenizer.max_len)
    sds = jax.ShapeDtypeStruct
    spec = {"tokens": sds((b, length), np.int32), "text_mask": sds((b, length), np.bool_),
            "fps": sds((b,), np.float32)}
    if self.latent == "cached":
      shape = vae_lib.latent_shape(t, h, w, vae_config(vae_workdir(m)))
      spec["latents"] = sds((b,) + tuple(shape), np.float32)
    else:
      spec["video"] = sds((b, t, h, w, 3), np.uint8)
    if m.text.get("cached"):
      spec["text_embeddings"] = sds((b, length, self.text_dim), np.float32)
    return spec

  def make_train_iterator(self, config: ml_collections.ConfigDict, *, process_index: int,
                          process_count: int):
    """The trainer's data hook: cached latents / text embeddings when configured, else the
    plain pipeline (video + tokens)."""
    from vidgen.data import cache as cache_lib
    if cache_lib.uses_cache(config):
      return cache_lib.make_train_iterator(config, process_index=process_index,
                                           process_count=process_count)
    from vidgen.data import pipeline
    return pipeline.make_train_iterator(config, process_index=process_index,
                                        process_count=process_count)

  # -------------------------------------------------------------------------------------------
  def latents(self, batch) -> jax.Array:
    """The clean latents x0 [B, T', H', W', C] (f32) of a batch."""
    if "latents" in batch:
      return jnp.asarray(batch["latents"], jnp.float32)
    video = jnp.asarray(batch["video"]).astype(jnp.float32) / 127.5 - 1.0
    if self.latent == "pixel":
      return video
    if self.vae is None:
      raise VidgenError("config.model.latent='cached' but the batch carries no `latents`; read "
                        "batches with vidgen.data.cache (the task's make_train_iterator)")
    module, params, stats = self.vae
    mean, _ = module.apply({"params": jax.lax.stop_gradient(params)}, video,
                           method="encode")
    return stats.normalize(mean.astype(jnp.float32))

  def text(self, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Text embeddings [B, L, D] f32 (zero at padding)."""
    if self.text_frozen is not None:
      emb, _ = text_lib.encode_text(self.text_model, self.text_frozen, tokens, mask)
      return emb
    return self.text_model.apply({"params": params["text"]}, tokens, mask).astype(jnp.float32)

  def prepare(self, batch, rng: jax.Array) -> dict:
    """Everything but the model: noised input, per-frame t, conditioning mask, target, text."""
    x0 = self.latents(batch)
    b, frames = x0.shape[:2]
    pt = self.model.patch[0]
    k_t, k_eps, k_cond, k_drop = jax.random.split(rng, 4)
    n_tokens = math.prod(x0.shape[1:4]) // math.prod(self.model.patch)
    d = self.diff
    t = diffusion.sample_timesteps(
        k_t, b, n_tokens, mean=d.timestep_mean, std=d.timestep_std,
        base_tokens=d.shift_base_tokens, base_shift=d.shift_base,
        shift=d.shift if d.shift > 0 else None)
    # Conditioning is chosen per patch-frame so a patch never mixes given and noisy frames.
    cond, mode = diffusion.sample_condition_mask(k_cond, b, frames // pt, d.condition_probs,
                                                 d.condition_max_k or None)
    cond = jnp.repeat(cond, pt, axis=1)
    t_frames = diffusion.frame_timesteps(t, cond)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    tokens, text_mask = batch["tokens"], jnp.asarray(batch["text_mask"], bool)
    if "text_embeddings" in batch:
      dropped = jax.random.uniform(k_drop, (b,)) < d.text_drop_rate
      text_mask = jnp.where(dropped[:, None], False, text_mask)
    else:
      tokens, text_mask, dropped = diffusion.drop_text(k_drop, tokens, text_mask,
                                                       d.text_drop_rate)
    return dict(x0=x0, x_t=diffusion.add_noise(x0, eps, t_frames), t=t_frames, cond_mask=cond,
                mode=mode, target=diffusion.velocity_target(x0, eps), tokens=tokens,
                text_mask=text_mask, dropped=dropped)

  def velocity(self, params, x_t, t, text, text_mask, fps=None) -> jax.Array:
    """The DiT's velocity prediction (f32)."""
    return self.model.apply({"params": params["dit"]}, x_t, t, text, text_mask, fps)

  # -------------------------------------------------------------------------------------------
  def init(self, rng: jax.Array, batch) -> Any:
    x0 = self.latents(batch)
    k_dit, k_text = jax.random.split(rng)
    tokens, mask = batch["tokens"], jnp.asarray(batch["text_mask"], bool)
    params = {}
    if "text_embeddings" in batch:
      text = jnp.asarray(batch["text_embeddings"], jnp.float32)
    elif self.text_frozen is None:
      params["text"] = self.text_model.init(k_text, tokens, mask)["params"]
      text = jnp.zeros(tokens.shape + (self.text_dim,), jnp.float32)
    else:
      text = jnp.zeros(tokens.shape + (self.text_dim,), jnp.float32)
    b, frames = x0.shape[:2]
    params["dit"] = self.model.init(k_dit, x0, jnp.zeros((b, frames)), text, mask,
                                    batch.get("fps"))["params"]
    return params

  def loss(self, params, batch, rng: jax.Array) -> tuple[jax.Array, dict]:
    p = self.prepare(batch, rng)
    if "text_embeddings" in batch:
      text = jnp.asarray(batch["text_embeddings"], jnp.float32)
    else:
      text = self.text(params, p["tokens"], p["text_mask"])
    v = self.velocity(params, p["x_t"], p["t"], text, p["text_mask"], batch.get("fps"))
    weight = None
    if self.diff.object_weight > 0:
      weight = 1.0 + self.diff.object_weight * diffusion.object_mask(p["x0"])
    loss = diffusion.masked_mse(v, p["target"], p["cond_mask"], weight)
    metrics = {
        "mse": loss,
        "cond_frame_fraction": jnp.mean(p["cond_mask"].astype(jnp.float32)),
        "text_dropped_fraction": jnp.mean(p["dropped"].astype(jnp.float32)),
        "t_mean": jnp.mean(jnp.max(p["t"], axis=1)),
    }
    return loss, metrics

  # -------------------------------------------------------------------------------------------
  def param_counts(self, latent_shape: tuple[int, ...], text_len: int) -> tuple[int, int]:
    """(DiT params, text encoder params), counted with jax.eval_shape."""
    key = (tuple(latent_shape), text_len)
    if key not in self._param_counts:
      n_dit = dit_param_count(self.model, latent_shape, self.text_dim, text_len)
      shapes = jax.eval_shape(lambda: self.text_model.init(
          jax.random.key(0), jnp.zeros((1, text_len), jnp.int32), jnp.ones((1, text_len), bool)))
      n_text = int(sum(math.prod(l.shape) for l in jax.tree.leaves(nn.meta.unbox(shapes))))
      self._param_counts[key] = (n_dit, n_text)
    return self._param_counts[key]

  def latent_shape(self, batch) -> tuple[int, ...]:
    if "latents" in batch:
      return tuple(batch["latents"].shape[1:])
    _, t, h, w, _ = batch["video"].shape
    if self.latent == "pixel":
      return (t, h, w, 3)
    from vidgen.models import vae as vae_lib
    return vae_lib.latent_shape(t, h, w, self.vae[0].config)

  def sample(self, params, step: int, workdir: str) -> dict[str, np.ndarray]:
    """The trainer's periodic samples: text-to-video for `config.train.sample_prompts` with
    these params (exported to a temporary bundle and sampled by the Pipeline, as a user
    would), written as GIFs to WORKDIR/samples/STEP/ and returned for TensorBoard."""
    import json
    import os
    import shutil
    import tempfile
    from jax.experimental import multihost_utils
    from vidgen import export, pipeline as pipeline_lib, sample as sample_lib
    prompts = [str(p) for p in self.config.train.get("sample_prompts", ())]
    if not prompts:
      return {}
    params = nn.meta.unbox(params)
    if jax.process_count() > 1:
      params = multihost_utils.process_allgather(params, tiled=True)
    tmp = tempfile.mkdtemp(prefix="vidgen_sample_")
    try:
      bundle = os.path.join(tmp, "bundle")
      export.export_params(self, jax.device_get(params), bundle, source={"step": int(step)})
      pipe = pipeline_lib.Pipeline.load(bundle, devices=[jax.local_devices()[0]])
      generation = pipe.text_to_video(prompts, steps=int(self.config.train.sample_steps),
                                      seed=int(self.config.seed))
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    videos = np.asarray(generation.video)
    if jax.process_index() == 0:
      out = os.path.join(workdir, "samples", f"{int(step):08d}")
      os.makedirs(out, exist_ok=True)
      for i, video in enumerate(videos):
        sample_lib.write_video(os.path.join(out, f"{i:02d}.gif"), video, generation.fps)
      with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompts, f, indent=1)
    return {f"sample_{i:02d}": video for i, video in enumerate(videos)}

  def flops_per_step(self, batch) -> float:
    """Training FLOPs of one step (forward + backward), summed over the batch.

    Per sample, with N spacetime tokens, L text tokens, P DiT params, depth x width:
      6 P N + 12 depth width N^2 (self-attention) + 12 depth width N L (cross-attention).
    The 6 = 2 (multiply-add) x 3 (forward + backward = 3 forwards) and 12 = 4 (QK^T and AV)
    x 3 already include the backward pass. A jointly trained text encoder adds 6 P_text L; a
    frozen one 2 P_text L (forward only). Autoencoder encoding is not counted.
    """
    b, text_len = batch["tokens"].shape
    shape = self.latent_shape(batch)
    n = math.prod(shape[:3]) // math.prod(self.model.patch)
    p_dit, p_text = self.param_counts(shape, text_len)
    m = self.model
    per_sample = (6 * p_dit * n + 12 * m.depth * m.width * n * n
                  + 12 * m.depth * m.width * n * text_len)
    if "text_embeddings" not in batch:
      per_sample += (2 if self.text_frozen is not None else 6) * p_text * text_len
    return float(b * per_sample)


def vae_workdir(model_config: ml_collections.ConfigDict) -> str:
  """The autoencoder workdir of `config.model` (a clear error when none is set).

  Also accepts the older `vae.params_path` (WORKDIR/vae_export/params.msgpack) spelling.
  """
  import os
  workdir = model_config.vae.get("workdir", "")
  legacy = model_config.vae.get("params_path", "")
  if not workdir and legacy:
    workdir = os.path.dirname(os.path.dirname(os.path.abspath(legacy)))
  if not workdir:
    raise VidgenError(
        f"config.model.latent={model_config.latent!r} needs config.model.vae.workdir=DIR, the "
        "workdir of a trained autoencoder (vidgen train --config=configs/vae_tiny.py "
        "--workdir=DIR, then vidgen evaluate, which exports it with its latent statistics); "
        "or set config.model.latent=pixel")
  return workdir


def vae_config(workdir: str):
  """The VAEConfig of the autoencoder exported in `workdir` (reads only its config file)."""
  import json
  import os
  from vidgen.models import vae as vae_lib
  from vidgen.train import vae_task
  path = os.path.join(workdir, vae_task.EXPORT_DIR, "vae_config.json")
  if not os.path.isfile(path):
    raise VidgenError(f"{workdir} has no trained autoencoder ({path} is missing); train and "
                      "export one first (vidgen train --config=configs/vae_tiny.py, then "
                      "vidgen evaluate)")
  with open(path) as f:
    fields = json.load(f)["vae"]
  return vae_lib.VAEConfig(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in fields.items()})


def vae_channels(workdir: str) -> int:
  """Latent channels of the autoencoder exported in `workdir`."""
  return int(vae_config(workdir).latent_channels)


def load_frozen_vae(workdir: str) -> tuple:
  """(module, params, LatentStats) of a trained autoencoder workdir, for frozen encoding."""
  import os
  from vidgen.train import vae_task
  if not os.path.isdir(workdir):
    raise VidgenError(f"config.model.vae.workdir={workdir!r} does not exist; point it at the "
                      "workdir of a trained autoencoder "
                      "(vidgen train --config=configs/vae_tiny.py)")
  module, params, stats = vae_task.load_vae(workdir)
  if stats is None:
    raise VidgenError(
        f"the autoencoder in {workdir} has no latent statistics "
        f"({vae_task.EXPORT_DIR}/{vae_task.STATS_FILE}); the transformer trains on normalised "
        "latents: run `vidgen evaluate` on the VAE workdir (it measures and exports them), or "
        "export_vae(..., stats=measure_latent_stats(...))")
  params = params.get("params", params) if isinstance(params, dict) else params
  return module, jax.tree.map(jnp.asarray, params), stats


def text_is_frozen(m: ml_collections.ConfigDict) -> bool:
  """Whether `config.model`'s text encoder is frozen (a checkpoint, or `text.frozen`)."""
  return bool(m.text.checkpoint) or bool(m.text.get("frozen"))


IMAGE_BAGS = ("same", "none", "apart")  # config.model.text.image_bags


def check_text_config(m: ml_collections.ConfigDict) -> None:
  """Refuses text settings that contradict each other: cached embeddings of an encoder that
  trains (they would go stale), a position-bias init for a checkpoint's trained bias, or
  clause bags kept from images with no clause bags."""
  if m.text.get("cached") and not text_is_frozen(m):
    raise VidgenError("config.model.text.cached=True needs a frozen text encoder: set "
                      "config.model.text.frozen=True (frozen at its random init) or "
                      "config.model.text.checkpoint, or cached=False")
  if m.text.checkpoint and (m.text.get("relpos_slopes") or m.text.get("relpos_causal")):
    raise VidgenError("config.model.text.relpos_slopes / relpos_causal set how a position "
                      "bias starts, but text.checkpoint loads a trained one: drop one of them")
  image_bags = m.text.get("image_bags", "same")
  if image_bags not in IMAGE_BAGS:
    raise VidgenError(f"config.model.text.image_bags={image_bags!r}: expected one of "
                      f"{', '.join(IMAGE_BAGS)}")
  if image_bags != "same" and not m.text.get("clause_bags"):
    raise VidgenError(f"config.model.text.image_bags={image_bags!r} sets what images read of "
                      "the clause bags, but text.clause_bags is off: set text.clause_bags=True, "
                      "or drop image_bags")


def _text_module(config: ml_collections.ConfigDict) -> text_lib.T5Encoder:
  """The T5 encoder of `config.model.text.variant` (or the DiT variant's) over the tokenizer's
  vocabulary."""
  m = config.model
  variant = m.text.variant or dit_lib.VARIANTS[m.variant]["text"]
  return text_lib.T5Encoder(text_lib.get_t5_config(
      variant, vocab_size=int(config.data.tokenizer.vocab_size),
      relative_attention_init_slopes=m.text.get("relpos_slopes", ()),
      relative_attention_init_causal=bool(m.text.get("relpos_causal", False)),
      clause_boundaries=clause_boundaries(config)))


def clause_boundaries(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The tokenizer's clause-ending ids when `config.model.text.clause_bags`, else ()."""
  if not config.model.text.get("clause_bags"):
    return ()
  from vidgen.data import config as data_config
  from vidgen.data.tokenizer import Tokenizer
  return Tokenizer(data_config.tokenizer_path(config.data)).clause_boundaries()


def frozen_text_encoder(config: ml_collections.ConfigDict) -> Optional[tuple]:
  """(T5Encoder, variables) of a frozen text encoder: `config.model.text.checkpoint`, or with
  `text.frozen` the random initialisation of seed `text.seed`; None when it trains jointly."""
  m = config.model
  if m.text.checkpoint:
    variant = m.text.variant or dit_lib.VARIANTS[m.variant]["text"]
    module, variables = text_lib.load_hf_t5_encoder(
        m.text.checkpoint, variant, clause_boundaries=clause_boundaries(config))
    return module, jax.tree.map(jnp.asarray, variables)
  if not m.text.get("frozen"):
    return None
  module = _text_module(config)
  tokens = jnp.zeros((1, 8), jnp.int32)
  variables = jax.jit(module.init)(jax.random.key(int(m.text.get("seed", 0))), tokens,
                                   jnp.ones((1, 8), bool))
  return module, nn.meta.unbox(variables)

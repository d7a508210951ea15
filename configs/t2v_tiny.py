"""Text-to-video DiT, tiny variant, on latents of the tiny VAE over the Shapes World (CPU).

  vidgen train --config=configs/vae_tiny.py --workdir=/tmp/vae_tiny    # the autoencoder,
  vidgen evaluate --config=configs/vae_tiny.py --workdir=/tmp/vae_tiny # exported with stats
  vidgen train --config=configs/t2v_tiny.py --workdir=/tmp/t2v_tiny \\
      --config.model.vae.workdir=/tmp/vae_tiny                         # latents on the fly
  vidgen data cache --config=configs/t2v_tiny.py:tiny,cached \
      --config.model.vae.workdir=/tmp/vae_tiny
  vidgen train --config=configs/t2v_tiny.py:tiny,cached --workdir=/tmp/t2v_tiny \\
      --config.model.vae.workdir=/tmp/vae_tiny                         # latents cached ahead
  vidgen train --config=configs/t2v_tiny.py:tiny,pixel --workdir=/tmp/t2v_px  # no autoencoder
  vidgen train --config=configs/t2v_tiny.py:30M --workdir=/tmp/t2v_30m \
      --config.model.vae.workdir=...

The argument is `VARIANT[,SOURCE]`: the DiT variant (vidgen.models.dit.VARIANTS) and where
latents come from: `vae` (default: the frozen autoencoder of model.vae.workdir, encoded on
the fly), `cached` (the same latents encoded ahead by `vidgen data cache`), or `pixel` (the
video itself in [-1, 1], 8 frames, 4x4 pixel patches: the autoencoder-free smoke recipe).
The tiny T5 text encoder is trained jointly; `--config.model.text.checkpoint=DIR` loads a
pretrained T5 v1.1 / umT5 encoder (safetensors) and freezes it, `--config.model.text.frozen=True`
freezes the tiny one at its random init (the main job's default), and with either
`--config.model.text.cached=True` takes its embeddings from `vidgen data cache` too.
A frozen random encoder reads a caption as a set of words; `--config.model.text_refiner_depth=2`
adds self-attention blocks over the token order, trained with the DiT, that bind each
object's words to it (docs/benchmarks.md, "Session 17"). At no cost a step,
`--config.model.text.relpos_slopes='(0.5,0.25,0.5,0.25)' --config.model.text.relpos_causal=True`
starts the encoder's position bias local and causal instead, so that a frozen random encoder
gives each word the words before it ("circle" in "a red circle" carries "red"; session 19).
`--config.model.text.clause_bags=True` follows each word's feature with the bag of the token
embeddings of its clause (clauses end at '.', ',' and ';'), so every word of "a small
red circle moves to the left" carries the whole clause; the text is twice as wide (sessions 21 and 22).
`--config.model.text.image_bags=none` keeps the bags from images (image steps and text to
image read the plain features), `=apart` gives images the bags through weights of their own
(session 23).
"""
import ml_collections

from vidgen.data.config import get_config as get_data_config
from vidgen.train.config import get_mesh_config, get_train_config
from vidgen.train.t2v_task import get_model_config

SOURCES = ("vae", "cached", "pixel")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  variant, _, source = (arg or "tiny").partition(",")
  variant, source = variant or "tiny", source or "vae"
  if source not in SOURCES:
    raise ValueError(f"latent source {source!r}: expected one of {SOURCES} (arg VARIANT,SOURCE)")
  c = ml_collections.ConfigDict()
  c.task = "t2v"
  c.seed = 0
  c.data = get_data_config()
  c.data.tokenizer.max_len = 48  # Whole captions but for 0.8 % (configs/default.py)
  c.model = get_model_config(variant)
  c.model.latent = source
  if source == "pixel":
    c.data.world.frames = 8
    c.data.buckets = [(8, 32, 32, 8), (1, 32, 32, 32)]  # video and image (joint training)
    c.model.patch = (1, 4, 4)  # pixels: 8 x 8 x 8 = 512 tokens a clip
  else:
    # The tiny VAE takes 1 + 4k frames and compresses 4x4 in space: 9 x 32 x 32 -> 3 x 8 x 8
    # x 8 latents, and an image -> 1 x 8 x 8; with 1 x 1 x 1 patches 192 and 64 tokens.
    c.data.world.frames = 9
    c.data.buckets = [(9, 32, 32, 16), (1, 32, 32, 64)]  # video and image (joint training)
    c.data.bucket_weights = [3.0, 1.0]
    c.model.patch = (1, 1, 1)
    c.model.vae.variant = "tiny"
  c.train = get_train_config()
  c.train.steps = 2000
  c.train.lr = 3e-4
  c.train.warmup_steps = 100
  c.train.ema_decay = 0.999
  c.train.sample_every = 500  # GIFs in WORKDIR/samples/STEP/ and TensorBoard
  c.train.sample_prompts = ("a red circle moves to the right", "a blue square moves up")
  c.mesh = get_mesh_config()
  c.eval = ml_collections.ConfigDict()
  return c

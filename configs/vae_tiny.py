"""The tiny causal 3D VAE (4x temporal, 4x4 spatial, 8 latent channels) on the Shapes World.

  vidgen train --config=configs/vae_tiny.py --workdir=/tmp/vae_tiny
  vidgen train --config=configs/vae_tiny.py:4x8x8x16 --workdir=DIR   # the large class

`arg` picks the VARIANTS entry of vidgen/models/vae.py; every VAEConfig field can be
overridden with --config.model.FIELD=VALUE (None means: from the variant).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from vidgen.data.config import get_config as get_data_config
from vidgen.models import vae
from vidgen.train.config import get_mesh_config, get_train_config


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "vae"
  config.seed = 0

  config.data = get_data_config()
  config.data.world.frames = 9  # Clips of 1 + 4k frames; buckets take windows of them.
  if arg == "tiny":
    # Videos and one-frame images (joint image/video training), drawn 3:1. The videos are
    # the 9 frames the transformer trains on: an autoencoder trained on 5 decodes the third
    # latent frame of 9 far worse than the first two (docs/benchmarks.md).
    config.data.buckets = [(9, 32, 32, 3), (1, 32, 32, 16)]
    config.data.bucket_weights = [3.0, 1.0]
  else:
    config.data.world.height = config.data.world.width = 256
    config.data.world.frames = 17
    config.data.buckets = [(17, 256, 256, 8), (1, 256, 256, 64)]

  config.model = ml_collections.ConfigDict()
  config.model.variant = arg
  config.model.dtype = "float32"
  for field in dataclasses.fields(vae.VAEConfig):
    config.model[field.name] = None  # None: the variant's value.

  config.loss = ml_collections.ConfigDict()
  # Reconstruction: L1 and/or MSE. On the Shapes World the tiny variant learns objects
  # faster with MSE (17.4 vs 15.4 dB at step 200, docs/benchmarks.md); L1 settles on the flat
  # background first.
  config.loss.l1 = 0.0 if arg == "tiny" else 1.0
  config.loss.mse = 1.0 if arg == "tiny" else 0.0
  config.loss.grad = 1.0
  config.loss.kl = 1e-6
  config.loss.adv = 0.0 if arg == "tiny" else 0.1
  config.loss.adv_start_step = 0 if arg == "tiny" else 20000
  config.loss.disc_channels = (32, 64, 128)

  config.train = get_train_config()
  config.train.steps = 3000 if arg == "tiny" else 200000
  config.train.lr = 1e-3 if arg == "tiny" else 1e-4
  config.train.warmup_steps = 50 if arg == "tiny" else 1000
  config.train.weight_decay = 0.0
  config.train.ema_decay = 0.0 if arg == "tiny" else 0.999
  config.train.checkpoint_every = 250 if arg == "tiny" else 2000

  config.mesh = get_mesh_config()
  return config

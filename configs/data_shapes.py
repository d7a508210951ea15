"""Shapes World data only: build it, look at it, train its caption tokenizer.

  vidgen data build --config=configs/data_shapes.py
  vidgen data show --config=configs/data_shapes.py
  vidgen data tokenizer --config=configs/data_shapes.py
  vidgen data build --config=configs/data_shapes.py:tiny   # a few clips, for a quick look

Task configs embed the same section: `config.data = vidgen.data.config.get_config()`.
"""
import ml_collections

from vidgen.data import config as data_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = data_config.get_config()
  if arg == "tiny":
    w = config.data.world
    w.height, w.width, w.frames = 16, 16, 8
    w.train_size, w.validation_size, w.test_size, w.heldout_size = 64, 16, 16, 16
    config.data.buckets = [(8, 16, 16, 8), (1, 16, 16, 32)]
  elif arg:
    raise ValueError(f"unknown arg {arg!r}; use '' or 'tiny'")
  return config

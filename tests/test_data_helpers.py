"""Shared helpers for the data tests: tiny configs and test media written with PyAV/Pillow."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from vidgen.data import config as data_config
from vidgen.data import video_io


def tiny_shapes_config(data_dir: str, **world) -> ml_collections.ConfigDict:
  """A Shapes World of 8 frames of 16x16, tens of clips; buckets: 8-frame video and image."""
  config = ml_collections.ConfigDict()
  config.data = data_config.get_config()
  data = config.data
  data.data_dir = data_dir
  w = data.world
  w.height, w.width, w.frames, w.fps = 16, 16, 8, 8.0
  w.train_size, w.validation_size, w.test_size, w.heldout_size = 40, 12, 4, 4
  for key, value in world.items():
    w[key] = value
  data.buckets = [(8, 16, 16, 4), (1, 16, 16, 8)]
  data.bucket_weights = [3.0, 1.0]
  data.clip.resize_method = "nearest"
  data.tokenizer.vocab_size = 128
  data.tokenizer.max_len = 24
  data.read_threads = 1
  return config


def random_video(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
  """Smooth-ish frames (blocks of color) so lossy codecs keep them recognisable."""
  blocks = rng.integers(0, 255, (frames, height // 8, width // 8, 3), dtype=np.uint8)
  return blocks.repeat(8, axis=1).repeat(8, axis=2)


def write_media_folder(folder: str, seed: int = 0) -> dict[str, str]:
  """Writes good, corrupt, captionless and too-short files; returns file -> expected outcome."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  expected = {}

  def put(name: str, data: bytes, caption: str | None, outcome: str) -> None:
    with open(os.path.join(folder, name), "wb") as f:
      f.write(data)
    if caption is not None:
      with open(os.path.join(folder, os.path.splitext(name)[0] + ".txt"), "w") as f:
        f.write(caption + "\n")
    expected[name] = outcome

  put("wide.mp4", video_io.encode_mp4(random_video(rng, 12, 32, 48), 8), "a wide clip", "ok")
  put("square.mp4", video_io.encode_mp4(random_video(rng, 16, 32, 32), 16), "a square clip", "ok")
  put("loop.gif", video_io.encode_gif(random_video(rng, 10, 24, 24), 10), None, "ok")
  put("still.png", video_io.encode_png(random_video(rng, 1, 24, 40)[0]), "a still image", "ok")
  put("talk.mov", video_io.encode_video(random_video(rng, 9, 32, 32), 8, container="mov"),
      "a mov clip", "ok")
  put("web.webm", video_io.encode_video(random_video(rng, 10, 16, 32), 10, container="webm",
                                        codec="libvpx-vp9"), "a webm clip", "ok")
  put("corrupt.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 255, 4000, np.uint8)),
      "broken", "cannot decode")
  put("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"nonsense" * 50, "broken image", "cannot decode")
  put("nocaption.mp4", video_io.encode_mp4(random_video(rng, 12, 16, 16), 8), None, "no caption")
  put("short.mp4", video_io.encode_mp4(random_video(rng, 3, 16, 16), 8), "too short", "too short")
  with open(os.path.join(folder, "captions.jsonl"), "w") as f:  # The gif's caption lives here.
    f.write(json.dumps({"file": "loop.gif", "captions": ["a looping gif", "gif loop"]}) + "\n")
  return expected

"""TFDS builder for the Shapes World (../shared/WORLD.md): four splits of rendered clips.

Clips are stored losslessly as raw uint8 tensors with every caption and the full metadata
(both as JSON text), written as ArrayRecord and read with `tfds.data_source` (no TensorFlow).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

SPLITS = ("train", "validation", "test", "heldout")


@dataclasses.dataclass(eq=False)
class ShapesWorldConfig(tfds.core.BuilderConfig):
  """Resolution, length, frame rate, seed and split sizes of one Shapes World build."""
  height: int = 32
  width: int = 32
  frames: int = 16
  fps: float = 8.0
  seed: int = 0
  train_size: int = 4096
  validation_size: int = 256
  test_size: int = 256
  heldout_size: int = 256

  def split_sizes(self) -> dict[str, int]:
    return {"train": self.train_size, "validation": self.validation_size,
            "test": self.test_size, "heldout": self.heldout_size}


def make_config(*, height: int, width: int, frames: int, fps: float, seed: int,
                train_size: int, validation_size: int, test_size: int,
                heldout_size: int) -> ShapesWorldConfig:
  """A config whose name spells out its settings, so different settings never share files."""
  fps_name = f"{fps:g}".replace(".", "p")
  name = (f"h{height}_w{width}_t{frames}_fps{fps_name}_seed{seed}"
          f"_n{train_size}-{validation_size}-{test_size}-{heldout_size}")
  return ShapesWorldConfig(name=name, version="1.0.0", height=height, width=width,
                           frames=frames, fps=float(fps), seed=seed, train_size=train_size,
                           validation_size=validation_size, test_size=test_size,
                           heldout_size=heldout_size)


class VidgenShapesWorld(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The procedural Shapes World; the config carries sizes, resolution, frames, fps, seed."""
  # Not registered (skip_registration): vidgen builds its builders directly, so the class
  # never clashes with another TFDS dataset or with itself on re-import.
  name = "vidgen_shapes_world"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = ShapesWorldConfig

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description="Shapes World v1: procedurally rendered, captioned clips.",
        features=tfds.features.FeaturesDict({
            # BYTES: one raw buffer per clip (the default writes one int64 per pixel).
            "video": tfds.features.Tensor(shape=(c.frames, c.height, c.width, 3),
                                          dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            "captions": tfds.features.Text(),   # JSON list; [0] detailed, [1] short.
            "metadata": tfds.features.Text(),   # JSON dict per WORLD.md.
            "index": tfds.features.Scalar(dtype=np.int64),
            "fps": tfds.features.Scalar(dtype=np.float32),
        }),
        disable_shuffling=True,  # Record i is clip i; the input pipeline shuffles.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the world is rendered.
    return {split: self._generate_examples(split, size)
            for split, size in self.builder_config.split_sizes().items()}

  def _generate_examples(self, split: str, size: int):
    from vidgen import world  # Deferred: only builds need the renderer.
    c = self.builder_config
    for index in range(size):
      clip = world.generate_clip(split, index, seed=c.seed, height=c.height, width=c.width,
                                 frames=c.frames, fps=c.fps)
      yield index, {
          "video": np.asarray(clip["video"], np.uint8),
          "captions": json.dumps(list(clip["captions"])),
          "metadata": json.dumps(clip["metadata"]),
          "index": index,
          "fps": np.float32(c.fps),
      }

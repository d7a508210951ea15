"""Shapes World through TFDS: build, read back without TensorFlow, and the `vidgen data` CLI."""
import json
import os

import numpy as np
import pytest

from vidgen import main, world
from vidgen.data import commands, datasets
from test_data_helpers import tiny_shapes_config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  config = tiny_shapes_config(str(tmp_path_factory.mktemp("shapes")))
  summary = commands.build(config.data)
  return config, summary


def test_build_has_four_splits_of_the_configured_sizes(built):
  config, summary = built
  assert summary["splits"] == {"train": 40, "validation": 12, "test": 4, "heldout": 4}
  assert datasets.is_built(config.data)
  again = commands.build(config.data)  # A second build reuses the files.
  assert again["already_built"]


@pytest.mark.parametrize("split, indices", [("train", [0, 17, 39]), ("heldout", [3])])
def test_records_equal_the_rendered_clips(built, split, indices):
  config, _ = built
  w = config.data.world
  source = datasets.open_source(config.data, split)
  for i in indices:
    record = source[i]
    clip = world.generate_clip(split, i, seed=w.seed, height=w.height, width=w.width,
                               frames=w.frames, fps=w.fps)
    assert int(record["index"]) == i  # Record i is clip i.
    np.testing.assert_array_equal(record["video"], clip["video"])  # Lossless.
    assert json.loads(datasets.as_text(record["captions"])) == list(clip["captions"])
    assert json.loads(datasets.as_text(record["metadata"])) == json.loads(
        json.dumps(clip["metadata"]))
    assert float(record["fps"]) == w.fps


def test_different_settings_build_a_different_dataset(built, tmp_path):
  config, _ = built
  other = tiny_shapes_config(config.data.data_dir, seed=1)
  assert datasets.dataset_root(other.data) != datasets.dataset_root(config.data)
  assert not datasets.is_built(other.data)


def test_cli_build_tokenizer_show(tmp_path, capsys):
  args = ["--config=configs/data_shapes.py:tiny", f"--config.data.data_dir={tmp_path}",
          "--config.data.world.train_size=12", "--config.data.world.validation_size=2",
          "--config.data.world.test_size=2", "--config.data.world.heldout_size=2",
          "--config.data.tokenizer.vocab_size=100"]
  assert main.main(["data", "build", *args]) == 0
  assert "train       12 clips" in capsys.readouterr().out
  assert main.main(["data", "tokenizer", *args]) == 0
  out = capsys.readouterr().out
  assert "tokenizer:" in out and os.path.isfile(out.strip().split("-> ")[-1])
  sheet = tmp_path / "sheet.png"
  assert main.main(["data", "show", *args, f"--out={sheet}", "--clips=3"]) == 0
  out = capsys.readouterr().out
  assert "heldout     2 clips" in out and sheet.is_file()
  from PIL import Image
  with Image.open(sheet) as image:
    assert image.size[1] >= 3 * 72  # One row (at least a frame high) per clip.
    pixels = np.asarray(image)
  assert (pixels[:, :64] != 255).any(axis=-1).mean() > 0.5  # Frames drawn, not blank.
  code = main.main(["data", "show", "--config=configs/data_shapes.py:tiny",
                    f"--config.data.data_dir={tmp_path / 'empty'}"])
  assert code != 0 and "dataset not built" in capsys.readouterr().err

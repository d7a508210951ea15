"""The bundle shipped in the package (vidgen/bundles/default, docs/bundle.md): the default
recipe's result, which `vidgen sample` uses when no --bundle is given."""
import os

import numpy as np
import pytest
from PIL import Image

from vidgen import config as config_lib
from vidgen import export
from vidgen import run
from vidgen import sample
from vidgen.evaluate import oracle
from vidgen.world import palette
from vidgen.main import main as vidgen_main
from vidgen.models import dit as dit_lib


@pytest.fixture(scope="module")
def default_config():
  return run.resolve(config_lib.load(run.default_config_path()), "/tmp/w")


def test_shipped_bundle_is_whole_small_and_of_the_default_recipe(default_config):
  bundle = export.read_bundle(sample.SHIPPED_BUNDLE)  # Checks every file's sha256.
  assert sum(f["bytes"] for f in bundle.manifest["files"].values()) < 20 * 2**20
  # When the default recipe changes, the shipped bundle must be made again (docs/bundle.md).
  c, w = default_config, default_config.data.world
  p = bundle.pipeline
  assert (p["latent"], p["frames"], p["height"], p["width"], p["fps"], p["text_max_len"]) == (
      "vae", w.frames, w.height, w.width, w.fps, c.data.tokenizer.max_len)
  dit, m = bundle.configs["dit"], c.t2v.model
  assert (tuple(dit["patch"]), dit["depth"], dit["width"]) == (
      tuple(m.patch), m.depth, m.width or dit_lib.VARIANTS[m.variant]["width"])
  assert bundle.manifest["dtype"] == "f32"


def test_vidgen_sample_without_bundle_uses_the_shipped_one(tmp_path, capsys):
  out = tmp_path / "red.gif"
  rc = vidgen_main(["sample", "--prompt=a large red square on a black background",
                    "--mode=text_to_image", "--devices=1", "--steps=8", "--no-progress",
                    f"--out={out}"])
  assert rc == 0, capsys.readouterr().err
  image = np.asarray(Image.open(out).convert("RGB"))
  assert image.shape == (32, 32, 3)
  # A trained model, not noise: the background is black and the object is red.
  labels = oracle.snap(image[None])[0]
  names = np.array(palette.PALETTE_NAMES)[labels]
  assert (names == "black").mean() > 0.5 and (names == "red").sum() >= 9


def test_missing_shipped_bundle_is_named(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(sample, "SHIPPED_BUNDLE", str(tmp_path / "bundles" / "default"))
  rc = vidgen_main(["sample", "--prompt=a red circle", f"--out={tmp_path / 'x.gif'}"])
  err = capsys.readouterr().err
  assert rc == 2 and "no shipped bundle" in err and "--bundle=DIR" in err
  assert not os.path.exists(tmp_path / "x.gif")

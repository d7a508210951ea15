"""benchmarks/peer_step.py's shape matching, without torch: the Wan 2.1 configuration derived
from a DiT variant has the same width, depth, heads, MLP, patch, channels and text width."""
import importlib.util
import os
import sys

import pytest

from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "peer_step.py")


@pytest.fixture(scope="module")
def peer_step():
  had_torch = "torch" in sys.modules
  spec = importlib.util.spec_from_file_location("peer_step", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  # Importing the script (and deriving configs) must not need torch.
  assert had_torch or "torch" not in sys.modules
  return module


@pytest.mark.parametrize("variant", ["tiny", "30M", "130M", "14B"])
def test_wan_config_matches_the_variant(peer_step, variant):
  spec = dit_lib.VARIANTS[variant]
  cfg = peer_step.wan_config(variant, latent_channels=16)
  assert cfg["num_attention_heads"] == spec["num_heads"]
  assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == spec["width"]
  assert cfg["num_layers"] == spec["depth"]
  assert cfg["ffn_dim"] == round(spec["width"] * spec["mlp_ratio"])
  assert cfg["patch_size"] == tuple(spec["patch"])
  assert cfg["in_channels"] == cfg["out_channels"] == 16
  assert cfg["text_dim"] == text_lib.get_t5_config(spec["text"]).d_model
  assert cfg["freq_dim"] == 256 and cfg["qk_norm"] == "rms_norm_across_heads"
  assert cfg["image_dim"] is None and cfg["added_kv_proj_dim"] is None  # Text-to-video only.
  assert peer_step.wan_config(variant, 4, text_width=32)["text_dim"] == 32


def test_wan_14b_shape_is_wans(peer_step):
  """vidgen's 14B variant is Wan2.1-14B's shape: the derived config says so."""
  cfg = peer_step.wan_config("14B", 16)
  assert (cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["num_layers"],
          cfg["ffn_dim"], cfg["text_dim"]) == (40, 128, 40, 13824, 4096)


def test_shapes_and_tokens(peer_step):
  assert peer_step.parse_shape("30M:4x32x32") == ("30M", (4, 32, 32))
  assert peer_step.parse_shape("tiny") == ("tiny", (4, 16, 16))
  assert peer_step.tokens_per_sample("tiny", (4, 32, 32)) == 4 * 16 * 16
  with pytest.raises(ValueError):
    peer_step.parse_shape("nope:4x4x4")
  with pytest.raises(ValueError):
    peer_step.parse_shape("tiny:4x4")
  with pytest.raises(ValueError):
    peer_step.tokens_per_sample("tiny", (4, 15, 16))  # Not divisible by the 2x2 patch.

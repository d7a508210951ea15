"""The data config section: defaults valid, bad settings refused with clear messages."""
import pytest

from vidgen import config as config_loader
from vidgen.data import buckets
from vidgen.data import config as data_config
from vidgen.errors import VidgenError


def test_defaults_and_shipped_configs_are_valid():
  data_config.validate(data_config.get_config())
  for spec in ("configs/data_shapes.py", "configs/data_shapes.py:tiny"):
    data_config.validate(config_loader.load(spec).data, process_count=1)
  folder = config_loader.load("configs/data_folder.py", ["data.folder.path=/tmp/videos"])
  data_config.validate(folder.data, process_count=2)


@pytest.mark.parametrize("key, value, process_count, message", [
    ("dataset", "imagenet", 1, "data.dataset='imagenet' is unknown"),
    ("buckets", [(16, 32, 32)], 1, "must be (frames, height, width, batch_size)"),
    ("buckets", [(16, 0, 32, 8)], 1, "height must be a positive integer"),
    ("buckets", [(16, 32, 32, 6)], 4, "not divisible by the 4 JAX processes"),
    ("buckets", [], 1, "data.buckets is empty"),
    ("buckets", [(8, 16, 16, 4), (8, 16, 16, 8)], 1, "repeats a shape"),
    ("bucket_weights", [1.0, 2.0], 1, "bucket_weights has 2 entries for 1 buckets"),
    ("world.train_size", 0, 1, "data.world.train_size must be a positive integer"),
    ("world.height", 8, 1, "at least 16"),
    ("clip.resize", "squash", 1, "data.clip.resize='squash'"),
    ("clip.window", "end", 1, "data.clip.window='end'; choose one of center, start"),
    ("clip.frame_stride", 0, 1, "frame_stride must be a positive integer"),
    ("tokenizer.max_len", -1, 1, "max_len must be a positive integer"),
])
def test_bad_configs_are_refused(key, value, process_count, message):
  data = data_config.get_config()
  node, leaf = data, key
  if "." in key:
    group, leaf = key.split(".")
    node = data[group]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(VidgenError, match="bad data config") as e:
    data_config.validate(data, process_count=process_count)
  assert message in str(e.value)


def test_folder_dataset_needs_a_path():
  data = data_config.get_config()
  data.dataset = "video_folder"
  with pytest.raises(VidgenError, match="needs data.folder.path"):
    data_config.validate(data)


def test_cli_refuses_bad_data_config(capsys):
  from vidgen import main
  code = main.main(["data", "build", "--config=configs/data_shapes.py",
                    "--config.data.dataset=nope"])
  assert code != 0 and "data.dataset='nope' is unknown" in capsys.readouterr().err


def test_balanced_batch_sizes_equalise_tokens():
  shapes = [(16, 32, 32), (8, 64, 64), (1, 64, 64)]
  sizes = buckets.balanced_batch_sizes(shapes, tokens_per_batch=16 * 32 * 32 * 8, multiple=2)
  assert sizes == [8, 4, 32]
  tokens = [t * h * w * b for (t, h, w), b in zip(shapes, sizes)]
  assert max(tokens) == min(tokens)

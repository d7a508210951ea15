"""Your own videos: a folder of mp4/webm/mov/gif files and images with captions.

Captions: a sidecar NAME.txt beside each file (one caption per line) or one captions.jsonl
with {"file": "clip.mp4", "caption": "..."} lines.

  vidgen data build --config=configs/data_folder.py --config.data.folder.path=/path/to/videos
  vidgen data show --config=configs/data_folder.py --config.data.folder.path=/path/to/videos
  vidgen data tokenizer --config=configs/data_folder.py --config.data.folder.path=/path/to/videos
"""
import ml_collections

from vidgen.data import config as data_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = data_config.get_config()
  data = config.data
  data.dataset = "video_folder"
  data.folder.path = ""
  data.folder.min_frames = 8
  data.folder.validation_fraction = 0.05
  data.clip.target_fps = 8.0        # Real videos come at many rates; sample at 8 fps.
  data.clip.resize = "crop"
  # Square, landscape and portrait buckets for 16-frame clips, plus images (one frame);
  # batch sizes keep about 16*64*64*8 pixels per batch.
  data.buckets = [(16, 64, 64, 8), (16, 48, 80, 8), (16, 80, 48, 8), (1, 64, 64, 128)]
  data.bucket_weights = [1.0, 1.0, 1.0, 1.0]
  data.tokenizer.vocab_size = 4096
  data.tokenizer.max_len = 64
  return config

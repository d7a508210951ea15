"""Video-folder dataset: bad files skipped and reported; good ones stored encoded, batched."""
import json
import os

import numpy as np
import pytest

from vidgen.data import commands, datasets, pipeline
from vidgen.data import config as data_config
from vidgen.errors import VidgenError
from test_data_helpers import write_media_folder


def folder_config(folder, data_dir, **overrides):
  import ml_collections
  config = ml_collections.ConfigDict({"data": data_config.get_config().to_dict()})
  data = config.data
  data.dataset, data.folder.path, data.data_dir = "video_folder", str(folder), str(data_dir)
  data.folder.min_frames = 8
  data.buckets = [(8, 16, 16, 2), (1, 16, 16, 4)]
  data.bucket_weights = [1.0, 1.0]
  data.tokenizer.vocab_size, data.tokenizer.max_len = 48, 16
  data.read_threads = 1
  for key, value in overrides.items():
    data[key] = value
  return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("folder")
  expected = write_media_folder(str(root / "media"))
  config = folder_config(root / "media", root / "data")
  summary = commands.build(config.data)
  return config, expected, summary


def test_bad_files_are_skipped_counted_and_reported(built, capsys):
  config, expected, summary = built
  report = summary["report"]
  bad = {name: outcome for name, outcome in expected.items() if outcome != "ok"}
  assert report["skipped_count"] == len(bad) == 4
  reasons = {s["file"]: s["reason"] for s in report["skipped"]}
  assert set(reasons) == set(bad)
  for name, outcome in bad.items():
    assert reasons[name].startswith(outcome), (name, reasons[name])
  assert summary["splits"] == {"train": 6}
  with open(summary["report_path"]) as f:  # Saved beside the dataset.
    assert json.load(f) == report


def test_clips_are_stored_encoded_with_their_captions(built):
  config, expected, _ = built
  source = datasets.open_source(config.data, "train")
  records = {datasets.as_text(source[i]["file"]): source[i] for i in range(len(source))}
  assert set(records) == {n for n, o in expected.items() if o == "ok"}
  media = config.data.folder.path
  for name, record in records.items():
    with open(os.path.join(media, name), "rb") as f:
      assert record["video"] == f.read()  # The original bytes, not raw frames.
  assert json.loads(records["loop.gif"]["captions"]) == ["a looping gif", "gif loop"]
  assert json.loads(records["wide.mp4"]["captions"]) == ["a wide clip"]
  assert (int(records["wide.mp4"]["frames"]), int(records["wide.mp4"]["width"])) == (12, 48)
  assert datasets.as_text(records["still.png"]["kind"]) == "image"


def test_batches_hold_one_bucket_shape_and_images_are_one_frame(built):
  config, _, _ = built
  commands.train_tokenizer(config.data)
  loader = pipeline.make_loader(config, "train", training=True, process_index=0,
                                process_count=1)
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  seen = set()
  for step in range(2 * loader.batches_per_epoch):
    batch = next(it)
    _, bucket, indices, _ = loader.local_part(step)
    frames, height, width, size = config.data.buckets[bucket]
    assert batch["video"].shape == (size, frames, height, width, 3)
    assert batch["video"].dtype == np.uint8 and batch["fps"].dtype == np.float32
    assert batch["tokens"].shape == (size, 16) and batch["tokens"].dtype == np.int32
    assert batch["text_mask"].dtype == bool and batch["text_mask"][:, 0].all()
    seen.add(bucket)
  ids = pipeline._bucket_ids(config.data, "train")
  source = datasets.open_source(config.data, "train")
  for i, b in enumerate(ids):  # The image only ever lands in the one-frame bucket.
    if datasets.as_text(source[i]["kind"]) == "image":
      assert config.data.buckets[b][0] == 1
  assert seen <= {0, 1} and len(seen) >= 1


def test_folder_with_nothing_usable_fails_with_report(tmp_path, capsys):
  media = tmp_path / "media"
  media.mkdir()
  (media / "a.mp4").write_bytes(b"not a video at all" * 20)
  (media / "a.txt").write_text("caption\n")
  (media / "b.png").write_bytes(b"\x89PNG broken")
  from vidgen import main
  code = main.main(["data", "build", "--config=configs/data_folder.py",
                    f"--config.data.folder.path={media}",
                    f"--config.data.data_dir={tmp_path / 'data'}"])
  out, err = capsys.readouterr()
  assert code != 0
  assert "no usable video or image" in err
  assert "a.mp4: cannot decode" in out and "b.png: no caption" in out
  with pytest.raises(VidgenError, match="not a folder"):
    datasets.build(folder_config(tmp_path / "missing", tmp_path / "data").data)


def test_target_fps_sets_stride_and_reported_fps(built):
  config, _, _ = built
  config = config.copy_and_resolve_references()
  config.data.clip.target_fps = 8.0
  config.data.buckets = [(4, 16, 16, 1)]
  config.data.bucket_weights = []
  commands.train_tokenizer(config.data)
  loader = pipeline.make_loader(config, "train", training=False, process_index=0,
                                process_count=1)
  source = datasets.open_source(config.data, "train")
  batches = list(pipeline.make_eval_iterator(config, process_index=0, process_count=1,
                                             split="train"))
  assert len(batches) == 5  # The image cannot fill a 4-frame bucket; the 5 videos can.
  for k, batch in enumerate(batches):
    index = int(loader.local_part(k)[2][0])
    src_fps = float(source[index]["fps"])
    assert batch["fps"][0] == pytest.approx(src_fps / max(1, round(src_fps / 8.0)))
    assert batch["video"].shape == (1, 4, 16, 16, 3)
  with pytest.raises(VidgenError, match="split 'validation' not in"):
    pipeline.make_eval_iterator(config, process_index=0, process_count=1)

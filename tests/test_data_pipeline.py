"""The grain pipeline on a tiny Shapes World: shapes, contents, process sharding, resume."""
import json

import numpy as np
import pytest

from vidgen.data import commands, datasets, pipeline
from vidgen.data.tokenizer import Tokenizer
from vidgen.data import config as data_config
from test_data_helpers import tiny_shapes_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  config = tiny_shapes_config(str(tmp_path_factory.mktemp("pipeline")))
  commands.build(config.data)
  commands.train_tokenizer(config.data)
  return config


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batches_match_buckets_and_source_clips(config):
  data = config.data
  loader = pipeline.make_loader(config, "train", training=True, process_index=0,
                                process_count=1)
  source = datasets.open_source(data, "train")
  tokenizer = Tokenizer(data_config.tokenizer_path(data))
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  buckets_seen = set()
  for step in range(loader.batches_per_epoch + 2):  # Into the second epoch.
    batch = next(it)
    _, bucket, indices, _ = loader.local_part(step)
    frames, height, width, size = data.buckets[bucket]
    buckets_seen.add(bucket)
    assert batch["video"].shape == (size, frames, height, width, 3)
    assert batch["video"].dtype == np.uint8
    assert batch["tokens"].shape == batch["text_mask"].shape == (size, data.tokenizer.max_len)
    assert batch["tokens"].dtype == np.int32 and batch["text_mask"].dtype == bool
    assert batch["fps"].shape == (size,) and batch["fps"].dtype == np.float32
    np.testing.assert_array_equal(batch["text_mask"], batch["tokens"] != 0)
    texts = tokenizer.decode(batch["tokens"])
    for k, index in enumerate(indices):
      clip = np.asarray(source[int(index)]["video"])
      if frames == clip.shape[0]:  # Same shape as stored: the clip itself.
        np.testing.assert_array_equal(batch["video"][k], clip)
      else:  # An image taken from the clip: one of its frames.
        assert any(np.array_equal(batch["video"][k, 0], f) for f in clip)
      captions = json.loads(datasets.as_text(source[int(index)]["captions"]))
      truncated = batch["text_mask"][k].all()  # max_len cuts long captions.
      assert any(c.lower().startswith(texts[k].lower()) if truncated
                 else c.lower() == texts[k].lower() for c in captions), texts[k]
  assert buckets_seen == {0, 1}
  np.testing.assert_allclose(batch["fps"], data.world.fps)


def test_two_processes_cover_the_epoch_exactly_once(config):
  parts = [pipeline.make_loader(config, "train", training=True, process_index=p,
                                process_count=2) for p in (0, 1)]
  n = parts[0].batches_per_epoch
  assert n == parts[1].batches_per_epoch
  seen = [np.concatenate([loader.local_part(k)[2] for k in range(n)]) for loader in parts]
  assert not set(seen[0]) & set(seen[1])  # Disjoint.
  ids = pipeline._bucket_ids(config.data, "train")
  union = set(seen[0]) | set(seen[1])
  assert len(union) == len(seen[0]) + len(seen[1])  # Nothing twice.
  for bucket, (*_, size) in enumerate(config.data.buckets):  # Only partial batches left out.
    left = sum(1 for i in range(len(ids)) if ids[i] == bucket and i not in union)
    assert left < size
  for k in range(n):  # Lockstep: same bucket at every step, half the global batch each.
    assert parts[0].local_part(k)[1] == parts[1].local_part(k)[1]
  it0 = pipeline.make_train_iterator(config, process_index=0, process_count=2)
  it1 = pipeline.make_train_iterator(config, process_index=1, process_count=2)
  single = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  for _ in range(3):  # The two halves are exactly the single-process batch.
    a, b, whole = next(it0), next(it1), next(single)
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[key])
  # Eval: finite, unshuffled, and the valid clips of both processes are the split, once.
  valid = []
  for p in (0, 1):
    for batch in pipeline.make_eval_iterator(config, process_index=p, process_count=2):
      valid.append(batch["valid"].sum())
      assert batch["video"].shape[0] in (2, 4)
  assert sum(valid) == 12


def test_resume_gives_identical_next_batches(config):
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  per_epoch = pipeline.train_batches_per_epoch(config)
  take(it, per_epoch - 2)
  state = it.get_state()
  expected = take(it, 5)  # Crosses into the next epoch (a fresh shuffle).
  restored = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  restored.set_state(state)
  assert_same_batches(take(restored, 5), expected)
  fresh = take(pipeline.make_train_iterator(config, process_index=0, process_count=1), 5)
  assert any(not np.array_equal(a["video"], b["video"]) for a, b in zip(fresh, expected))


def test_worker_processes_give_the_same_stream_and_restore(config):
  workers = config.copy_and_resolve_references()
  workers.data.worker_count = 1
  reference = take(pipeline.make_train_iterator(config, process_index=0, process_count=1), 6)
  it = pipeline.make_train_iterator(workers, process_index=0, process_count=1)
  try:
    assert_same_batches(take(it, 3), reference[:3])
    state = it.get_state()
  finally:
    del it
  restored = pipeline.make_train_iterator(workers, process_index=0, process_count=1)
  try:
    restored.set_state(state)
    assert_same_batches(take(restored, 3), reference[3:])
  finally:
    del restored


def test_orbax_checkpoint_of_the_iterator(config, tmp_path):
  import grain
  import orbax.checkpoint as ocp
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  take(it, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = take(it, 2)
    restored = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  assert_same_batches(take(restored, 2), expected)


def test_missing_tokenizer_or_dataset_fails_before_iterating(config, tmp_path):
  from vidgen.errors import VidgenError
  no_tokenizer = config.copy_and_resolve_references()
  no_tokenizer.data.tokenizer.path = str(tmp_path / "none.model")
  with pytest.raises(VidgenError, match="run `vidgen data tokenizer"):
    pipeline.make_train_iterator(no_tokenizer, process_index=0, process_count=1)
  unbuilt = config.copy_and_resolve_references()
  unbuilt.data.data_dir = str(tmp_path)
  unbuilt.data.tokenizer.path = data_config.tokenizer_path(config.data)
  with pytest.raises(VidgenError, match="dataset not built"):
    pipeline.make_eval_iterator(unbuilt, process_index=0, process_count=1)
  with pytest.raises(VidgenError, match="not divisible by the 3 JAX processes"):
    pipeline.make_train_iterator(config, process_index=0, process_count=3)

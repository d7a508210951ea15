"""Bucket assignment and per-epoch batch plans (pure numpy, no dataset needed)."""
import numpy as np

from vidgen.data import buckets

BUCKETS = [(16, 32, 32, 4), (16, 32, 48, 4), (8, 32, 32, 8), (1, 32, 32, 16)]


def test_assignment_respects_length_aspect_and_images():
  table = np.array([
      [1, 40, 40, 1],      # image -> only the one-frame bucket
      [20, 64, 96, 8],     # 3:2 video, long enough -> the 3:2 bucket
      [10, 32, 32, 8],     # square, too short for 16 frames -> 8-frame or image bucket
      [40, 32, 32, 24],    # target_fps 8 -> stride 3 -> 14 frames: not 16
      [4, 32, 32, 8],      # too short for every video bucket -> the image bucket
  ], np.float64)
  ids = buckets.assign_buckets(table, BUCKETS, stride=1, target_fps=8.0, seed=0)
  assert ids[0] == 3 and ids[1] == 1 and ids[2] in (2, 3) and ids[3] in (2, 3)
  assert ids[4] == 3
  no_images = buckets.assign_buckets(table, BUCKETS[:3], target_fps=8.0)
  assert no_images[0] == -1 and no_images[4] == -1  # Nowhere to go: left out.


def test_weights_steer_the_draw():
  table = np.tile([[16, 32, 32, 8]], (4000, 1)).astype(np.float64)
  ids = buckets.assign_buckets(table, [(16, 32, 32, 4), (8, 32, 32, 8)], weights=[3, 1])
  assert abs((ids == 0).mean() - 0.75) < 0.03
  again = buckets.assign_buckets(table, [(16, 32, 32, 4), (8, 32, 32, 8)], weights=[3, 1])
  np.testing.assert_array_equal(ids, again)  # Fixed per clip: same every call.


def test_epoch_plan_one_bucket_per_batch_and_full_coverage():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 3, 103).astype(np.int32)
  sizes = [4, 8, 2]
  plan = buckets.plan_epoch(ids, sizes, seed=1, epoch=0, shuffle=True, drop_remainder=True)
  assert len(plan) == buckets.batches_per_epoch(ids, sizes)
  used = np.concatenate([b.indices for b in plan])
  assert len(set(used.tolist())) == len(used)  # Each clip at most once per epoch.
  for b in plan:
    assert len(b.indices) == sizes[b.bucket] and (ids[b.indices] == b.bucket).all()
  dropped = set(range(103)) - set(used.tolist())
  for bucket, size in enumerate(sizes):  # Only a partial batch per bucket is dropped.
    assert sum(ids[i] == bucket for i in dropped) < size
  other = buckets.plan_epoch(ids, sizes, seed=1, epoch=1, shuffle=True, drop_remainder=True)
  assert [b.indices.tolist() for b in plan] != [b.indices.tolist() for b in other]
  full = buckets.plan_epoch(ids, sizes, seed=1, epoch=0, shuffle=False, drop_remainder=False)
  real = np.concatenate([b.indices[b.valid] for b in full])
  assert sorted(real.tolist()) == list(range(103))  # Eval: every clip exactly once.


def test_sample_clip_stride_target_fps_and_windows():
  from vidgen.data import config as data_config
  from vidgen.data.pipeline import sample_clip
  clip = data_config.get_config().clip
  video = np.zeros((20, 8, 8, 3), np.uint8)
  video[:, :, :, 0] = np.arange(20)[:, None, None]  # Frame number in the red channel.
  clip.frame_stride = 2
  out, fps = sample_clip(video, 24.0, (5, 8, 8), clip, rng=None)
  assert fps == 12.0 and out[:, 0, 0, 0].tolist() == [5, 7, 9, 11, 13]  # Centered window.
  clip.window = "start"
  out, _ = sample_clip(video, 24.0, (5, 8, 8), clip, rng=None)
  assert out[:, 0, 0, 0].tolist() == [0, 2, 4, 6, 8]  # From the first frame.
  assert sample_clip(video, 24.0, (1, 8, 8), clip, rng=None)[0][0, 0, 0, 0] == 0
  clip.window = "center"
  clip.target_fps = 8.0  # 24 fps source -> stride 3, overriding frame_stride.
  out, fps = sample_clip(video, 24.0, (4, 8, 8), clip, rng=None)
  assert fps == 8.0 and np.diff(out[:, 0, 0, 0].astype(int)).tolist() == [3, 3, 3]
  starts = {int(sample_clip(video, 24.0, (4, 8, 8), clip, np.random.default_rng(s))[0][0, 0, 0, 0])
            for s in range(40)}
  assert starts == set(range(0, 20 - 9))  # Random windows: every valid start, none outside.
  with np.testing.assert_raises(ValueError):
    sample_clip(video, 24.0, (8, 8, 8), clip, rng=None)  # Needs 22 frames.

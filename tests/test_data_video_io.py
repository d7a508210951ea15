"""Video I/O: encode/decode round trips, corrupt bytes, resize and crop policies."""
import numpy as np
import pytest

from vidgen.data import video_io
from test_data_helpers import random_video


def test_png_and_gif_round_trip_exactly():
  rng = np.random.default_rng(0)
  image = random_video(rng, 1, 16, 24)[0]
  np.testing.assert_array_equal(video_io.decode_image(video_io.encode_png(image))[0], image)
  video = np.zeros((5, 16, 16, 3), np.uint8)
  video[:, :8] = [255, 0, 0]  # Few colors: the gif palette holds them exactly.
  for t in range(5):
    video[t, 8:, t * 2:t * 2 + 4] = [0, 0, 255]
  decoded, fps = video_io.decode_video(video_io.encode_gif(video, 10))
  np.testing.assert_array_equal(decoded, video)
  assert fps == pytest.approx(10, rel=0.05)


def test_mp4_round_trip_is_close_and_keeps_length_and_rate():
  video = random_video(np.random.default_rng(1), 12, 32, 48)
  decoded, fps = video_io.decode_video(video_io.encode_mp4(video, 8))
  assert decoded.shape == video.shape and fps == pytest.approx(8)
  assert np.abs(decoded.astype(int) - video).mean() < 8
  first4, _ = video_io.decode_video(video_io.encode_mp4(video, 8), max_frames=4)
  assert first4.shape[0] == 4


def test_corrupt_bytes_raise_decode_error():
  with pytest.raises(video_io.DecodeError):
    video_io.decode_video(b"definitely not a video" * 10)
  with pytest.raises(video_io.DecodeError):
    video_io.decode_image(b"\x89PNG\r\n\x1a\n broken")


@pytest.mark.parametrize("policy", ["crop", "pad", "stretch"])
def test_fit_frames_policies(policy):
  video = np.zeros((2, 20, 40, 3), np.uint8)
  video[:, :, :20] = 200  # Left half bright, right half dark.
  out = video_io.fit_frames(video, 16, 16, policy=policy, method="nearest")
  assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
  if policy == "crop":  # Centered square window: half bright, half dark.
    assert out[0, :, :8].min() == 200 and out[0, :, 8:].max() == 0
  if policy == "pad":  # Fit inside: black bars above and below.
    assert out[0, :4].max() == 0 and out[0, 4:12, :8].min() == 200
  left = video_io.fit_frames(video, 16, 16, policy="crop", method="nearest", offset=(0.5, 0.0))
  assert left[0].min() == 200  # Offset 0 picks the left (bright) edge.


@pytest.mark.parametrize("method, pil", [("bilinear", "BILINEAR"), ("area", "BOX"),
                                         ("bicubic", "BICUBIC")])
@pytest.mark.parametrize("size", [(16, 12), (50, 35), (9, 40)])
def test_resize_matches_pillow(method, pil, size):
  from PIL import Image
  video = np.random.default_rng(2).integers(0, 255, (3, 32, 24, 3), dtype=np.uint8)
  ours = video_io.resize_frames(video, *size, method=method).astype(int)
  theirs = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], getattr(Image, pil)))
                     for f in video]).astype(int)
  assert ours.shape == theirs.shape == (3, *size, 3)
  assert np.abs(ours - theirs).mean() < 0.6 and np.percentile(np.abs(ours - theirs), 99) <= 2

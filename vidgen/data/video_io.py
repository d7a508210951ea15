"""Video and image I/O on bytes: decode (PyAV, Pillow), encode (mp4, gif, png), resize.

Everything works on in-memory bytes so the same functions serve the dataset builders
(probe a file, keep its bytes) and the grain pipeline (decode stored bytes).
"""
from __future__ import annotations

import dataclasses
import functools
import io
from typing import Sequence

import av
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".gif", ".mkv", ".avi")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DecodeError(ValueError):
  """Bytes that are not a readable video or image."""


@dataclasses.dataclass(frozen=True)
class Probe:
  """What a decoded file holds: frame count, size and frame rate."""
  frames: int
  height: int
  width: int
  fps: float


def kind_of(filename: str) -> str | None:
  """'video', 'image' or None from a file name's extension."""
  lower = filename.lower()
  if lower.endswith(VIDEO_EXTENSIONS):
    return "video"
  if lower.endswith(IMAGE_EXTENSIONS):
    return "image"
  return None


def decode_image(data: bytes) -> np.ndarray:
  """PNG/JPEG/... bytes -> uint8 [1, H, W, 3]."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image.convert("RGB"), dtype=np.uint8)[None]
  except Exception as e:  # Pillow raises many types for bad data.
    raise DecodeError(f"not a readable image: {e}") from e


def _decode_gif(data: bytes, max_frames: int | None) -> tuple[np.ndarray, float]:
  with Image.open(io.BytesIO(data)) as image:
    frames, durations = [], []
    for k in range(getattr(image, "n_frames", 1)):
      if max_frames is not None and k >= max_frames:
        break
      image.seek(k)
      frames.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
      durations.append(image.info.get("duration", 100) or 100)
  fps = 1000.0 / float(np.mean(durations)) if durations else 10.0
  return np.stack(frames), fps


def decode_video(data: bytes, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Video bytes (mp4, webm, mov, gif, ...) -> (uint8 [T, H, W, 3], fps).

  Decodes at most `max_frames` frames (all when None). Raises DecodeError on bad data.
  """
  if data[:6] in (b"GIF87a", b"GIF89a"):
    try:
      return _decode_gif(data, max_frames)
    except Exception as e:
      raise DecodeError(f"not a readable gif: {e}") from e
  frames = []
  try:
    with av.open(io.BytesIO(data), mode="r") as container:
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      fps = float(rate) if rate else 0.0
      for frame in container.decode(stream):
        frames.append(frame.to_ndarray(format="rgb24"))
        if max_frames is not None and len(frames) >= max_frames:
          break
  except (av.error.FFmpegError, IndexError, ValueError, OSError) as e:
    raise DecodeError(f"not a readable video: {e}") from e
  if not frames:
    raise DecodeError("video has no decodable frames")
  return np.stack(frames).astype(np.uint8), (fps if fps > 0 else 24.0)


def decode(data: bytes, kind: str, max_frames: int | None = None) -> tuple[np.ndarray, float]:
  """Bytes of a 'video' or an 'image' -> (uint8 [T, H, W, 3], fps); images have T = 1."""
  if kind == "image":
    return decode_image(data), 1.0
  return decode_video(data, max_frames)


def probe(data: bytes, kind: str) -> Probe:
  """Decodes fully and reports frames, size and fps (raises DecodeError)."""
  video, fps = decode(data, kind)
  return Probe(frames=int(video.shape[0]), height=int(video.shape[1]),
               width=int(video.shape[2]), fps=float(fps))


def encode_video(video: np.ndarray, fps: float, *, container: str = "mp4",
                 codec: str = "libx264", crf: int = 18) -> bytes:
  """uint8 [T, H, W, 3] (H, W even) -> encoded bytes (mp4/mov + libx264, webm + libvpx-vp9)."""
  buffer = io.BytesIO()
  with av.open(buffer, mode="w", format=container) as output:
    stream = output.add_stream(codec, rate=int(round(fps)))
    stream.height, stream.width = int(video.shape[1]), int(video.shape[2])
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
      stream.options = {"crf": str(crf)}
    for frame in video:
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                             format="rgb24")):
        output.mux(packet)
    for packet in stream.encode():
      output.mux(packet)
  return buffer.getvalue()


def encode_mp4(video: np.ndarray, fps: float, *, crf: int = 18) -> bytes:
  """uint8 [T, H, W, 3] -> H.264 mp4 bytes."""
  return encode_video(video, fps, container="mp4", codec="libx264", crf=crf)


def encode_gif(video: np.ndarray, fps: float) -> bytes:
  """uint8 [T, H, W, 3] -> animated gif bytes."""
  images = [Image.fromarray(frame) for frame in video]
  buffer = io.BytesIO()
  images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                 duration=int(round(1000 / fps)), loop=0)
  return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W, 3] -> png bytes."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def _filter(method: str):
  """(kernel, support) of a resampling filter, as Pillow defines them."""
  if method == "area":
    return (lambda x: ((x > -0.5) & (x <= 0.5)).astype(np.float64)), 0.5
  if method == "bilinear":
    return (lambda x: np.maximum(0.0, 1.0 - np.abs(x))), 1.0
  if method == "bicubic":
    def cubic(x, a=-0.5):
      x = np.abs(x)
      return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                      np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))
    return cubic, 2.0
  raise ValueError(f"unknown resize method {method!r}")


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int, method: str) -> np.ndarray:
  """float32 [out, in] resampling matrix (antialiased when shrinking, like Pillow)."""
  scale = in_size / out_size
  centers = (np.arange(out_size) + 0.5) * scale
  if method == "nearest":
    weights = np.zeros((out_size, in_size), np.float32)
    weights[np.arange(out_size), np.minimum(centers.astype(int), in_size - 1)] = 1
    return weights
  kernel, support = _filter(method)
  stretch = max(scale, 1.0)
  taps = (np.arange(in_size) + 0.5)[None, :] - centers[:, None]
  weights = kernel(taps / stretch) * (np.abs(taps) <= support * stretch)
  weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
  return weights.astype(np.float32)


def resize_frames(video: np.ndarray, height: int, width: int,
                  method: str = "bilinear") -> np.ndarray:
  """Resizes every frame of uint8 [T, H, W, 3] to [T, height, width, 3].

  Separable resampling matrices applied to all frames at once (numpy), about the
  filters Pillow uses; "nearest" picks pixels exactly.
  """
  if video.shape[1:3] == (height, width):
    return video
  wy = resize_weights(video.shape[1], height, method)
  wx = resize_weights(video.shape[2], width, method)
  if method == "nearest":
    return video[:, wy.argmax(axis=1)][:, :, wx.argmax(axis=1)]
  t, h, w, c = video.shape
  rows = wy @ video.astype(np.float32).reshape(t, h, w * c)           # [T, height, W*C]
  rows = rows.reshape(t, height, w, c).transpose(0, 1, 3, 2)           # [T, height, C, W]
  out = (rows @ wx.T).transpose(0, 1, 3, 2)                            # [T, height, width, C]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fit_frames(video: np.ndarray, height: int, width: int, *, policy: str, method: str,
               offset: Sequence[float] = (0.5, 0.5)) -> np.ndarray:
  """Resizes [T, H, W, 3] to [T, height, width, 3] by a policy.

  crop: scale to cover, then crop (offset in [0, 1] picks the window, 0.5 = center);
  pad: scale to fit inside, then pad with black; stretch: resize, ignoring the aspect.
  """
  src_h, src_w = video.shape[1:3]
  if policy == "stretch" or (src_h, src_w) == (height, width):
    return resize_frames(video, height, width, method)
  if policy == "crop":
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    resized = resize_frames(video, new_h, new_w, method)
    top = int(round((new_h - height) * offset[0]))
    left = int(round((new_w - width) * offset[1]))
    return resized[:, top:top + height, left:left + width]
  if policy == "pad":
    scale = min(height / src_h, width / src_w)
    new_h, new_w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    resized = resize_frames(video, min(new_h, height), min(new_w, width), method)
    out = np.zeros((video.shape[0], height, width, 3), np.uint8)
    top, left = (height - resized.shape[1]) // 2, (width - resized.shape[2]) // 2
    out[:, top:top + resized.shape[1], left:left + resized.shape[2]] = resized
    return out
  raise ValueError(f"unknown resize policy {policy!r}")

"""Throughput and MFU, and the metric writers (TensorBoard, console, metrics.jsonl)."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, by substring of jax's device_kind (lower case).
PEAK_FLOPS = (
    ("v6 lite", 918e12), ("v6e", 918e12),
    ("v5p", 459e12), ("v5 lite", 197e12), ("v5e", 197e12),
    ("v4", 275e12), ("v3", 123e12),
    ("h200", 989e12), ("h100", 989e12), ("a100", 312e12), ("l4", 121e12),
)


def peak_flops(device: jax.Device | None = None) -> float | None:
  """The device's dense bf16 peak, or None when unknown (CPU)."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  for key, flops in PEAK_FLOPS:
    if key in kind:
      return flops
  return None


def mfu(flops_per_step: float, seconds_per_step: float, num_devices: int,
        peak: float | None) -> float | None:
  if not peak or not flops_per_step or seconds_per_step <= 0:
    return None
  return flops_per_step / seconds_per_step / (peak * num_devices)


class Throughput:
  """Steps/s and tokens/s over the window since the last `measure`."""

  def __init__(self, step: int):
    self.step, self.time, self.tokens = step, time.perf_counter(), 0.0

  def add_tokens(self, tokens: float) -> None:
    self.tokens += tokens

  def measure(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    dt, steps = now - self.time, step - self.step
    out = {}
    if steps > 0 and dt > 0:
      out = {"perf/steps_per_s": steps / dt, "perf/seconds_per_step": dt / steps}
      if self.tokens:
        out["perf/tokens_per_s"] = self.tokens / dt
    self.step, self.time, self.tokens = step, now, 0.0
    return out


class Writer:
  """Writes scalars to TensorBoard and metrics.jsonl on process 0 (no-op elsewhere)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.tb = None
    self.jsonl = None
    if enabled:
      from tensorboardX import SummaryWriter  # Imported here: only process 0 needs it.
      os.makedirs(workdir, exist_ok=True)
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items() if v is not None}
    for k, v in clean.items():
      self.tb.add_scalar(k, v, step)
    self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
    self.jsonl.flush()

  def videos(self, step: int, videos: Mapping[str, np.ndarray], max_frames: int = 8) -> None:
    """Logs each uint8 [T, H, W, 3] video as a strip of its first frames."""
    if not self.enabled:
      return
    for name, video in videos.items():
      video = np.asarray(video)
      if video.ndim == 3:
        video = video[None]
      strip = np.concatenate(list(video[:max_frames]), axis=1)
      self.tb.add_image(f"samples/{name}", strip, step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self.tb.close()
      self.jsonl.close()


def format_console(step: int, values: Mapping[str, Any]) -> str:
  keys = ("train/loss", "train/grad_norm", "train/lr", "perf/steps_per_s", "perf/mfu")
  parts = [f"{k.split('/')[-1]}={values[k]:.4g}" for k in keys if values.get(k) is not None]
  return f"step {step}: " + " ".join(parts)

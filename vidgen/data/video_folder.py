"""TFDS builder for a user's folder of videos (mp4, webm, mov, gif) and images.

Captions come from a sidecar `NAME.txt` beside each file (one caption per non-empty line)
or from one `captions.jsonl` (`{"file": "a.mp4", "caption": "..."}` or `"captions": [...]`).
Clips are stored encoded (the file's original bytes), never as raw frames. Files that
cannot be decoded, have no caption, or are too short are skipped and listed in a report;
one bad file never stops the build.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from vidgen.data import video_io
from vidgen.errors import VidgenError

CAPTIONS_FILE = "captions.jsonl"


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """Which folder, the shortest usable video, and the validation fraction."""
  path: str = ""
  min_frames: int = 8
  validation_fraction: float = 0.0


def make_config(path: str, *, min_frames: int, validation_fraction: float) -> VideoFolderConfig:
  """A config named after the folder and its settings."""
  path = os.path.abspath(os.path.expanduser(path))
  digest = hashlib.sha1(path.encode()).hexdigest()[:8]
  base = "".join(ch if ch.isalnum() else "_" for ch in os.path.basename(path))[:40] or "root"
  name = f"{base}_{digest}_min{min_frames}_val{int(round(validation_fraction * 1000))}"
  return VideoFolderConfig(name=name, version="1.0.0", path=path, min_frames=min_frames,
                           validation_fraction=float(validation_fraction))


def read_captions(folder: str) -> dict[str, list[str]]:
  """Captions per relative file path from captions.jsonl and .txt sidecars (merged)."""
  captions: dict[str, list[str]] = {}
  jsonl = os.path.join(folder, CAPTIONS_FILE)
  if os.path.isfile(jsonl):
    with open(jsonl, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          entry = json.loads(line)
          texts = entry.get("captions") or [entry["caption"]]
          captions.setdefault(os.path.normpath(entry["file"]), []).extend(
              str(t).strip() for t in texts if str(t).strip())
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
          print(f"warning: {jsonl}:{line_no} is not a {{'file', 'caption'}} line; ignored")
  for root, _, files in os.walk(folder):
    for name in files:
      if video_io.kind_of(name) is None:
        continue
      sidecar = os.path.join(root, os.path.splitext(name)[0] + ".txt")
      if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8", errors="replace") as f:
          lines = [line.strip() for line in f if line.strip()]
        rel = os.path.normpath(os.path.relpath(os.path.join(root, name), folder))
        captions.setdefault(rel, []).extend(lines)
  return captions


def list_media(folder: str) -> list[str]:
  """Relative paths of every video and image file under the folder, sorted."""
  found = []
  for root, _, files in os.walk(folder):
    for name in files:
      if video_io.kind_of(name) is not None:
        found.append(os.path.normpath(os.path.relpath(os.path.join(root, name), folder)))
  return sorted(found)


def split_of(rel_path: str, validation_fraction: float) -> str:
  """Stable split assignment by a hash of the file's path."""
  if validation_fraction <= 0:
    return "train"
  h = int(hashlib.sha1(rel_path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
  return "validation" if h < validation_fraction else "train"


def scan(config: VideoFolderConfig) -> tuple[dict[str, list[dict]], list[dict]]:
  """Probes every file: (usable examples per split, skipped files with reasons)."""
  folder = config.path
  if not os.path.isdir(folder):
    raise VidgenError(f"data.folder.path={folder!r} is not a folder")
  captions = read_captions(folder)
  usable: dict[str, list[dict]] = {"train": [], "validation": []}
  skipped: list[dict] = []
  for rel in list_media(folder):
    kind = video_io.kind_of(rel)
    texts = captions.get(rel, [])
    if not texts:
      skipped.append({"file": rel, "reason": "no caption (no .txt sidecar, not in "
                                             f"{CAPTIONS_FILE})"})
      continue
    try:
      with open(os.path.join(folder, rel), "rb") as f:
        data = f.read()
      probe = video_io.probe(data, kind)
    except (OSError, video_io.DecodeError) as e:
      skipped.append({"file": rel, "reason": f"cannot decode: {e}"})
      continue
    if kind == "video" and probe.frames < config.min_frames:
      skipped.append({"file": rel, "reason": f"too short: {probe.frames} frames < "
                                             f"min_frames {config.min_frames}"})
      continue
    usable[split_of(rel, config.validation_fraction)].append({
        "file": rel, "kind": kind, "captions": texts, "frames": probe.frames,
        "height": probe.height, "width": probe.width, "fps": probe.fps})
  return usable, skipped


class VidgenVideoFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A user's folder of captioned videos and images, stored encoded."""
  name = "vidgen_video_folder"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = VideoFolderConfig

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.report: dict | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="A folder of captioned videos and images (encoded bytes).",
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Scalar(dtype=np.object_),  # The file's bytes.
            "kind": tfds.features.Text(),        # "video" | "image"
            "file": tfds.features.Text(),
            "captions": tfds.features.Text(),    # JSON list
            "frames": tfds.features.Scalar(dtype=np.int32),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
            "fps": tfds.features.Scalar(dtype=np.float32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    usable, skipped = scan(self.builder_config)
    total = sum(len(v) for v in usable.values())
    self.report = {
        "folder": self.builder_config.path,
        "usable": {split: len(v) for split, v in usable.items()},
        "skipped_count": len(skipped),
        "skipped": skipped,
    }
    if total == 0:
      raise NothingUsable(self.report)
    return {split: self._generate_examples(entries)
            for split, entries in usable.items() if entries}

  def _generate_examples(self, entries: list[dict]):
    for entry in entries:
      with open(os.path.join(self.builder_config.path, entry["file"]), "rb") as f:
        data = f.read()
      yield entry["file"], {
          "video": data, "kind": entry["kind"], "file": entry["file"],
          "captions": json.dumps(entry["captions"]), "frames": entry["frames"],
          "height": entry["height"], "width": entry["width"], "fps": entry["fps"]}


class NothingUsable(VidgenError):
  """A folder build that found no usable file; carries the report."""

  def __init__(self, report: dict):
    self.report = report
    super().__init__(f"no usable video or image in {report['folder']}: "
                     f"{report['skipped_count']} files skipped (see the report above)")

"""`vidgen data build|show|tokenizer|cache --config=configs/X.py [--config.data.KEY=VALUE ...]`.

Works with any config that embeds the data section at `config.data`; `cache` needs a
text-to-video config (its `model` section names the autoencoder and text encoder).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import ml_collections
import numpy as np

from vidgen import config as config_loader
from vidgen.data import config as config_lib
from vidgen.data import datasets, video_io
from vidgen.errors import VidgenError

USAGE = """usage: vidgen data {build,show,tokenizer,cache} --config=configs/X.py[:ARG]
                   [--config.data.KEY=VALUE ...]

  build      build the dataset config.data names (shapes_world or video_folder), as TFDS ArrayRecord
  show       print split sizes; write a contact sheet PNG of a few clips with their captions
  tokenizer  train the caption tokenizer on the train split (stored next to the dataset)
  cache      (t2v config) encode every train/eval clip with the frozen autoencoder of
             config.model.vae.workdir and, with a frozen text encoder
             (config.model.text.checkpoint or text.frozen), embed every caption; stored
             next to the dataset for config.model.latent=cached and
             config.model.text.cached=True"""


def _parse(argv: list[str]) -> tuple[str, argparse.Namespace, ml_collections.ConfigDict]:
  rest, overrides = config_loader.split_overrides(argv)
  parser = argparse.ArgumentParser(prog="vidgen data", usage=USAGE[len("usage: "):])
  parser.add_argument("action", choices=("build", "show", "tokenizer", "cache"))
  parser.add_argument("--config", required=True)
  parser.add_argument("--out", default="", help="show: contact sheet path")
  parser.add_argument("--clips", type=int, default=6, help="show: clips on the sheet")
  parser.add_argument("--split", default="", help="show: split (default: the train split)")
  try:
    args = parser.parse_args(rest)
  except SystemExit as e:
    if e.code == 0:  # --help
      raise
    raise VidgenError(f"bad arguments for `vidgen data`\n{USAGE}") from e
  config = config_loader.load(args.config, overrides)
  if "data" not in config:
    raise VidgenError(f"{args.config} has no `data` section (config.data)")
  config_lib.validate(config.data)
  args.full_config = config
  return args.action, args, config.data


def format_report(report: dict) -> str:
  """The folder build report as text: usable counts and every skipped file with its reason."""
  lines = [f"folder: {report['folder']}",
           "usable: " + ", ".join(f"{k} {v}" for k, v in report["usable"].items()),
           f"skipped: {report['skipped_count']}"]
  lines += [f"  {s['file']}: {s['reason']}" for s in report["skipped"]]
  return "\n".join(lines)


def build(data: ml_collections.ConfigDict) -> dict:
  """Builds the dataset; prints split sizes and, for folders, the skip report."""
  from vidgen.data import video_folder
  start = time.time()
  try:
    summary = datasets.build(data)
  except video_folder.NothingUsable as e:
    print(format_report(e.report))
    raise
  if "report" in summary:
    print(format_report(summary["report"]))
    print(f"report saved to {summary['report_path']}")
  state = "already built" if summary["already_built"] else f"built in {time.time() - start:.1f}s"
  print(f"{data.dataset} {state} at {summary['path']}")
  for split, n in summary["splits"].items():
    print(f"  {split:<11} {n} clips")
  return summary


def all_captions(data: ml_collections.ConfigDict, split: str) -> list[str]:
  """Every caption of every clip in a split."""
  source = datasets.open_source(data, split)
  captions = []
  for i in range(len(source)):
    captions.extend(json.loads(datasets.as_text(source[i]["captions"])))
  return captions


def train_tokenizer(data: ml_collections.ConfigDict) -> str:
  """Trains the sentencepiece tokenizer on the train split's captions; returns its path."""
  from vidgen.data import tokenizer
  captions = all_captions(data, data.train_split)
  path = config_lib.tokenizer_path(data)
  tokenizer.train(captions, path, data.tokenizer.vocab_size)
  vocab = tokenizer.Tokenizer(path).vocab_size
  print(f"tokenizer: {vocab} pieces from {len(captions)} captions -> {path}")
  return path


def read_clip(data: ml_collections.ConfigDict, record: dict) -> tuple[np.ndarray, list[str]]:
  """A stored record -> (uint8 [T, H, W, 3], captions)."""
  captions = json.loads(datasets.as_text(record["captions"]))
  if data.dataset == "shapes_world":
    return np.asarray(record["video"]), captions
  video, _ = video_io.decode(record["video"], datasets.as_text(record["kind"]))
  return video, captions


def contact_sheet(clips: list[tuple[np.ndarray, list[str]]], *, frames: int = 8,
                  cell: int = 64) -> np.ndarray:
  """One row per clip: `frames` evenly spaced frames, then its first three captions (wrapped)."""
  import textwrap
  from PIL import Image, ImageDraw
  text_width, line_height = 560, 12
  rows = []
  for video, captions in clips:
    lines = []
    for caption in captions[:3]:
      lines += textwrap.wrap(caption, 90) or [""]
    height = max(cell + 8, len(lines) * line_height + 8)
    picks = np.linspace(0, video.shape[0] - 1, min(frames, video.shape[0])).round().astype(int)
    row = Image.new("RGB", (frames * cell + text_width, height), (255, 255, 255))
    for k, t in enumerate(picks):
      row.paste(Image.fromarray(video[t]).resize((cell, cell), Image.NEAREST), (k * cell, 4))
    draw = ImageDraw.Draw(row)
    for j, line in enumerate(lines):
      draw.text((frames * cell + 8, 4 + j * line_height), line, fill=(0, 0, 0))
    draw.line([(0, height - 1), (row.width, height - 1)], fill=(200, 200, 200))
    rows.append(np.asarray(row))
  return np.concatenate(rows, axis=0)


def show(data: ml_collections.ConfigDict, *, out: str = "", clips: int = 6,
         split: str = "") -> str:
  """Prints split sizes and writes a contact sheet; returns the sheet's path."""
  sizes = datasets.split_sizes(data)
  print(f"{data.dataset} at {datasets.make_builder(data).data_dir}")
  for name, n in sizes.items():
    print(f"  {name:<11} {n} clips")
  split = split or data.train_split
  source = datasets.open_source(data, split)
  picks = np.linspace(0, len(source) - 1, min(clips, len(source))).round().astype(int)
  chosen = [read_clip(data, source[int(i)]) for i in picks]
  sheet = contact_sheet(chosen)
  out = out or os.path.join(datasets.dataset_root(data), f"contact_sheet_{split}.png")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  from PIL import Image
  Image.fromarray(sheet).save(out)
  print(f"contact sheet of {len(chosen)} {split} clips: {out}")
  return out


def main(argv: list[str]) -> int:
  action, args, data = _parse(list(argv))
  if action == "build":
    build(data)
  elif action == "tokenizer":
    train_tokenizer(data)
  elif action == "cache":
    from vidgen.data import cache
    cache.write_cache(args.full_config)
  else:
    show(data, out=args.out, clips=args.clips, split=args.split)
  return 0

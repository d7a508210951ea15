"""`vidgen sample`: generate videos from an exported bundle, in any mode.

  vidgen sample --prompt="a red circle moves left" --out=out.gif   (the shipped bundle)
  vidgen sample --bundle=DIR --prompt="a red ball bounces" --out=out.mp4
  vidgen sample --bundle=DIR --mode=image_to_video --image=first.png --prompt=... --out=a.gif
  vidgen sample --bundle=DIR --prompts-file=prompts.txt --out=videos/clip.mp4   (one per line)
  vidgen sample --bundle=DIR --mesh=fsdp=4,tensor=2 --prompt=... --out=out.mp4  (sharded)

Writes mp4 (H.264) or gif by the --out extension, and a PNG contact sheet of frames beside
each video (NAME.png). Several prompts write NAME_000.mp4, NAME_001.mp4, ...
Without --bundle it samples the bundle shipped inside the package (SHIPPED_BUNDLE): the main
job's result on the Shapes World, 32x32, 9 frames (docs/bundle.md, "The shipped bundle").
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import numpy as np

from vidgen.errors import VidgenError

MODES = ("text_to_video", "text_to_image", "image_to_video", "extend", "loop", "connect",
         "restyle")
SHIPPED_BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundles", "default")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="vidgen sample", description="Generate videos from a bundle.")
  p.add_argument("--bundle", default=SHIPPED_BUNDLE,
                 help="a directory written by `vidgen export` (default: the shipped bundle)")
  p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  p.add_argument("--prompts-file", help="a text file with one prompt per line")
  p.add_argument("--mode", default="text_to_video", choices=MODES)
  p.add_argument("--image", help="image_to_video: the given frame (png, jpg, ...)")
  p.add_argument("--end-image", help="image_to_video --position=both: the last frame")
  p.add_argument("--position", default="first", choices=("first", "last", "both"),
                 help="image_to_video: where the image goes")
  p.add_argument("--video", help="extend / connect / restyle: the input video")
  p.add_argument("--video2", help="connect: the video to connect to")
  p.add_argument("--direction", default="forward", choices=("forward", "backward"),
                 help="extend: after or before the clip")
  p.add_argument("--frames", type=int, help="frames to generate (extend: in all; connect: of "
                                            "the transition); rounded to 1 + 4k")
  p.add_argument("--height", type=int)
  p.add_argument("--width", type=int)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--sampler", default="unipc", choices=("euler", "heun", "dpm++2m", "unipc"))
  p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
  p.add_argument("--shift", type=float, help="timestep shift (default: resolution-dependent)")
  p.add_argument("--strength", type=float, default=0.6, help="restyle: 0 keeps the video, 1 "
                                                              "ignores it")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--image-first", action="store_true",
                 help="text_to_video: sample the first frame as an image, then the clip "
                      "given it")
  p.add_argument("--no-resize", action="store_true",
                 help="refuse inputs of another size instead of scaling and center-cropping")
  p.add_argument("--dtype", choices=("bf16", "f32"),
                 help="compute dtype (default: bf16 on accelerators, f32 on CPU)")
  p.add_argument("--devices", type=int, help="use the first N devices (default: all; 1 = no "
                                             "sharding)")
  p.add_argument("--mesh", help="mesh axis sizes for sharded params, e.g. fsdp=4,tensor=2 "
                                "(default with several devices: all on fsdp)")
  p.add_argument("--fps", type=float, help="frame rate of the written video (default: bundle's)")
  p.add_argument("--out", required=True, help="output .mp4 or .gif")
  p.add_argument("--batch", type=int, default=4, help="prompts sampled together")
  p.add_argument("--no-progress", action="store_true")
  return p


def read_prompts(prompts: Sequence[str], prompts_file: str | None) -> list[str]:
  """--prompt values then the file's non-blank lines; refuses none at all."""
  out = list(prompts)
  if prompts_file:
    try:
      with open(prompts_file, encoding="utf-8") as f:
        out += [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise VidgenError(f"cannot read prompts file {prompts_file}: {e}") from None
  if not out:
    raise VidgenError("no prompt: pass --prompt=TEXT or --prompts-file=FILE")
  return out


def read_media(path: str | None, flag: str, kind: str) -> np.ndarray:
  """uint8 [T, H, W, 3] from an image or video file; errors name the file."""
  from vidgen.data import video_io
  if not path:
    raise VidgenError(f"this mode needs {flag}=FILE")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise VidgenError(f"cannot read {flag} file {path}: {e.strerror or e}") from None
  detected = video_io.kind_of(path) or kind
  try:
    frames, _ = video_io.decode(data, detected)
  except (video_io.DecodeError, ValueError) as e:
    raise VidgenError(f"{flag} file {path} is not a readable {detected}: {e}") from None
  return frames


def parse_mesh(text: str | None) -> dict[str, int] | None:
  """"fsdp=4,tensor=2" -> {"fsdp": 4, "tensor": 2}."""
  if not text:
    return None
  out = {}
  for part in text.split(","):
    name, eq, size = part.partition("=")
    try:
      out[name.strip()] = int(size)
    except ValueError:
      eq = ""
    if not eq:
      raise VidgenError(f"--mesh={text}: expected AXIS=SIZE,... (e.g. fsdp=4,tensor=2)")
  return out


def select_devices(count: int | None) -> list | None:
  """The first `count` devices (None: leave the choice to Pipeline.load)."""
  if count is None:
    return None
  import jax
  available = jax.devices()
  if not 1 <= count <= len(available):
    raise VidgenError(f"--devices={count}: there are {len(available)} devices")
  return available[:count]


def output_paths(out: str, count: int) -> list[str]:
  """NAME.ext for one video, NAME_000.ext ... for several."""
  root, ext = os.path.splitext(out)
  if ext.lower() not in (".mp4", ".gif"):
    raise VidgenError(f"--out={out}: the file must end in .mp4 or .gif")
  if count == 1:
    return [out]
  return [f"{root}_{i:03d}{ext}" for i in range(count)]


def contact_sheet(video: np.ndarray, max_frames: int = 8) -> np.ndarray:
  """uint8 [T, H, W, 3] -> one row of up to `max_frames` evenly spaced frames, 2px apart."""
  idx = np.unique(np.linspace(0, len(video) - 1, min(max_frames, len(video))).round().astype(int))
  h, w = video.shape[1:3]
  sheet = np.full((h, len(idx) * (w + 2) - 2, 3), 255, np.uint8)
  for j, i in enumerate(idx):
    sheet[:, j * (w + 2):j * (w + 2) + w] = video[i]
  return sheet


def write_video(path: str, video: np.ndarray, fps: float, scale: int = 1) -> None:
  """Writes mp4 (padded to even sides for H.264) or gif, plus NAME.png contact sheet; `scale`
  repeats every pixel (nearest neighbour: a 32x32 clip is too small to look at)."""
  from vidgen.data import video_io
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if scale > 1:
    video = np.repeat(np.repeat(video, scale, axis=1), scale, axis=2)
  if path.lower().endswith(".mp4"):
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    padded = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    data = video_io.encode_mp4(padded, fps)
  else:
    data = video_io.encode_gif(video, fps)
  with open(path, "wb") as f:
    f.write(data)
  with open(os.path.splitext(path)[0] + ".png", "wb") as f:
    f.write(video_io.encode_png(contact_sheet(video)))


def run(args: argparse.Namespace, pipeline=None) -> list[str]:
  """Samples every prompt in args and writes the videos; returns their paths."""
  from vidgen.pipeline import Pipeline
  if args.batch < 1:
    raise VidgenError("--batch must be at least 1")
  if args.image_first and args.mode != "text_to_video":
    raise VidgenError(f"--image-first is for --mode=text_to_video, not {args.mode}")
  prompts = read_prompts(args.prompt, args.prompts_file)
  paths = output_paths(args.out, len(prompts))
  inputs = {}
  if args.mode == "image_to_video":
    inputs["image"] = read_media(args.image, "--image", "image")
    if args.end_image:
      inputs["end_image"] = read_media(args.end_image, "--end-image", "image")
  if args.mode in ("extend", "connect", "restyle"):
    inputs["video"] = read_media(args.video, "--video", "video")
  if args.mode == "connect":
    inputs["video2"] = read_media(args.video2, "--video2", "video")
  if pipeline is None:
    if args.bundle == SHIPPED_BUNDLE and not os.path.isdir(SHIPPED_BUNDLE):
      raise VidgenError(f"no --bundle given and this install has no shipped bundle at "
                        f"{SHIPPED_BUNDLE}; pass --bundle=DIR (`vidgen export` writes one)")
    pipeline = Pipeline.load(args.bundle, mesh_shape=parse_mesh(args.mesh),
                             devices=select_devices(args.devices), dtype=args.dtype,
                             progress=not args.no_progress,
                             notify=lambda m: print(f"vidgen sample: {m}", file=sys.stderr))
  common = dict(steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                shift=args.shift, seed=args.seed)
  size = dict(height=args.height, width=args.width)
  resize = not args.no_resize
  for start in range(0, len(prompts), args.batch):
    batch = prompts[start:start + args.batch]
    mode = args.mode
    if mode == "text_to_video":
      gen = pipeline.text_to_video(batch, frames=args.frames, image_first=args.image_first,
                                   **size, **common)
    elif mode == "text_to_image":
      gen = pipeline.text_to_image(batch, **size, **common)
    elif mode == "image_to_video":
      gen = pipeline.image_to_video(batch, inputs["image"], position=args.position,
                                    end_image=inputs.get("end_image"), frames=args.frames,
                                    resize=resize, **size, **common)
    elif mode == "extend":
      if args.frames is None:
        raise VidgenError("extend needs --frames (the length of the result)")
      gen = pipeline.extend(batch, inputs["video"], frames=args.frames,
                            direction=args.direction, resize=resize, **common)
    elif mode == "loop":
      gen = pipeline.loop(batch, frames=args.frames, **size, **common)
    elif mode == "connect":
      gen = pipeline.connect(batch, inputs["video"], inputs["video2"], frames=args.frames,
                             resize=resize, **common)
    else:
      gen = pipeline.restyle(batch, inputs["video"], strength=args.strength, resize=resize,
                             **common)
    for i, video in enumerate(gen.video):
      path = paths[start + i]
      write_video(path, video, args.fps or gen.fps)
      print(f"wrote {path} ({video.shape[0]} frames, {video.shape[1]}x{video.shape[2]}) "
            f"and {os.path.splitext(path)[0]}.png")
  return paths


def main(argv: list[str]) -> int:
  logging.basicConfig(level=logging.WARNING, format="vidgen sample: %(message)s")
  args = _parser().parse_args(argv)
  run(args)
  return 0

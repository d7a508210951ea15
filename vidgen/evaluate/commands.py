"""`vidgen evaluate`: score a model on held-out prompts and write a report a person can read.

  vidgen evaluate --bundle=BUNDLE --split=heldout --num-prompts=100 --seeds=2 --out=DIR
  vidgen evaluate --config=configs/t2v_tiny.py --workdir=WORKDIR --sizes=17x32x32,9x64x64
  vidgen evaluate --config=configs/t2v_tiny.py --workdir=WORKDIR --step=4000  (a kept step)
  vidgen evaluate --config=configs/vae_tiny.py --workdir=WORKDIR       (an autoencoder)
  vidgen evaluate --videos=GENERATED_DIR --real-videos=REAL_DIR --out=DIR   (FVD of folders)

Text-to-video: prompts are the detailed captions of the first N clips of a Shapes World split
(or the lines of --prompts-file); each is generated with K seeds through vidgen.pipeline. The
Shapes World oracle scores every generated clip against its prompt's metadata, beside the
reference rows (real clips = ceiling, shuffled captions = chance, the first frame held =
no motion). FVD/KVD (I3D): the seed-0 clips against N disjoint real clips of the same split
(clips N..2N-1), beside the prompts' own real clips against those same N clips: the
real-vs-real floor at this N, which a perfect generator would score.
An autoencoder workdir (config.task == "vae") is scored by vidgen.evaluate.recon (PSNR/SSIM)
and by reconstruction FVD (its reconstructions of validation clips against disjoint validation
clips, beside the originals against the same clips: the floor a lossless autoencoder scores).
A t2v workdir is evaluated at its newest checkpoint, or at --step (a learning curve: keep
checkpoints with train.keep_period). A validation-loss table (per bucket, at fixed timesteps)
is computed from that checkpoint (EMA params) with --val-loss (vidgen.evaluate.val_loss), or
read from --val-loss=JSON.
Output: DIR/report.json (every number), DIR/report.html and DIR/clips/*.gif.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from vidgen import config as config_lib
from vidgen.errors import VidgenError
from vidgen.evaluate import report

# generate(prompts, seed) -> uint8 [len(prompts), T, H, W, 3]
GenerateFn = Callable[[Sequence[str], int], np.ndarray]
# reconstruct(uint8 [N, T, H, W, 3]) -> the same clips through the autoencoder, uint8
ReconstructFn = Callable[[np.ndarray], np.ndarray]
AUTOENCODER_ROW = "autoencoder"
ORACLE_TITLE = "Shapes World oracle: accuracy [95% CI]"
FVD_TITLE = "FVD / KVD (I3D, Kinetics-400)"
NOTES = {
    ORACLE_TITLE: "Share of clips with each attribute right (bootstrap 95% interval); n/a where "
                  "no clip has the attribute. The 'generated: ...' rows split the generated "
                  "clips by scene (one large object, one small object, two objects). "
                  "Reference rows: real = the real clips of the same prompts (ceiling), "
                  "shuffled = real clips against another clip's caption (chance), static = "
                  "the first real frame held (no motion), autoencoder = the real clips "
                  "encoded and decoded by the model's autoencoder (the ceiling of a latent "
                  "model).",
    FVD_TITLE: "Against N disjoint real clips of the same split. The real-vs-real row is the "
               "prompts' own real clips against that reference: what a perfect generator "
               "scores at this N (FVD is biased at small N; compare rows, not across N).",
}
ORACLE_REFERENCES = (("real", "ceiling: real clips of the same prompts"),
                     ("shuffled", "chance: real clips scored against another clip's caption"),
                     ("static", "no motion: the first real frame held for the whole clip"))


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """The clip size generated and compared: frames, height, width, fps."""
  frames: int
  height: int
  width: int
  fps: float


# ------------------------------------------------------------------------------ prompts
def world_prompts(split: str, n: int, spec: VideoSpec, *, seed: int = 0,
                  offset: int = 0) -> list[dict[str, Any]]:
  """Clips offset..offset+n-1 of a Shapes World split: video, captions, metadata."""
  from vidgen import world  # pylint: disable=g-import-not-at-top
  if split not in world.SPLITS:
    raise VidgenError(f"unknown split {split!r}; choose one of {', '.join(world.SPLITS)}")
  return [world.generate_clip(split, i, seed=seed, height=spec.height, width=spec.width,
                              frames=spec.frames, fps=spec.fps)
          for i in range(offset, offset + n)]


def read_prompts_file(path: str, limit: int | None = None) -> list[str]:
  """One prompt per non-empty line."""
  if not os.path.isfile(path):
    raise VidgenError(f"prompts file {path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    prompts = [line.strip() for line in f if line.strip()]
  if not prompts:
    raise VidgenError(f"prompts file {path!r} has no prompts")
  return prompts[:limit] if limit else prompts


# ------------------------------------------------------------------------------ generation
def pipeline_generate_fn(pipe: Any, spec: VideoSpec, *, steps: int, guidance: float,
                         sampler: str, batch_size: int, image_first: bool = False
                         ) -> GenerateFn:
  """The one generation call: vidgen.pipeline.Pipeline.text_to_video in batches."""
  def generate(prompts: Sequence[str], seed: int) -> np.ndarray:
    out = []
    for start in range(0, len(prompts), batch_size):
      chunk = list(prompts[start:start + batch_size])
      gen = pipe.text_to_video(chunk, frames=spec.frames, height=spec.height, width=spec.width,
                               steps=steps, sampler=sampler, guidance=guidance,
                               image_first=image_first,
                               seed=seed * 100003 + start)
      out.append(np.asarray(gen.video))
    return np.concatenate(out)
  return generate


def autoencoder_fn(pipe: Any) -> ReconstructFn | None:
  """The pipeline's encode + decode for the oracle's autoencoder row (None: a pixel model)."""
  return pipe.reconstruct if pipe.c.latent == "vae" else None


def fit_spec_to_pipeline(pipe: Any, spec: VideoSpec) -> VideoSpec:
  """The sizes the pipeline will really produce (frames 1 + 4k, sizes multiples of a unit)."""
  from vidgen import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  c = pipe.c
  return VideoSpec(
      frames=pipeline_lib.nearest_valid_frames(spec.frames, c.temporal_factor),
      height=pipeline_lib.nearest_multiple(spec.height, c.spatial_factor * c.patch[1]),
      width=pipeline_lib.nearest_multiple(spec.width, c.spatial_factor * c.patch[2]),
      fps=float(c.fps))


def load_pipeline(bundle: str | None, workdir: str | None, step: int | None = None) -> Any:
  """A Pipeline from a bundle, or from a workdir's checkpoint `step` (None: the newest)
  exported to a temporary bundle."""
  try:
    from vidgen.pipeline import Pipeline  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise VidgenError(f"generation needs vidgen.pipeline, which failed to import: {e}") from e
  if bundle:
    return Pipeline.load(bundle)
  from vidgen import export  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix="vidgen_eval_bundle_")
  export.export_workdir(workdir, tmp, step=step)
  return Pipeline.load(tmp)


def generate_all(generate: GenerateFn, prompts: Sequence[str], seeds: int
                 ) -> list[np.ndarray]:
  """uint8 [N, T, H, W, 3] per seed."""
  videos = []
  for seed in range(seeds):
    out = np.asarray(generate(prompts, seed))
    if out.dtype != np.uint8 or out.ndim != 5 or len(out) != len(prompts):
      raise VidgenError(f"generation returned {out.dtype} {out.shape}; expected uint8 "
                        f"[{len(prompts)}, T, H, W, 3]")
    videos.append(out)
  return videos


# ------------------------------------------------------------------------------ scoring
def oracle_table(generated: Sequence[np.ndarray], clips: Sequence[dict[str, Any]], *,
                 n_boot: int = 1000, reconstruct: ReconstructFn | None = None
                 ) -> list[dict[str, Any]]:
  """Per-attribute accuracy (95% bootstrap CI): generated clips, then the same clips by scene
  group (oracle.SCENE_GROUPS), and the reference rows; with `reconstruct`, also the
  autoencoder row (the real clips encoded and decoded)."""
  from vidgen.evaluate import oracle  # pylint: disable=g-import-not-at-top
  score = lambda videos: [oracle.score_clip(v, c["metadata"]) for v, c in zip(videos, clips)]
  scores = [s for video in generated for s in score(video)]
  rows = {"generated": oracle.summarize(scores, n_boot=n_boot)}
  groups = [oracle.scene_group(c["metadata"]) for c in clips] * len(generated)
  for group in oracle.SCENE_GROUPS:
    if group in groups:
      rows[f"generated: {group}"] = oracle.summarize(
          [s for s, g in zip(scores, groups) if g == group], n_boot=n_boot)
  for name, _ in ORACLE_REFERENCES:
    rows[name] = oracle.summarize(oracle.REFERENCES[name](clips), n_boot=n_boot)
  if reconstruct is not None:
    rows[AUTOENCODER_ROW] = oracle.summarize(
        score(reconstruct(np.stack([c["video"] for c in clips]))), n_boot=n_boot)
  attrs = tuple(oracle.ATTRIBUTES) + ("all_correct",)
  return [{"row": name, **{a: summary[a] for a in attrs}} for name, summary in rows.items()]


def fvd_table(generated: np.ndarray, real: Sequence[np.ndarray],
              reference: Sequence[np.ndarray], *, batch_size: int = 8
              ) -> list[dict[str, Any]]:
  """FVD/KVD against a disjoint real reference: generated, and real (the floor at this N)."""
  from vidgen.evaluate import fvd  # pylint: disable=g-import-not-at-top
  out = fvd.evaluate_sets(generated, real, reference, batch_size=batch_size)
  return [{"set": "generated vs real", "fvd": out["fvd"], "kvd": out["kvd"],
           "n": out["num_clips"]},
          {"set": "real vs real (floor)", "fvd": out["fvd_real_vs_real"],
           "kvd": out["kvd_real_vs_real"], "n": out["num_clips"]}]


def read_table(path: str) -> list[dict[str, Any]]:
  """A table from JSON: a list of rows, or {row name: {column: value}}."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if isinstance(data, dict):
    return [{"row": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in data.items()]
  if isinstance(data, list) and all(isinstance(r, dict) for r in data):
    return data
  raise VidgenError(f"{path}: expected a list of rows or a dict of rows")


def as_table(result: Any) -> list[dict[str, Any]]:
  """Whatever an evaluator returns, as table rows."""
  if isinstance(result, list):
    return [r if isinstance(r, dict) else {"value": r} for r in result]
  if isinstance(result, dict):
    if all(isinstance(v, dict) for v in result.values()):
      return [{"row": k, **v} for k, v in result.items()]
    return [{"row": "all", **result}]
  return [{"row": "all", "value": result}]


# ------------------------------------------------------------------------------ runs
def evaluate_t2v(generate: GenerateFn, spec: VideoSpec, *, split: str = "heldout",
                 num_prompts: int = 16, seeds: int = 1, world_seed: int = 0,
                 prompts: Sequence[str] | None = None, with_fvd: bool = True,
                 fvd_batch_size: int = 8, grid: int = 16, n_boot: int = 1000,
                 reconstruct: ReconstructFn | None = None
                 ) -> tuple[dict[str, list], list[report.Clip], dict[str, Any]]:
  """Generates, scores and returns (sections, clips for the grid, extra JSON data).
  `reconstruct` (e.g. Pipeline.reconstruct) adds the oracle's autoencoder row."""
  timing: dict[str, float] = {}
  t0 = time.perf_counter()
  clips = None
  if prompts is None:
    clips = world_prompts(split, num_prompts, spec, seed=world_seed)
    prompts = [c["captions"][0] for c in clips]
  timing["prompts_s"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  generated = generate_all(generate, prompts, seeds)
  timing["generation_s"] = time.perf_counter() - t0

  sections: dict[str, list] = {}
  if clips is not None:
    t0 = time.perf_counter()
    sections[ORACLE_TITLE] = oracle_table(generated, clips, n_boot=n_boot,
                                          reconstruct=reconstruct)
    timing["oracle_s"] = time.perf_counter() - t0
    if with_fvd:
      t0 = time.perf_counter()
      reference = world_prompts(split, len(clips), spec, seed=world_seed, offset=len(clips))
      sections[FVD_TITLE] = fvd_table(
          generated[0], [c["video"] for c in clips], [c["video"] for c in reference],
          batch_size=fvd_batch_size)
      timing["fvd_s"] = time.perf_counter() - t0
  grid_clips = [(p, [g[i] for g in generated], clips[i]["video"] if clips else None)
                for i, p in enumerate(prompts[:grid])]
  extra = {"prompts": list(prompts), "split": split if clips is not None else None,
           "seeds": seeds, "video": dataclasses.asdict(spec), "timing": timing}
  return sections, grid_clips, extra


def evaluate_folders(videos_dir: str, real_dir: str, *, frames: int | None = None,
                     max_clips: int | None = None, batch_size: int = 8) -> list[dict]:
  """FVD/KVD of a folder of videos vs a real folder, beside real-vs-real at the same N.

  The real folder's first N clips are the "real" set, its next N the reference; it must
  hold at least twice as many clips as are compared (sorted by file name).
  """
  from vidgen.evaluate import fvd  # pylint: disable=g-import-not-at-top
  gen = fvd.read_video_folder(videos_dir, frames=frames, max_clips=max_clips)
  real = fvd.read_video_folder(real_dir, frames=frames)
  n = min(len(gen), len(real) // 2)
  if n < 2:
    raise VidgenError(f"need at least 2 generated clips and 4 real clips, got {len(gen)} and "
                      f"{len(real)}")
  return fvd_table(gen[:n], real[:n], real[n:2 * n], batch_size=batch_size)


def recon_table(result: dict[str, Any]) -> list[dict[str, Any]]:
  """vidgen.evaluate.recon.evaluate_vae's result as rows: one per bucket, then all clips."""
  if "buckets" not in result:
    return as_table(result)
  rows = [{"bucket": name, "psnr": b.get("psnr"), "ssim": b.get("ssim"), "clips": b.get("clips")}
          for name, b in result["buckets"].items()]
  rows.append({"bucket": "all", "psnr": result.get("psnr"), "ssim": result.get("ssim"),
               "clips": result.get("clips")})
  return rows


def _vae_sections(config: Any, workdir: str) -> tuple[dict[str, list], dict[str, Any]]:
  """Sections and extra JSON data of an autoencoder workdir (vidgen.evaluate.recon)."""
  try:
    recon = importlib.import_module("vidgen.evaluate.recon")
  except ModuleNotFoundError as e:
    if e.name != "vidgen.evaluate.recon":
      raise
    raise VidgenError("autoencoder evaluation needs vidgen.evaluate.recon, which is not "
                      "built yet") from None
  if not hasattr(recon, "evaluate_vae"):
    raise VidgenError("vidgen.evaluate.recon has no evaluate_vae(config, workdir)")
  result = recon.evaluate_vae(config, workdir)
  extra = {k: v for k, v in result.items() if k in ("png", "latent_stats")}
  return {"Autoencoder reconstruction (PSNR dB, SSIM)": recon_table(result)}, extra


RECON_FVD_TITLE = "Autoencoder reconstruction FVD / KVD (I3D)"
VAL_LOSS_TITLE = "Validation loss per bucket"
NOTES[RECON_FVD_TITLE] = (
    "Reconstructions of N validation clips against N other validation clips; the real-vs-real "
    "row is the originals against the same clips, what a lossless autoencoder scores.")
NOTES[VAL_LOSS_TITLE] = (
    "Rectified-flow velocity MSE of the EMA params in plain text-to-video mode (no "
    "conditioning frames, no caption dropout), noise fixed per batch and timestep.")


def recon_fvd_table(config: Any, workdir: str, *, num_clips: int = 32, batch_size: int = 8
                    ) -> list[dict[str, Any]]:
  """Reconstruction FVD of an autoencoder workdir on its eval split (the longest bucket).

  The first `num_clips` clips of the bucket with the most frames are reconstructed through
  the autoencoder (recon.reconstruct: encode, posterior mean, decode); the next `num_clips`
  are the reference.
  """
  from vidgen.evaluate import fvd, recon  # pylint: disable=g-import-not-at-top
  model, params, _ = recon.load_or_export(config, workdir)
  by_bucket: dict[str, list[np.ndarray]] = {}
  for name, video in recon.split_batches(config, 2 * num_clips * len(config.data.buckets)):
    by_bucket.setdefault(name, []).append(video)
  name = max(by_bucket, key=lambda k: (int(k.split("x")[0]), sum(map(len, by_bucket[k]))))
  clips = np.concatenate(by_bucket[name])
  n = min(num_clips, len(clips) // 2)
  if n < 2:
    raise VidgenError(f"reconstruction FVD needs at least 4 clips of bucket {name}, the eval "
                      f"split gave {len(clips)}")
  originals, reference = clips[:n], clips[n:2 * n]
  recons = np.concatenate([recon.reconstruct(model, params, originals[i:i + batch_size])[0]
                           for i in range(0, n, batch_size)])
  out = fvd.reconstruction_fvd(originals, recons, reference, batch_size=batch_size)
  return [{"set": "reconstructions vs real", "bucket": name, "fvd": out["fvd"],
           "kvd": out["kvd"], "n": n},
          {"set": "real vs real (floor)", "bucket": name, "fvd": out["fvd_real_vs_real"],
           "kvd": out["kvd_real_vs_real"], "n": n}]


def val_loss_table(config: Any, workdir: str, *, split: str = "validation",
                   max_batches: int | None = None, step: int | None = None
                   ) -> tuple[list[dict[str, Any]], int]:
  """(vidgen.evaluate.val_loss rows, checkpoint step) of a t2v workdir's checkpoint `step`
  (None: the newest)."""
  from vidgen import export  # pylint: disable=g-import-not-at-top
  from vidgen.evaluate import val_loss  # pylint: disable=g-import-not-at-top
  from vidgen.train.tasks import get_task  # pylint: disable=g-import-not-at-top
  params, _, step = export._restore_params(workdir, step)  # pylint: disable=protected-access
  rows = val_loss.val_loss(get_task(config), params, config, split=split,
                           max_batches=max_batches)
  return rows, step


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  argv, overrides = config_lib.split_overrides(argv)
  p = argparse.ArgumentParser(prog="vidgen evaluate", description=__doc__.split("\n")[0])
  p.add_argument("--config", help="configs/X.py[:ARG]; with --workdir")
  p.add_argument("--workdir", help="a training workdir (t2v or vae)")
  p.add_argument("--step", type=int,
                 help="t2v --workdir: the checkpoint to evaluate (default: the newest)")
  p.add_argument("--bundle", help="an exported bundle (vidgen export)")
  p.add_argument("--videos", help="a folder of generated videos: FVD against --real-videos")
  p.add_argument("--real-videos", help="a folder of real videos (at least 2x --videos)")
  p.add_argument("--split", default="heldout")
  p.add_argument("--prompts-file", help="one prompt per line instead of a split's captions")
  p.add_argument("--num-prompts", type=int, default=16)
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--world-seed", type=int, default=0, help="the Shapes World seed")
  p.add_argument("--sizes", help="FxHxW[,FxHxW...]: evaluate at each (default: "
                 "config.eval.sizes, else --frames/--height/--width over the model's clip size)")
  p.add_argument("--frames", type=int, default=None)
  p.add_argument("--height", type=int, default=None)
  p.add_argument("--width", type=int, default=None)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--guidance", type=float, default=5.0)
  p.add_argument("--sampler", default="unipc")
  p.add_argument("--image-first", action="store_true",
                 help="sample each clip's first frame as an image, then the clip given it")
  p.add_argument("--batch-size", type=int, default=16, help="prompts per generation call")
  p.add_argument("--no-fvd", action="store_true", help="skip FVD/KVD (I3D is slow on CPU)")
  p.add_argument("--val-loss", nargs="?", const="compute", default=None,
                 help="add the validation loss per bucket: alone, computed from the t2v "
                 "--workdir's newest checkpoint; =JSON, a table read from that file")
  p.add_argument("--val-loss-split", default="validation", help="split for --val-loss")
  p.add_argument("--no-generate", action="store_true",
                 help="t2v workdir: skip generation (oracle, FVD), e.g. for --val-loss alone")
  p.add_argument("--val-loss-batches", type=int, default=0,
                 help="eval batches for --val-loss (0: the whole split)")
  p.add_argument("--recon-fvd-clips", type=int, default=32,
                 help="clips per set for an autoencoder's reconstruction FVD")
  p.add_argument("--grid", type=int, default=16, help="clips shown in the HTML grid")
  p.add_argument("--out", default=None, help="report folder (default WORKDIR/eval or ./eval)")
  return p.parse_args(argv), overrides


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
  """"17x32x32,9x64x64" -> [(frames, height, width), ...]."""
  sizes = []
  for item in filter(None, (t.strip() for t in text.split(","))):
    try:
      frames, height, width = (int(v) for v in item.lower().split("x"))
    except ValueError:
      raise VidgenError(f"--sizes: {item!r} is not FRAMESxHEIGHTxWIDTH, e.g. 17x32x32") from None
    sizes.append((frames, height, width))
  if not sizes:
    raise VidgenError("--sizes is empty")
  return sizes


def _specs(args: argparse.Namespace, config: Any, pipe: Any) -> list[VideoSpec]:
  """--sizes, else config.eval.sizes, else flags over the pipeline's training clip size."""
  c = pipe.c
  if args.sizes:
    sizes = parse_sizes(args.sizes)
  elif config is not None and config.get("eval") and config.eval.get("sizes"):
    sizes = [tuple(int(v) for v in s) for s in config.eval.sizes]
  else:
    sizes = [(args.frames or c.frames, args.height or c.height, args.width or c.width)]
  return [VideoSpec(frames=f, height=h, width=w, fps=float(c.fps)) for f, h, w in sizes]


def main(argv: Sequence[str]) -> int:
  args, overrides = parse_args(argv)
  t_start = time.perf_counter()
  config = config_lib.load(args.config, overrides) if args.config else None
  if overrides and config is None:
    raise VidgenError("--config.KEY=VALUE overrides need --config")
  if args.step is not None and (args.bundle or not args.workdir or args.videos
                                or (config is not None and config.get("task") == "vae")):
    raise VidgenError("--step picks a checkpoint of a t2v --workdir; a bundle holds one step "
                      "(vidgen export --step=N writes one)")
  out = args.out or os.path.join(args.workdir or ".", "eval")
  sections: dict[str, list] = {}
  clips: list[report.Clip] = []
  extra: dict[str, Any] = {"argv": list(argv)}

  if args.videos or args.real_videos:
    if not (args.videos and args.real_videos):
      raise VidgenError("--videos and --real-videos go together")
    sections[FVD_TITLE] = evaluate_folders(
        args.videos, args.real_videos, frames=args.frames, max_clips=args.num_prompts)
  elif config is not None and config.get("task") == "vae":
    if not args.workdir:
      raise VidgenError("an autoencoder config needs --workdir")
    vae_sections, vae_extra = _vae_sections(config, args.workdir)
    sections.update(vae_sections)
    extra["recon"] = vae_extra
    if not args.no_fvd:
      t0 = time.perf_counter()
      sections[RECON_FVD_TITLE] = recon_fvd_table(config, args.workdir,
                                                  num_clips=args.recon_fvd_clips)
      extra.setdefault("timing", {})["recon_fvd_s"] = time.perf_counter() - t0
  elif args.no_generate:
    if not args.val_loss:
      raise VidgenError("--no-generate leaves nothing to evaluate; add --val-loss")
  else:
    if not (args.bundle or (args.workdir and config is not None)):
      raise VidgenError("pass --bundle=DIR, or --config=... --workdir=DIR, or --videos=DIR "
                        "--real-videos=DIR")
    pipe = load_pipeline(args.bundle, args.workdir, args.step)
    prompts = read_prompts_file(args.prompts_file, args.num_prompts) if args.prompts_file \
        else None
    specs = [fit_spec_to_pipeline(pipe, s) for s in _specs(args, config, pipe)]
    extra["runs"] = []
    for spec in specs:
      generate = pipeline_generate_fn(pipe, spec, steps=args.steps, guidance=args.guidance,
                                      sampler=args.sampler, batch_size=args.batch_size,
                                      image_first=args.image_first)
      t2v_sections, t2v_clips, t2v_extra = evaluate_t2v(
          generate, spec, split=args.split, num_prompts=args.num_prompts, seeds=args.seeds,
          world_seed=args.world_seed, prompts=prompts, with_fvd=not args.no_fvd,
          grid=args.grid, reconstruct=autoencoder_fn(pipe))
      label = f"{spec.frames}x{spec.height}x{spec.width}"
      many = len(specs) > 1
      sections.update({f"{k} @ {label}" if many else k: v for k, v in t2v_sections.items()})
      clips.extend((f"[{label}] {p}" if many else p, g, r) for p, g, r in t2v_clips)
      extra["runs"].append(t2v_extra)
    extra["video"] = extra["runs"][0]["video"]
  if args.val_loss == "compute":
    if not (args.workdir and config is not None and config.get("task") == "t2v"):
      raise VidgenError("--val-loss (computed) needs --config=<a t2v config> --workdir=DIR; "
                        "pass --val-loss=JSON to include a table computed elsewhere")
    t0 = time.perf_counter()
    sections[VAL_LOSS_TITLE], extra["val_loss_step"] = val_loss_table(
        config, args.workdir, split=args.val_loss_split,
        max_batches=args.val_loss_batches or None, step=args.step)
    extra.setdefault("timing", {})["val_loss_s"] = time.perf_counter() - t0
  elif args.val_loss:
    sections[VAL_LOSS_TITLE] = read_table(args.val_loss)
  extra.setdefault("timing", {})["total_s"] = time.perf_counter() - t_start
  notes = {title: note for title in sections for key, note in NOTES.items()
           if title.startswith(key)}
  paths = report.write_report(out, sections, clips, fps=extra.get("video", {}).get("fps", 8.0),
                              notes=notes, extra=extra)
  for title, table in sections.items():
    print(f"{title}: {len(table)} rows")
  print(f"wrote {paths['html']} and {paths['json']} in {extra['timing']['total_s']:.1f}s")
  return 0

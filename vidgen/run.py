"""`vidgen run --workdir=DIR [--config=configs/default.py[:ARG]] [--config.KEY=VALUE ...]`.

The main job, stage by stage: build the dataset, train the tokenizer, train the autoencoder,
export it with its latent statistics (and its reconstruction scores), encode the training clips
and their captions once (the `cache` stage, when `t2v.model.latent` or `t2v.model.text` is
cached, the default: the text encoder is frozen at its random init), train the
transformer on those latents, export the bundle, evaluate it with the Shapes World oracle, and
write samples in every mode. The config is checked before any work. Every stage is resumable:
the trainers continue from their checkpoints, and `DIR/run_state.json` records finished stages,
which a second run skips when their outputs are still there and their settings are unchanged (a
stage that runs again makes every later stage run again). The end: `DIR/summary.json`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable

import ml_collections

from vidgen import config as config_lib
from vidgen.errors import VidgenError
from vidgen.sample import MODES

DEFAULT_CONFIG = "configs/default.py"
STATE_FILE = "run_state.json"
SUMMARY_FILE = "summary.json"
CAPTIONED_MODES = ("image_to_video", "extend")  # Samples that continue a clip use its caption.
INPUTS = {"image_to_video": 1, "extend": 1, "connect": 2, "restyle": 1}  # Clips a mode takes.


# ------------------------------------------------------------------------------ config
def default_config_path() -> str:
  """configs/default.py next to the package (works from any working directory)."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(here, DEFAULT_CONFIG)
  return path if os.path.isfile(path) else DEFAULT_CONFIG


def resolve(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Fills what depends on the workdir: an empty data_dir means WORKDIR/data."""
  config = copy.deepcopy(config)
  if not config.data.data_dir:
    config.data.data_dir = os.path.join(workdir, "data")
  config.data.data_dir = os.path.abspath(config.data.data_dir)
  return config


def stage_data(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The shared data section with the stage's buckets."""
  data = copy.deepcopy(config.data)
  data.buckets = list(config[stage].buckets)
  data.bucket_weights = list(config[stage].bucket_weights)
  return data


def vae_export_dir(workdir: str) -> str:
  from vidgen.train import vae_task
  return os.path.join(workdir, "vae", vae_task.EXPORT_DIR)


def stage_config(config: ml_collections.ConfigDict, stage: str,
                 workdir: str) -> ml_collections.ConfigDict:
  """A complete trainer config for `vae` or `t2v`: the stage section plus the shared data."""
  out = copy.deepcopy(config[stage])
  del out["buckets"], out["bucket_weights"]
  out.seed = config.seed
  out.data = stage_data(config, stage)
  if stage == "t2v" and out.model.latent in ("vae", "cached"):
    out.model.vae.workdir = os.path.join(workdir, "vae")  # Its vae_export/ (vae_eval stage).
  return out


def trained_frames(buckets: Any, weights: Any) -> list[int]:
  """Frame counts of the buckets a trainer draws from (an empty weight list: all of them)."""
  weights = list(weights) or [1.0] * len(buckets)
  return [int(b[0]) for b, w in zip(buckets, weights) if w > 0] or [0]


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise VidgenError(f"bad run config: {message}")


def validate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config that cannot run, before any work (nothing is written)."""
  import jax
  from vidgen import world
  from vidgen.data import config as data_config
  from vidgen.models import vae as vae_lib
  from vidgen.train import config as train_config
  from vidgen.train import t2v_task
  _check(config.data.dataset == "shapes_world",
         "the main job evaluates with the Shapes World oracle: data.dataset must be "
         "'shapes_world'")
  _check(config.budget_minutes >= 0, "budget_minutes must be >= 0 (0: use train.steps)")
  b = config.budget
  _check(min(b.vae_share, b.t2v_share) > 0 and b.vae_share + b.t2v_share < 1,
         "budget.vae_share and budget.t2v_share must be > 0 and sum to less than 1")
  _check(b.calibration_steps >= 1, "budget.calibration_steps must be >= 1")
  devices = jax.device_count()
  for stage in ("vae", "t2v"):
    cfg = stage_config(config, stage, workdir)
    _check(cfg.task == stage, f"{stage}.task must be {stage!r}, got {cfg.task!r}")
    data_config.validate(cfg.data)
    train_config.validate(cfg, devices)
    divisor = train_config.batch_divisor(cfg.mesh, devices) * cfg.train.microbatches
    for bucket in cfg.data.buckets:
      _check(bucket[3] % divisor == 0,
             f"{stage}.buckets {tuple(bucket)}: batch {bucket[3]} is not a multiple of "
             f"{divisor} (data x fsdp devices x microbatches)")
  vae_cfg = stage_config(config, "vae", workdir)
  from vidgen.train import vae_task
  vae_config = vae_task.vae_config_from(vae_cfg)
  t2v = config.t2v
  _check(t2v.model.latent in ("vae", "cached", "pixel"),
         f"t2v.model.latent={t2v.model.latent!r}: the main job trains on the autoencoder's "
         "latents, cached ahead ('cached') or encoded every step ('vae'), or on 'pixel'")
  try:
    t2v_task.check_text_config(t2v.model)
  except VidgenError as e:
    _check(False, f"t2v: {e}")
  if t2v.model.latent != "pixel":
    _check(not vae_cfg.model.get("variant") or vae_cfg.model.variant == t2v.model.vae.variant,
           f"t2v.model.vae.variant={t2v.model.vae.variant!r} must name the trained VAE's "
           f"variant {vae_cfg.model.variant!r}")
    for bucket in t2v.buckets:
      try:
        vae_lib.latent_shape(bucket[0], bucket[1], bucket[2], vae_config)
      except (VidgenError, ValueError) as e:
        raise VidgenError(f"bad run config: t2v.buckets {tuple(bucket)}: {e}") from None
    vae_frames = max(trained_frames(config.vae.buckets, config.vae.bucket_weights))
    t2v_frames = max(b[0] for b in t2v.buckets)
    _check(t2v_frames <= vae_frames,
           f"t2v.buckets hold {t2v_frames}-frame clips but the autoencoder trains on at most "
           f"{vae_frames} frames (vae.buckets with a weight > 0): the latents of later frames "
           f"would be ones it never learned to encode or decode. Add a vae bucket of "
           f"{t2v_frames} frames")
  for split in config.eval.splits:
    _check(split in world.SPLITS, f"eval.splits: unknown split {split!r}; choose from "
           f"{', '.join(world.SPLITS)}")
  _check(config.eval.num_prompts > 0 and config.eval.seeds > 0 and config.eval.steps > 0,
         "eval.num_prompts, eval.seeds and eval.steps must be > 0")
  for mode in config.samples.modes:
    _check(mode in MODES, f"samples.modes: unknown mode {mode!r}; choose from {', '.join(MODES)}")
  _check(len(config.samples.prompts) > 0 and config.samples.prompts_per_mode > 0,
         "samples.prompts must not be empty and samples.prompts_per_mode must be > 0")
  _check(config.samples.format in ("gif", "mp4"), "samples.format must be gif or mp4")
  _check(config.samples.steps > 0, "samples.steps must be > 0")
  _check(config.samples.scale >= 1, "samples.scale must be >= 1 (1: the generated size)")


# ------------------------------------------------------------------------------ state
def fingerprint(*parts: Any) -> str:
  """A short hash of the settings a stage depends on."""
  def plain(x: Any) -> Any:
    return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x
  text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunState:
  """`run_state.json`: per stage, whether it finished, its settings hash, outputs, timing."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, STATE_FILE)
    self.stages: dict[str, dict] = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.stages = json.load(f).get("stages", {})

  def is_done(self, name: str, key: str, outputs: dict[str, str]) -> bool:
    entry = self.stages.get(name, {})
    return (entry.get("done", False) and entry.get("fingerprint") == key
            and all(os.path.exists(p) for p in outputs.values()))

  def record(self, name: str, entry: dict) -> None:
    self.stages[name] = entry
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"stages": self.stages}, f, indent=1)
    os.replace(tmp, self.path)


@dataclasses.dataclass
class Stage:
  """One step of the job: what it depends on, what it leaves, and how to do it."""
  name: str
  title: str
  settings: Callable[[], list]  # What the stage depends on (hashed).
  outputs: Callable[[], dict[str, str]]  # Paths that must exist when it is done.
  run: Callable[[], dict]  # Does the work; returns info for the summary.


# ------------------------------------------------------------------------------ stages
class Job:
  """The main job's stages over one resolved config and one workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.state = RunState(workdir)
    self.vae_dir = os.path.join(workdir, "vae")
    self.t2v_dir = os.path.join(workdir, "t2v")
    self.bundle = os.path.join(workdir, "bundle")
    self.eval_dir = os.path.join(workdir, "eval")
    self.samples_dir = os.path.join(workdir, "samples")

  def stages(self) -> list[Stage]:
    c = self.config
    vae_cfg = lambda: stage_config(c, "vae", self.workdir)
    t2v_cfg = lambda: stage_config(c, "t2v", self.workdir)
    return [
        Stage("data", "build the Shapes World dataset", lambda: [c.data.world, c.data.data_dir],
              self.data_outputs, self.build_data),
        Stage("tokenizer", "train the caption tokenizer",
              lambda: [c.data.tokenizer.vocab_size, c.data.tokenizer.path],
              lambda: {"tokenizer": self.tokenizer_path()}, self.train_tokenizer),
        Stage("vae", "train the autoencoder", lambda: [vae_cfg()],
              lambda: {"vae_params": os.path.join(vae_export_dir(self.workdir),
                                                  "params.msgpack")}, self.train_vae),
        Stage("vae_eval", "autoencoder: latent statistics and reconstruction", lambda: [],
              self.vae_eval_outputs, self.evaluate_vae),
        *([Stage("cache", "encode the training clips (and captions) once",
                 lambda: [t2v_cfg().data, t2v_cfg().model.text],
                 self.cache_outputs, self.write_cache)]
          if c.t2v.model.latent == "cached" or c.t2v.model.text.get("cached") else []),
        Stage("t2v", "train the transformer on the latents", lambda: [t2v_cfg()],
              lambda: {"t2v_checkpoints": os.path.join(self.t2v_dir, "checkpoints")},
              self.train_t2v),
        Stage("export", "export the bundle", lambda: [],
              lambda: {"manifest": os.path.join(self.bundle, "manifest.json")},
              self.export_bundle),
        Stage("evaluate", "evaluate with the Shapes World oracle", lambda: [c.eval],
              lambda: {s: os.path.join(self.eval_dir, s, "report.json") for s in c.eval.splits},
              self.evaluate),
        Stage("samples", "sample videos in every mode", lambda: [c.samples],
              lambda: {"index": os.path.join(self.samples_dir, "index.json")}, self.sample),
    ]

  # -------------------------------------------------------------------------- data
  def tokenizer_path(self) -> str:
    from vidgen.data import config as data_config
    return data_config.tokenizer_path(self.config.data)

  def data_outputs(self) -> dict[str, str]:
    from vidgen.data import datasets
    return {"dataset_info": os.path.join(datasets.make_builder(self.config.data).data_dir,
                                         "dataset_info.json")}

  def build_data(self) -> dict:
    from vidgen.data import commands, datasets
    summary = commands.build(self.config.data)
    if not datasets.is_built(self.config.data):
      raise VidgenError(f"the dataset build at {summary['path']} did not finish")
    return {"path": summary["path"], "splits": summary["splits"]}

  def train_tokenizer(self) -> dict:
    from vidgen.data import commands
    return {"path": commands.train_tokenizer(self.config.data)}

  # -------------------------------------------------------------------------- autoencoder
  def train_vae(self) -> dict:
    from vidgen.train import loop, vae_task
    from vidgen.train.tasks import get_task
    cfg = stage_config(self.config, "vae", self.workdir)
    task = get_task(cfg)
    cfg.train.steps = self.plan_steps("vae", cfg, self.vae_dir, task)
    summary = loop.train(cfg, self.vae_dir, task=task)
    _check_finished(summary, self.vae_dir, cfg.train.steps)  # Before exporting anything.
    state = summary["final_state"]
    params = state.ema_params if cfg.train.ema_decay > 0 else state.params
    stale = os.path.join(vae_export_dir(self.workdir), vae_task.STATS_FILE)
    if os.path.exists(stale):  # Statistics of earlier weights; vae_eval measures new ones.
      os.remove(stale)
    vae_task.export_vae(self.vae_dir, cfg, params["vae"])
    return {"workdir": self.vae_dir, **_train_info(summary)}

  def vae_eval_outputs(self) -> dict[str, str]:
    from vidgen.train import vae_task
    return {"latent_stats": os.path.join(vae_export_dir(self.workdir), vae_task.STATS_FILE),
            "recon": os.path.join(self.vae_dir, "eval", "recon.json")}

  def evaluate_vae(self) -> dict:
    from vidgen.evaluate import recon
    cfg = stage_config(self.config, "vae", self.workdir)
    result = recon.evaluate_vae(cfg, self.vae_dir)
    print(recon.summarize(result), flush=True)
    return {"psnr": result["psnr"], "ssim": result["ssim"], "clips": result["clips"],
            "png": result["png"]}

  # -------------------------------------------------------------------------- transformer
  def cache_outputs(self) -> dict[str, str]:
    from vidgen.data import cache
    cfg = stage_config(self.config, "t2v", self.workdir)
    out = {}
    if cfg.model.latent == "cached":
      try:
        out["latents"] = os.path.join(cache.latent_dir(cfg), cache.MANIFEST)
      except VidgenError:  # No exported autoencoder yet: nothing cached either.
        out["latents"] = os.path.join(cache.cache_root(cfg.data), "(no autoencoder yet)")
    if cfg.model.text.get("cached"):
      try:
        out["text"] = os.path.join(cache.text_dir(cfg), cache.MANIFEST)
      except VidgenError:  # No tokenizer yet.
        out["text"] = os.path.join(cache.cache_root(cfg.data), "(no tokenizer yet)")
    return out

  def write_cache(self) -> dict:
    from vidgen.data import cache
    return cache.write_cache(stage_config(self.config, "t2v", self.workdir))

  def train_t2v(self) -> dict:
    from vidgen.train import loop
    cfg = stage_config(self.config, "t2v", self.workdir)
    vae_key = self.state.stages.get("vae", {}).get("fingerprint")
    trained_on = self.state.stages.get("t2v", {}).get("info", {}).get("vae_fingerprint")
    if (trained_on and trained_on != vae_key
        and os.path.isdir(os.path.join(self.t2v_dir, "checkpoints"))):
      raise VidgenError(f"{self.t2v_dir} holds a transformer trained on the latents of an "
                        "earlier autoencoder (its settings changed); delete that folder to "
                        "train the transformer again, or use a new --workdir")
    from vidgen.train.tasks import get_task
    task = get_task(cfg)
    cfg.train.steps = self.plan_steps("t2v", cfg, self.t2v_dir, task)
    summary = loop.train(cfg, self.t2v_dir, task=task)
    _check_finished(summary, self.t2v_dir, cfg.train.steps)
    return {"workdir": self.t2v_dir, "vae_fingerprint": vae_key, **_train_info(summary)}

  def plan_steps(self, stage: str, cfg: ml_collections.ConfigDict, workdir: str,
                 task: Any) -> int:
    """The stage's train steps: train.steps, or with a budget, what its share buys.

    With `budget_minutes > 0`, train.steps is a cap. The first `budget.calibration_steps`
    steps (inside the warm-up, so the learning rate does not depend on the total) are
    trained and timed on this machine; the steps that fit the stage's share are recorded in
    run_state.json (a resumed run keeps them), and training resumes from that checkpoint.
    """
    from vidgen.train import loop
    c = self.config
    cap = int(cfg.train.steps)
    if c.budget_minutes <= 0:
      return cap
    plan_key = f"{stage}_plan"
    plan = self.state.stages.get(plan_key)
    key = fingerprint(cfg, c.budget_minutes, c.budget)
    if plan and plan.get("fingerprint") == key:
      print(f"[{stage}] {plan['steps']} steps, planned earlier "
            f"({plan['seconds_per_step']:.2f}s a step)", flush=True)
      return int(plan["steps"])
    share = c.budget.vae_share if stage == "vae" else c.budget.t2v_share
    seconds = c.budget_minutes * 60.0 * share
    start = _latest_step(workdir)
    n = min(int(c.budget.calibration_steps), max(cap - start, 1))
    print(f"[{stage}] timing {n} steps to fit {seconds / 60:.1f} minutes", flush=True)
    t0 = time.perf_counter()
    summary = loop.train(cfg, workdir, task=task, stop_at=start + n)
    _check_finished(summary, workdir, min(start + n, cap))
    spent = time.perf_counter() - t0
    per_step = _seconds_per_step(workdir, after=start + cfg.train.log_every)
    per_step = per_step or spent / max(n, 1)
    overhead = max(spent - n * per_step, 0.0)  # Compile and start-up, paid again on resume.
    done = int(summary["step"])
    steps = int(min(cap, max(done, done + (seconds - spent - overhead) / per_step)))
    self.state.record(plan_key, {"fingerprint": key, "steps": steps,
                                 "seconds_per_step": per_step, "calibration_s": spent,
                                 "start_overhead_s": overhead, "cap": cap})
    print(f"[{stage}] {per_step:.2f}s a step, {overhead:.0f}s start-up: {steps} steps "
          f"(cap {cap})", flush=True)
    return steps

  def export_bundle(self) -> dict:
    from vidgen import export
    manifest = export.export_workdir(self.t2v_dir, self.bundle)
    size = sum(m["bytes"] for m in manifest["files"].values())
    return {"path": self.bundle, "mib": round(size / 2**20, 2),
            "param_counts": manifest.get("param_counts")}

  # -------------------------------------------------------------------------- evaluation
  def evaluate(self) -> dict:
    from vidgen.evaluate import commands, report
    from vidgen.pipeline import Pipeline
    e = self.config.eval
    pipe = Pipeline.load(self.bundle)
    spec = commands.fit_spec_to_pipeline(pipe, commands.VideoSpec(
        frames=pipe.c.frames, height=pipe.c.height, width=pipe.c.width, fps=float(pipe.c.fps)))
    info = {}
    for split in e.splits:
      bar = _bar(e.num_prompts * e.seeds, f"evaluate {split}", "clip")
      generate = commands.pipeline_generate_fn(pipe, spec, steps=e.steps, guidance=e.guidance,
                                               sampler=e.sampler, batch_size=e.batch_size,
                                               image_first=e.image_first)
      sections, clips, extra = commands.evaluate_t2v(
          _counting(generate, bar), spec, split=split, num_prompts=e.num_prompts,
          seeds=e.seeds, world_seed=self.config.data.world.seed, with_fvd=e.fvd,
          reconstruct=commands.autoencoder_fn(pipe))
      bar.close()
      extra.update(sampler=e.sampler, steps=e.steps, guidance=e.guidance,
                   image_first=e.image_first)
      out = os.path.join(self.eval_dir, split)
      paths = report.write_report(out, sections, clips, fps=spec.fps, extra=extra,
                                  title=f"vidgen run: {split} split",
                                  notes={k: v for k, v in commands.NOTES.items()
                                         if k in sections})
      rows = {r["row"]: r for r in sections[commands.ORACLE_TITLE]}
      info[split] = {"report": paths["html"], "json": paths["json"],
                     "oracle": _oracle_rows(rows)}
      print(_format_oracle(split, info[split]["oracle"]), flush=True)
    return info

  # -------------------------------------------------------------------------- samples
  def sample(self) -> dict:
    from vidgen import sample as sample_lib
    from vidgen.pipeline import Pipeline
    s, w = self.config.samples, self.config.data.world
    pipe = Pipeline.load(self.bundle)
    prompts = list(s.prompts)[:s.prompts_per_mode]
    inputs = _heldout_clips(len(prompts) + 1, w, pipe.c.frames)
    input_paths = []  # The clips the video modes start from, written beside their results.
    for i, clip in enumerate(inputs):
      input_paths.append(os.path.join(self.samples_dir, f"input_{i:02d}.{s.format}"))
      sample_lib.write_video(input_paths[-1], clip["video"], w.fps, scale=s.scale)
    written = []
    bar = _bar(len(s.modes) * len(prompts), "samples", "video")
    for mode in s.modes:
      for i, text in enumerate(prompts):
        prompt = inputs[i]["captions"][0] if mode in CAPTIONED_MODES else text
        gen = _generate(pipe, mode, prompt, inputs[i]["video"], inputs[i + 1]["video"], s,
                        seed=i)
        path = os.path.join(self.samples_dir, f"{mode}_{i:02d}.{s.format}")
        sample_lib.write_video(path, gen.video[0], gen.fps, scale=s.scale)
        written.append({"mode": mode, "prompt": prompt, "path": path,
                        "frames": int(gen.video.shape[1]),
                        "inputs": input_paths[i:i + INPUTS.get(mode, 0)]})
        bar.update(1)
    bar.close()
    index = os.path.join(self.samples_dir, "index.json")
    with open(index, "w") as f:
      json.dump(written, f, indent=1)
    return {"dir": self.samples_dir, "index": index, "videos": len(written)}


def _generate(pipe: Any, mode: str, prompt: str, clip: Any, clip2: Any,
              s: ml_collections.ConfigDict, seed: int) -> Any:
  """One generation in `mode`; video modes take heldout clips as their inputs."""
  kw = dict(steps=s.steps, guidance=s.guidance, seed=seed)
  if mode == "text_to_video":
    return pipe.text_to_video([prompt], image_first=s.image_first, **kw)
  if mode == "text_to_image":
    return pipe.text_to_image([prompt], **kw)
  if mode == "image_to_video":
    return pipe.image_to_video([prompt], clip[:1], **kw)
  if mode == "extend":
    return pipe.extend([prompt], clip, frames=2 * len(clip) - 1, **kw)
  if mode == "loop":
    return pipe.loop([prompt], **kw)
  if mode == "connect":
    return pipe.connect([prompt], clip, clip2, **kw)
  return pipe.restyle([prompt], clip, **kw)


def _heldout_clips(n: int, w: ml_collections.ConfigDict, frames: int) -> list[dict]:
  from vidgen import world
  return [world.generate_clip("heldout", i, seed=w.seed, height=w.height, width=w.width,
                              frames=frames, fps=w.fps) for i in range(n)]


def _latest_step(workdir: str) -> int:
  """The newest checkpoint step in a trainer workdir (0 if none)."""
  path = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
  return max(steps, default=0)


def _seconds_per_step(workdir: str, after: int) -> float | None:
  """Seconds a step in the trainer's logged windows ending after `after` (the first holds
  the compile). Windows over twice the fastest also compiled (a bucket's first batch) and
  are left out; the rest are averaged."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  values = []
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if row.get("step", 0) > after and "perf/seconds_per_step" in row:
        values.append(row["perf/seconds_per_step"])
  steady = [v for v in values if v <= 2 * min(values, default=0)]
  return float(sum(steady) / len(steady)) if steady else None


def _check_finished(summary: dict, workdir: str, steps: int) -> None:
  """A trainer stopped before `steps` (SIGTERM, a preemption) saved a checkpoint but is not
  done: the job stops there, nothing downstream runs, and the same command resumes it."""
  if int(summary["step"]) < steps:
    raise VidgenError(f"training stopped at step {summary['step']} of {steps} (SIGTERM or a "
                      f"preemption), its checkpoint saved in {workdir}; run the same command "
                      "again to continue from there")


def _train_info(summary: dict) -> dict:
  losses = [v for _, v in sorted(summary["losses"].items())]
  tail = losses[-20:]
  return {"step": int(summary["step"]), "resumed_from": summary["resumed_from"],
          "steps_run": len(losses), "param_count": int(summary["param_count"]),
          "final_loss": float(sum(tail) / len(tail)) if tail else None}


def _oracle_rows(rows: dict) -> dict:
  """{row: {attribute: [accuracy, ci_low, ci_high]}} for the generated and reference rows."""
  out = {}
  for name, row in rows.items():
    out[name] = {k: [v.get("accuracy"), v.get("ci_low"), v.get("ci_high")]
                 for k, v in row.items() if isinstance(v, dict)}
  return out


def _format_oracle(split: str, rows: dict) -> str:
  lines = [f"oracle on {split}:"]
  pad = max(map(len, rows), default=0)
  for name, attrs in rows.items():
    cells = [f"{a} {v[0]:.2f}" for a, v in attrs.items() if v[0] is not None]
    lines.append(f"  {name:<{pad}} " + "  ".join(cells))
  return "\n".join(lines)


def _bar(total: int, desc: str, unit: str) -> Any:
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)


def _counting(generate: Callable, bar: Any) -> Callable:
  """Wraps generate(prompts, seed) so the bar advances by the clips made."""
  def wrapped(prompts, seed):
    out = generate(prompts, seed)
    bar.update(len(prompts))
    return out
  return wrapped


# ------------------------------------------------------------------------------ the job
def run_job(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) every stage; returns the summary written to DIR/summary.json."""
  job = Job(config, workdir)
  state = job.state
  upstream_ran = False
  timings, infos, skipped = {}, {}, []
  start = time.perf_counter()
  for stage in job.stages():
    key = fingerprint(*stage.settings())
    outputs = stage.outputs()
    if not upstream_ran and state.is_done(stage.name, key, outputs):
      entry = state.stages[stage.name]
      timings[stage.name], infos[stage.name] = entry["seconds"], entry.get("info", {})
      skipped.append(stage.name)
      print(f"[{stage.name}] done already ({stage.title}); skipped", flush=True)
      continue
    print(f"[{stage.name}] {stage.title}", flush=True)
    t0 = time.perf_counter()
    info = stage.run()
    seconds = time.perf_counter() - t0
    missing = [p for p in stage.outputs().values() if not os.path.exists(p)]
    if missing:
      raise VidgenError(f"stage {stage.name} finished without writing {', '.join(missing)}")
    state.record(stage.name, {"done": True, "fingerprint": key, "seconds": seconds,
                              "outputs": stage.outputs(), "info": info})
    timings[stage.name], infos[stage.name] = seconds, info
    upstream_ran = True
    print(f"[{stage.name}] finished in {seconds:.1f}s", flush=True)
  summary = make_summary(job, timings, infos, skipped, time.perf_counter() - start)
  path = os.path.join(workdir, SUMMARY_FILE)
  with open(path, "w") as f:
    json.dump(summary, f, indent=1, default=str)
  print(format_summary(summary, path), flush=True)
  return summary


def make_summary(job: Job, timings: dict, infos: dict, skipped: list,
                 wall_s: float) -> dict:
  """Where everything is, wall time per stage, headline metrics."""
  c = job.config
  headline = {}
  if "vae_eval" in infos:
    headline["vae_psnr"] = infos["vae_eval"].get("psnr")
    headline["vae_ssim"] = infos["vae_eval"].get("ssim")
  for split, entry in infos.get("evaluate", {}).items():
    generated = entry["oracle"].get("generated", {})
    for attr, (acc, lo, hi) in generated.items():
      headline[f"{split}/{attr}"] = {"accuracy": acc, "ci_low": lo, "ci_high": hi}
  return {
      "workdir": job.workdir,
      "paths": {
          "dataset": infos.get("data", {}).get("path"),
          "tokenizer": job.tokenizer_path(),
          "vae_workdir": job.vae_dir,
          "vae_export": vae_export_dir(job.workdir),
          "t2v_workdir": job.t2v_dir,
          "bundle": job.bundle,
          "reports": {s: e.get("report") for s, e in infos.get("evaluate", {}).items()},
          "samples": job.samples_dir,
      },
      "steps": {k: infos.get(k, {}).get("step") for k in ("vae", "t2v")},
      "budget_minutes": float(c.budget_minutes),
      "stage_seconds": {k: round(v, 2) for k, v in timings.items()},
      "skipped": skipped,
      "wall_seconds_this_run": round(wall_s, 2),
      "headline": headline,
      "stages": infos,
  }


def format_summary(summary: dict, path: str) -> str:
  p = summary["paths"]
  lines = ["", "vidgen run: done", f"  dataset     {p['dataset']}",
           f"  tokenizer   {p['tokenizer']}", f"  VAE         {p['vae_workdir']}",
           f"  transformer {p['t2v_workdir']}", f"  bundle      {p['bundle']}"]
  lines += [f"  report      {r}" for r in p["reports"].values()]
  lines += [f"  samples     {p['samples']}", "  wall time by stage (s):"]
  lines += [f"    {k:<10} {v:9.1f}" for k, v in summary["stage_seconds"].items()]
  lines.append(f"  this run: {summary['wall_seconds_this_run']:.1f}s"
               + (f" (skipped: {', '.join(summary['skipped'])})" if summary["skipped"] else ""))
  for k, v in summary["headline"].items():
    value = v["accuracy"] if isinstance(v, dict) else v
    if value is not None:
      lines.append(f"  {k:<28} {value:.3f}")
  lines.append(f"summary: {path}")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  rest, overrides = config_lib.split_overrides(argv)
  parser = argparse.ArgumentParser(prog="vidgen run", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="where everything is written")
  parser.add_argument("--config", default=None,
                      help=f"configs/X.py[:ARG] (default {DEFAULT_CONFIG})")
  args = parser.parse_args(rest)
  config = config_lib.load(args.config or default_config_path(), overrides)
  workdir = os.path.abspath(args.workdir)
  config = resolve(config, workdir)
  validate(config, workdir)  # Before anything is written.
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  run_job(config, workdir)
  return 0

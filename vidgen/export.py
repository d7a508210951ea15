"""`vidgen export`: a self-contained inference bundle, and reading it back (verified).

Layout of a bundle directory:
  manifest.json         format, versions, dtype, and {file: {sha256, bytes}} for every file below
  pipeline.json         sampling defaults: frames, height, width, fps, text_max_len, shift
  vae/config.json       VAEConfig fields              vae/params.msgpack
  dit/config.json       DiT fields (make_dit)         dit/params.msgpack
  text/config.json      T5Config fields               text/params.msgpack
  tokenizer.model       the sentencepiece caption tokenizer
  latent_stats.json     per-channel latent mean and std (the transformer sees normalised latents)
A model trained on pixels (config.model.latent = "pixel") has no vae/ and no latent_stats.json;
pipeline.json says which ("latent": "vae" | "pixel").
Parameters are the EMA parameters (the raw ones when EMA is off), f32 or bf16, as flax
msgpack; no optimizer or training state. `read_bundle` checks every file against the
manifest and names the one that is missing, corrupt or unreadable. docs/bundle.md has more.

`build_components(bundle, mesh=...)` places each parameter straight into its shards: the
sharding comes from the module's logical axis names (an `eval_shape` of its init) and the
trainer's logical rules, and each device receives only its slice.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import mmap
import os
import shutil
import time
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import serialization

from vidgen.errors import VidgenError

FORMAT = "vidgen-bundle"
FORMAT_VERSION = 1
COMPONENTS = ("vae", "dit", "text")


def required_files(latent: str) -> tuple[str, ...]:
  """The files a bundle of this latent kind must hold (besides manifest.json)."""
  parts = COMPONENTS if latent == "vae" else ("dit", "text")
  files = ("pipeline.json", "tokenizer.model") + tuple(
      f"{c}/{f}" for c in parts for f in ("config.json", "params.msgpack"))
  return files + (("latent_stats.json",) if latent == "vae" else ())
DTYPES = {"f32": np.float32, "float32": np.float32, "bf16": ml_dtypes.bfloat16,
          "bfloat16": ml_dtypes.bfloat16}


@dataclasses.dataclass
class Bundle:
  """A verified bundle in memory: params are nested dicts of numpy arrays."""
  path: str
  manifest: dict
  pipeline: dict
  configs: dict[str, dict]
  params: dict[str, Any]
  latent_stats: dict[str, list[float]] | None
  tokenizer_path: str


# ---------------------------------------------------------------------------------------
# Writing.

def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _cast_tree(params: Any, dtype: Any) -> Any:
  """Host copy of a param tree, floating leaves cast to dtype (ints left alone)."""
  def cast(x):
    x = np.asarray(jax.device_get(x))
    floating = np.issubdtype(x.dtype, np.floating) or x.dtype == ml_dtypes.bfloat16
    return x.astype(dtype) if floating else x
  return jax.tree_util.tree_map(cast, nn.meta.unbox(params))


def _versions() -> dict[str, str]:
  import flax
  import vidgen
  return {"vidgen": vidgen.__version__, "jax": jax.__version__, "flax": flax.__version__,
          "numpy": np.__version__}


def write_bundle(out_dir: str, *, params: Mapping[str, Any], configs: Mapping[str, dict],
                 tokenizer_path: str, latent_stats: Mapping[str, Any] | None,
                 pipeline: Mapping[str, Any], dtype: str = "f32",
                 source: Mapping[str, Any] | None = None) -> dict:
  """Writes a bundle (see the module docstring) and returns its manifest.

  params/configs: {"vae"|"dit"|"text": params tree | JSON-able config dict}; without "vae"
  the bundle is a pixel-space model (pipeline["latent"] = "pixel").
  The directory is written under a temporary name and renamed at the end, so a killed
  export never leaves something that looks like a complete bundle.
  """
  if dtype not in DTYPES:
    raise VidgenError(f"--dtype={dtype}: choose bf16 or f32")
  pipeline = dict(pipeline)
  pipeline.setdefault("latent", "vae" if "vae" in params else "pixel")
  parts = COMPONENTS if pipeline["latent"] == "vae" else ("dit", "text")
  missing = [c for c in parts if c not in params or c not in configs]
  if pipeline["latent"] == "vae" and latent_stats is None:
    missing.append("latent statistics")
  if missing:
    raise VidgenError(f"cannot export: no parameters/config for {', '.join(missing)}")
  if not os.path.isfile(tokenizer_path):
    raise VidgenError(f"cannot export: tokenizer {tokenizer_path} does not exist")
  out_dir = os.path.abspath(out_dir)
  tmp = out_dir + ".partial"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for name in parts:
    os.makedirs(os.path.join(tmp, name))
    with open(os.path.join(tmp, name, "config.json"), "w") as f:
      json.dump(configs[name], f, indent=1, sort_keys=True)
    tree = _cast_tree(params[name], DTYPES[dtype])
    with open(os.path.join(tmp, name, "params.msgpack"), "wb") as f:
      f.write(serialization.msgpack_serialize(serialization.to_state_dict(tree)))
  shutil.copyfile(tokenizer_path, os.path.join(tmp, "tokenizer.model"))
  if pipeline["latent"] == "vae":
    stats = {k: [float(v) for v in np.asarray(latent_stats[k]).reshape(-1)]
             for k in ("mean", "std")}
    with open(os.path.join(tmp, "latent_stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
  with open(os.path.join(tmp, "pipeline.json"), "w") as f:
    json.dump(dict(pipeline), f, indent=1, sort_keys=True)
  files = {}
  for root, _, names in os.walk(tmp):
    for n in sorted(names):
      full = os.path.join(root, n)
      rel = os.path.relpath(full, tmp).replace(os.sep, "/")
      files[rel] = {"sha256": sha256_file(full), "bytes": os.path.getsize(full)}
  manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "versions": _versions(), "source": dict(source or {}),
              "param_counts": {c: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params[c])))
                               for c in parts},
              "files": dict(sorted(files.items()))}
  with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
  return manifest


# ---------------------------------------------------------------------------------------
# Reading.

def _read_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise VidgenError(f"bundle file {path} is unreadable ({what}): {e}") from None


def _read_params(path: str) -> Any:
  """A params.msgpack as nested dicts of numpy arrays.

  The file is memory-mapped rather than read into a bytes object, so the host holds one
  copy of the parameters (the arrays), not two.
  """
  try:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      return serialization.msgpack_restore(data)
  except Exception as e:  # msgpack (and mmap, on an empty file) raise several types.
    raise VidgenError(f"bundle file {path} is unreadable: {e}") from None


def read_bundle(bundle_dir: str, *, verify: bool = True) -> Bundle:
  """Reads and verifies a bundle; a missing, corrupt or unreadable file is named."""
  if not os.path.isdir(bundle_dir):
    raise VidgenError(f"no bundle directory at {bundle_dir}; make one with "
                      f"`vidgen export --workdir=... --out={bundle_dir}`")
  manifest_path = os.path.join(bundle_dir, "manifest.json")
  if not os.path.isfile(manifest_path):
    raise VidgenError(f"{manifest_path} is missing: {bundle_dir} is not a complete bundle "
                      f"(re-run vidgen export)")
  manifest = _read_json(manifest_path, "the manifest")
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise VidgenError(f"{manifest_path} is not a vidgen bundle manifest")
  if manifest.get("format_version", 0) > FORMAT_VERSION:
    raise VidgenError(f"{manifest_path}: bundle format {manifest.get('format_version')} is newer "
                      f"than this vidgen reads ({FORMAT_VERSION}); upgrade vidgen")
  files = manifest.get("files", {})
  pipeline = _read_json(os.path.join(bundle_dir, "pipeline.json"), "pipeline settings") \
      if "pipeline.json" in files and os.path.isfile(os.path.join(bundle_dir, "pipeline.json")) \
      else {}
  latent = pipeline.get("latent", "vae")
  for rel in required_files(latent):
    if rel not in files:
      raise VidgenError(f"bundle {bundle_dir} is incomplete: the manifest lists no {rel}")
  for rel, meta in files.items():
    path = os.path.join(bundle_dir, rel)
    if not os.path.isfile(path):
      raise VidgenError(f"bundle file {path} is missing (listed in the manifest)")
    if verify:
      size = os.path.getsize(path)
      if size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
        raise VidgenError(f"bundle file {path} is corrupt: its size/sha256 does not match "
                          f"manifest.json ({size} bytes vs {meta.get('bytes')}); re-export it")
  parts = COMPONENTS if latent == "vae" else ("dit", "text")
  configs = {c: _read_json(os.path.join(bundle_dir, c, "config.json"), f"{c} config")
             for c in parts}
  params = {c: _read_params(os.path.join(bundle_dir, c, "params.msgpack")) for c in parts}
  stats = None
  if latent == "vae":
    stats = _read_json(os.path.join(bundle_dir, "latent_stats.json"), "latent statistics")
    if not isinstance(stats, dict) or not all(k in stats for k in ("mean", "std")):
      raise VidgenError(f"bundle file {os.path.join(bundle_dir, 'latent_stats.json')} lacks "
                        "mean/std")
  if "text_max_len" not in pipeline:
    raise VidgenError(f"bundle file {os.path.join(bundle_dir, 'pipeline.json')} lacks "
                      "text_max_len")
  return Bundle(path=bundle_dir, manifest=manifest, pipeline=pipeline,
                configs=configs, params=params, latent_stats=stats,
                tokenizer_path=os.path.join(bundle_dir, "tokenizer.model"))


def _default_dtype() -> Any:
  return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def _module_config(module: Any) -> dict:
  """A linen module's dataclass fields as JSON (no parent/name, no dtypes)."""
  skip = {"parent", "name", "dtype", "param_dtype"}
  out = {}
  for f in dataclasses.fields(module):
    if f.name in skip:
      continue
    value = getattr(module, f.name)
    out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def param_shardings(module: nn.Module, init_args: tuple, params: Any, mesh: Any,
                    rules: Any, where: str) -> Any:
  """NamedShardings for a component's params, from the module's logical axis names.

  An `eval_shape` of the module's init gives the boxed params (no compute, no memory);
  vidgen.train.sharding maps their logical names through `rules` onto `mesh` (a dimension
  the mesh axes do not divide stays unsharded). The bundle's params must match that tree
  leaf for leaf, else the bundle was made for another config (`where` names the file).
  """
  from vidgen.train import sharding as shd
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), *init_args)["params"])
  want = nn.unbox(boxed)
  got_shapes = jax.tree_util.tree_map(np.shape, params)
  want_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), want)
  if got_shapes != want_shapes:
    raise VidgenError(f"bundle file {where}: the parameters do not match the model its "
                      "config.json describes (names or shapes differ); re-export the bundle")
  return shd.logical_to_shardings(boxed, mesh, rules)


def place_params(params: Any, shardings: Any | None = None, device: Any = None) -> Any:
  """Host params -> device arrays, leaf by leaf. With shardings, each device receives only
  its own slice of each leaf (`make_array_from_callback`), which also works when the mesh
  spans several processes; without, all goes to `device` (default: the default device)."""
  if shardings is None:
    if device is not None:
      return jax.device_put(params, device)
    return jax.tree_util.tree_map(jnp.asarray, params)
  return jax.tree_util.tree_map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
      params, shardings)


def build_components(bundle: Bundle, dtype: str | None = None, mesh: Any = None,
                     rules: Any = None, device: Any = None):
  """The pipeline's Components from a bundle's real modules (VAE or pixels, DiT, T5).

  mesh/rules: place every parameter sharded by its logical axis names (`param_shardings`);
  sampling is then jitted on the sharded params. No mesh: everything on `device` (default:
  the default device).
  """
  from vidgen.data.tokenizer import Tokenizer
  from vidgen.models import dit as dit_lib
  from vidgen.models import text as text_lib
  from vidgen.pipeline import Components

  compute = _default_dtype() if dtype is None else jnp.dtype(DTYPES.get(dtype, dtype))

  def to_dev(name, module, *init_args):
    params = bundle.params[name]
    if mesh is None:
      return place_params(params, device=device)
    where = os.path.join(bundle.path, name, "params.msgpack")
    return place_params(params, param_shardings(module, init_args, params, mesh, rules, where))

  settings = bundle.pipeline
  latent = settings.get("latent", "vae")
  try:
    dit_cfg = dict(bundle.configs["dit"])
    dit_cfg["patch"] = tuple(dit_cfg["patch"])
    dit_cfg["remat"] = "none"  # No backward pass at inference.
    dit = dit_lib.DiT(**dit_cfg, dtype=compute)
    text = text_lib.T5Encoder(text_lib.T5Config(**bundle.configs["text"]), dtype=compute)
  except (TypeError, ValueError) as e:
    raise VidgenError(f"bundle {bundle.path}: a component config does not match this vidgen's "
                      f"models: {e}") from None
  t5 = text.config
  pt, ph, pw = dit.patch
  text_params = to_dev("text", text, jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool))
  dit_params = to_dev("dit", dit, jnp.zeros((1, pt, ph, pw, dit.in_channels)),
                      jnp.zeros((1, pt)), jnp.zeros((1, 1, t5.output_dim)), jnp.ones((1, 1), bool),
                      jnp.zeros((1,)))
  fps = float(settings.get("fps", 8.0))
  tokenizer = Tokenizer(bundle.tokenizer_path)

  # Params are jit arguments, never closed over (closed-over arrays become constants).
  apply_text = jax.jit(lambda params, ids, mask: text.apply({"params": params}, ids, mask)
                       .astype(jnp.float32))
  encode_text = lambda ids, mask: apply_text(text_params, ids, mask)

  def velocity(params, x, t, emb, mask):
    fps_b = jnp.full((x.shape[0],), fps, jnp.float32)
    return dit.apply({"params": params}, x.astype(compute), t, emb.astype(compute), mask,
                     fps_b).astype(jnp.float32)

  if latent == "vae":
    from vidgen.models import vae as vae_lib
    try:
      vae_cfg = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in bundle.configs["vae"].items()}
      vae = vae_lib.VAE(vae_lib.VAEConfig(**vae_cfg).validate(), dtype=compute)
    except (TypeError, ValueError) as e:
      raise VidgenError(f"bundle {bundle.path}: vae/config.json does not match this vidgen's "
                        f"autoencoder: {e}") from None
    vae_params = to_dev("vae", vae, jnp.zeros((1, 1 + vae.config.temporal_factor,
                                               vae.config.spatial_factor,
                                               vae.config.spatial_factor, 3)))
    stats = vae_lib.LatentStats(np.asarray(bundle.latent_stats["mean"], np.float32),
                                np.asarray(bundle.latent_stats["std"], np.float32))
    tf, sf, channels = (vae.config.temporal_factor, vae.config.spatial_factor,
                        vae.config.latent_channels)

    def encode_video(video):
      mean, _ = vae_lib.encode_chunked(vae, vae_params, np.asarray(video, np.float32))
      return stats.normalize(mean.astype(jnp.float32))

    def decode_latents(z):  # Chunked in time: memory of one latent frame at a time.
      z = stats.denormalize(jnp.asarray(z, jnp.float32))
      return vae_lib.decode_chunked(vae, vae_params, z, to_host=True)
  else:  # The transformer works on pixels in [-1, 1].
    tf, sf, channels = 1, 1, 3
    encode_video = lambda video: jnp.asarray(video, jnp.float32)
    decode_latents = lambda z: np.asarray(z, np.float32)

  shift = settings.get("shift")
  return Components(
      tokenize=tokenizer.encode, encode_text=encode_text, velocity=velocity,
      velocity_params=dit_params, encode_video=encode_video, decode_latents=decode_latents,
      text_max_len=int(settings["text_max_len"]), temporal_factor=tf, spatial_factor=sf,
      latent_channels=channels, patch=tuple(dit.patch), frames=int(settings.get("frames", 17)),
      height=int(settings.get("height", 32)), width=int(settings.get("width", 32)), fps=fps,
      shift=float(shift) if shift else None,
      shift_base_tokens=int(settings.get("shift_base_tokens", 256)),
      shift_base=float(settings.get("shift_base", 1.0)), mesh=mesh, latent=latent,
      params={"dit": dit_params, "text": text_params,
              **({"vae": vae_params} if latent == "vae" else {})})


# ---------------------------------------------------------------------------------------
# The command.

def _restore_params(workdir: str, step: int | None = None) -> tuple[Any, dict, int]:
  """(EMA params, or the raw ones when EMA was off; config JSON; step) of checkpoint `step`
  (None: the newest) in a workdir, restored on the host without a target."""
  import orbax.checkpoint as ocp
  from vidgen.train import checkpoint as ckpt
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise VidgenError(f"{workdir} has no checkpoints/ directory; train first "
                      f"(vidgen train --config=configs/t2v_tiny.py --workdir={workdir})")
  manager = ckpt.make_manager(workdir, keep=1 << 30, async_save=False)
  kept = sorted(manager.all_steps())
  if not kept:
    raise VidgenError(f"{workdir}/checkpoints holds no finished checkpoint")
  if step is None:
    step = kept[-1]
  elif step not in kept:
    raise VidgenError(f"{workdir}/checkpoints has no step {step}; it keeps steps "
                      f"{', '.join(map(str, kept))} (train.keep_period keeps every Nth)")
  config = ckpt.restore_config(manager, step)
  # Read only the params subtree (the optimizer state, often twice their size, stays on disk).
  path = os.path.join(str(manager.directory), str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path)
  tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
  if isinstance(tree, dict) and ("ema_params" in tree or "params" in tree):
    key = "ema_params" if tree.get("ema_params") else "params"
    sub = {key: tree[key]}
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), sub),
        restore_args=jax.tree_util.tree_map(
            lambda m: ocp.RestoreArgs(restore_type=np.ndarray), sub),
        partial_restore=True))
    return restored[key], config, step
  # Another layout: restore everything and pick the params.
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  state = restored["state"]
  get = (lambda k: state.get(k)) if isinstance(state, dict) else (lambda k: getattr(state, k))
  params = get("ema_params") or get("params")
  return jax.device_get(params), config, step


def export_workdir(workdir: str, out_dir: str, dtype: str = "f32",
                   step: int | None = None) -> dict:
  """Exports a text-to-video workdir's checkpoint `step` (None: the newest; EMA params) as a
  bundle."""
  import ml_collections
  from vidgen.train.tasks import get_task
  params, config_json, step = _restore_params(workdir, step)
  config = ml_collections.ConfigDict(config_json)
  if config.get("task") != "t2v":
    raise VidgenError(f"{workdir} trained task {config.get('task')!r}; export needs a "
                      "text-to-video (t2v) workdir")
  task = get_task(config)  # Builds the modules (and loads a frozen VAE / text encoder).
  return export_params(task, params, out_dir, dtype=dtype,
                       source={"workdir": os.path.abspath(workdir), "step": int(step)})


def export_params(task: Any, params: Any, out_dir: str, *, dtype: str = "f32",
                  source: Mapping[str, Any] | None = None) -> dict:
  """Writes a bundle of a T2VTask's trained params ({"dit", "text"}) and its frozen parts."""
  from vidgen.data.config import tokenizer_path
  config = task.config
  m = config.model
  text_params = (task.text_frozen["params"] if task.text_frozen is not None
                 else params["text"])
  parts_params = {"dit": params["dit"], "text": text_params}
  parts_configs = {"dit": _module_config(task.model),
                   "text": dataclasses.asdict(task.text_model.config)}
  stats, vae = None, task.vae
  if task.latent == "cached":  # Trained on cached latents: the bundle needs their decoder.
    from vidgen.train import t2v_task
    if not m.vae.get("workdir"):
      raise VidgenError("a transformer trained on cached latents exports with the autoencoder "
                        "that encoded them: set config.model.vae.workdir (its training workdir)")
    vae = t2v_task.load_frozen_vae(t2v_task.vae_workdir(m))
  if vae is not None:
    module, vae_params, latent_stats = vae
    parts_params["vae"] = vae_params
    parts_configs["vae"] = {k: list(v) if isinstance(v, tuple) else v
                            for k, v in dataclasses.asdict(module.config).items()}
    stats = latent_stats.to_dict()
  buckets = [tuple(b) for b in config.data.get("buckets", [])]
  video_buckets = [b for b in buckets if b[0] > 1] or buckets or [(17, 32, 32)]
  frames, height, width = (int(v) for v in video_buckets[0][:3])
  d = m.diffusion
  pipeline = {"latent": "pixel" if vae is None else "vae", "frames": frames, "height": height,
              "width": width,
              "fps": float(config.data.world.fps) if "world" in config.data else 8.0,
              "text_max_len": int(config.data.tokenizer.max_len),
              "shift": float(d.shift) if d.shift > 0 else None,
              "shift_base_tokens": int(d.shift_base_tokens), "shift_base": float(d.shift_base)}
  return write_bundle(out_dir, params=parts_params, configs=parts_configs,
                      tokenizer_path=tokenizer_path(config.data), latent_stats=stats,
                      pipeline=pipeline, dtype=dtype, source=dict(source or {}))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="vidgen export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a text-to-video training workdir")
  parser.add_argument("--out", required=True, help="the bundle directory to write")
  parser.add_argument("--dtype", default="f32", choices=("f32", "bf16"),
                      help="parameter dtype in the bundle")
  parser.add_argument("--step", type=int, help="the checkpoint to export (default: newest)")
  args = parser.parse_args(argv)
  manifest = export_workdir(args.workdir, args.out, args.dtype, args.step)
  total = sum(m["bytes"] for m in manifest["files"].values())
  print(f"wrote {args.out}: {len(manifest['files'])} files, {total / 2**20:.1f} MiB, "
        f"params {manifest['param_counts']}")
  return 0

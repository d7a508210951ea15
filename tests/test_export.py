"""Bundles of tiny random real models (VAE, DiT, T5): export, verified reload (on one
device and sharded over a mesh of the 8 forced CPU devices), `vidgen sample`."""
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vidgen import export
from vidgen.data import tokenizer as tok_lib
from vidgen.data import video_io
from vidgen.errors import VidgenError
from vidgen.main import main as vidgen_main
from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib
from vidgen.models import vae as vae_lib
from vidgen.pipeline import Pipeline

CAPTIONS = [f"a {c} {s} moves {d}" for c in ("red", "blue", "green", "yellow")
            for s in ("ball", "box", "star") for d in ("left", "right", "up", "down")]
SIZE = 16
FAST = dict(steps=2, guidance=2.0)
ONE = jax.devices()[:1]  # Pipeline.load on one device: no mesh.
PROMPTS = ["a red ball moves left", "a blue box"]


def random_params(module, *args, seed=0):
  """Random params of a module's init shapes, without compiling its init (slow on CPU)."""
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), *args)["params"]))
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  rng = np.random.default_rng(seed)
  scale = lambda shape: 1.0 / np.sqrt(max(1, int(np.prod(shape[:-1]))))
  return tree.unflatten([(rng.standard_normal(x.shape) * scale(x.shape)).astype(np.float32)
                         for x in leaves])


def tiny_parts(tmp_dir: str, latent: str = "pixel", seed: int = 0) -> dict:
  """Random tiny DiT + T5 (+ VAE) and a trained tokenizer: write_bundle's arguments.

  "pixel" is the CPU default recipe (configs/t2v_tiny.py): the DiT works on pixels.
  """
  tok_path = tok_lib.train(CAPTIONS, os.path.join(tmp_dir, "tok", "tokenizer.model"), 64)
  vocab = tok_lib.Tokenizer(tok_path).vocab_size
  t5_cfg = text_lib.get_t5_config("tiny", vocab_size=vocab, d_model=32, d_kv=8, num_heads=2,
                                  d_ff=32, num_layers=1)
  text = text_lib.T5Encoder(t5_cfg)
  params = {"text": random_params(text, jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool),
                                  seed=seed)}
  configs = {"text": dataclasses.asdict(t5_cfg)}
  stats = None
  if latent == "vae":
    vae_cfg = vae_lib.VAEConfig(temporal_factor=4, spatial_factor=4, latent_channels=4,
                                encoder_channels=(8, 8, 8), decoder_channels=(8, 8, 8))
    params["vae"] = random_params(vae_lib.VAE(vae_cfg), jnp.zeros((1, 5, SIZE, SIZE, 3)),
                                  seed=seed + 1)
    configs["vae"] = {k: list(v) if isinstance(v, tuple) else v
                      for k, v in dataclasses.asdict(vae_cfg).items()}
    stats = {"mean": np.zeros(4), "std": np.full(4, 0.5)}
    dit = dit_lib.make_dit("tiny", width=32, depth=1, num_heads=2, in_channels=4)
    z = jnp.zeros((1, 2, SIZE // 4, SIZE // 4, 4))
  else:
    dit = dit_lib.make_dit("tiny", width=32, depth=1, num_heads=2, in_channels=3,
                           patch=(1, 4, 4))
    z = jnp.zeros((1, 2, SIZE, SIZE, 3))
  params["dit"] = random_params(dit, z, jnp.zeros((1, 2)), jnp.zeros((1, 8, 32)),
                                jnp.ones((1, 8), bool), seed=seed + 2)
  configs["dit"] = export._module_config(dit)
  return dict(params=params, configs=configs, tokenizer_path=tok_path, latent_stats=stats,
              pipeline={"latent": latent, "frames": 5, "height": SIZE, "width": SIZE,
                        "fps": 8.0, "text_max_len": 16, "shift": None,
                        "shift_base_tokens": 256, "shift_base": 1.0})


def _bundle(tmp_path_factory, latent):
  tmp = str(tmp_path_factory.mktemp(f"bundle_{latent}"))
  parts = tiny_parts(tmp, latent)
  out = os.path.join(tmp, "bundle")
  export.write_bundle(out, dtype="f32", **parts)
  return out, parts


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  return _bundle(tmp_path_factory, "pixel")


@pytest.fixture(scope="module")
def vae_bundle(tmp_path_factory):
  return _bundle(tmp_path_factory, "vae")


def in_memory_pipeline(parts) -> Pipeline:
  """A pipeline straight from the training-side parameters (no files in between)."""
  stats = parts["latent_stats"]
  b = export.Bundle(path="<memory>", manifest={}, pipeline=parts["pipeline"],
                    configs=parts["configs"], params=parts["params"],
                    latent_stats=stats and {k: list(map(float, v)) for k, v in stats.items()},
                    tokenizer_path=parts["tokenizer_path"])
  return Pipeline(export.build_components(b))


@pytest.fixture(scope="module")
def reference(bundle):
  """The bundle loaded on one device, and its videos for PROMPTS (compiled once)."""
  pipe = Pipeline.load(bundle[0], devices=ONE)
  return pipe, pipe.text_to_video(PROMPTS, seed=3, **FAST)


def test_bundle_reloads_and_samples_identically(bundle, reference):
  out, parts = bundle
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert set(manifest["files"]) == set(export.required_files("pixel"))
  assert manifest["versions"]["jax"] == jax.__version__ and manifest["dtype"] == "f32"
  loaded, a = reference
  assert loaded.c.mesh is None
  direct = in_memory_pipeline(parts)
  b = direct.text_to_video(PROMPTS, seed=3, **FAST)
  assert a.video.shape == (2, 5, SIZE, SIZE, 3) and a.video.dtype == np.uint8
  np.testing.assert_array_equal(a.latents, b.latents)
  np.testing.assert_array_equal(a.video, b.video)
  assert not np.array_equal(a.latents[0], a.latents[1])


def test_sharded_load_follows_the_logical_rules_and_samples_the_same(bundle, reference):
  out, parts = bundle
  # Default with 8 devices: all of them on fsdp. Placement only (nothing compiles here).
  auto = Pipeline.load(out)
  assert dict(auto.c.mesh.shape) == dict(data=1, fsdp=8, tensor=1, sequence=1)
  wi = auto.c.velocity_params["blocks"]["mlp"]["wi_0"]["kernel"]  # (layers, embed, mlp)
  assert wi.sharding.spec == P(None, "fsdp", "tensor")  # tensor has size 1 here
  assert wi.addressable_shards[0].data.shape == (1, 32 // 8, 128)
  del auto
  pipe = Pipeline.load(out, mesh_shape={"fsdp": 4, "tensor": 2})
  assert dict(pipe.c.mesh.shape) == dict(data=1, fsdp=4, tensor=2, sequence=1)
  dit = pipe.c.velocity_params
  specs = {
      ("blocks", "mlp", "wi_0", "kernel"): P(None, "fsdp", "tensor"),  # (layers, embed, mlp)
      ("blocks", "mlp", "wo", "kernel"): P(None, "tensor", "fsdp"),
      ("blocks", "self_attention", "q", "kernel"): P(None, "fsdp", "tensor", None),
      ("final_linear", "kernel"): P("fsdp", None),  # (embed, patch)
      ("blocks", "cross_norm", "scale"): P(None, None),  # norms stay whole
  }
  for path, spec in specs.items():
    leaf = dit
    for key in path:
      leaf = leaf[key]
    assert leaf.sharding.mesh == pipe.c.mesh and leaf.sharding.spec == spec, (path, leaf.sharding)
  wi = dit["blocks"]["mlp"]["wi_0"]["kernel"]
  assert {s.data.shape for s in wi.addressable_shards} == {(1, 32 // 4, 128 // 2)}
  np.testing.assert_array_equal(np.asarray(wi), parts["params"]["dit"]["blocks"]["mlp"]["wi_0"]
                                ["kernel"])
  # The text encoder too: its token table (vocab, embed) -> (tensor, fsdp), with vocab left
  # whole when tensor does not divide it.
  table = pipe.c.params["text"]["token_embed"]["embedding"]
  vocab_axis = "tensor" if table.shape[0] % 2 == 0 else None
  assert table.sharding.spec == P(vocab_axis, "fsdp"), table.sharding
  assert pipe.c.params["dit"] is dit
  # Same video as on one device (sharded reductions reorder float sums: not bit-exact).
  _, want = reference
  got = pipe.text_to_video(PROMPTS, seed=3, **FAST)
  np.testing.assert_allclose(got.latents, want.latents, atol=1e-4)
  diff = np.abs(got.video.astype(int) - want.video.astype(int))
  assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_bad_mesh_is_refused_clearly(bundle):
  out, parts = bundle
  cases = [
      (dict(mesh_shape={"fsdp": 3}), "multiply to 3 but there are 8"),
      (dict(mesh_shape={"model": 2}), "unknown axes ['model']"),
      (dict(mesh=jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))),
       "not among the logical rules"),
      (dict(mesh=jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Explicit,))),
       "not Auto"),
      (dict(mesh=jax.make_mesh((8,), ("fsdp",)), mesh_shape={"fsdp": 8}), "either"),
  ]
  for kw, needle in cases:
    with pytest.raises(VidgenError) as e:
      Pipeline.load(out, **kw)
    assert needle in str(e.value), (kw, str(e.value))
  # Params that do not match the config are refused by name (checked before placement).
  from vidgen.pipeline import make_mesh, mesh_rules
  mesh = make_mesh()
  b = export.Bundle(path="b", manifest={}, pipeline=parts["pipeline"],
                    configs={**parts["configs"], "dit": {**parts["configs"]["dit"], "width": 64}},
                    params=parts["params"], latent_stats=None,
                    tokenizer_path=parts["tokenizer_path"])
  with pytest.raises(VidgenError, match="dit/params.msgpack: the parameters do not match"):
    export.build_components(b, mesh=mesh, rules=mesh_rules(mesh))


@pytest.mark.slow  # The VAE compiles for ~1 minute on a loaded 2-core CPU.
def test_vae_bundle_reloads_identically_and_keeps_conditioning_frames(vae_bundle):
  out, parts = vae_bundle
  assert set(json.load(open(os.path.join(out, "manifest.json")))["files"]) == set(
      export.required_files("vae"))
  pipe, direct = Pipeline.load(out, devices=ONE), in_memory_pipeline(parts)
  rng = np.random.default_rng(0)
  clip = rng.integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
  a = pipe.image_to_video("a green star", clip[0], frames=5, **FAST)
  b = direct.image_to_video("a green star", clip[0], frames=5, **FAST)
  np.testing.assert_array_equal(a.video, b.video)
  assert a.video.shape == (1, 5, SIZE, SIZE, 3) and a.video.dtype == np.uint8
  np.testing.assert_array_equal(a.latents[0, 0], np.asarray(pipe.encode(clip[:1]))[0, 0])
  ext = pipe.extend("a red ball", clip, frames=9, window=5, **FAST)
  np.testing.assert_array_equal(ext.latents[0, :2], np.asarray(pipe.encode(clip))[0])
  assert ext.video.shape == (1, 9, SIZE, SIZE, 3)
  # The causal decoder: the extension's first frames decode exactly as the clip's own latents.
  np.testing.assert_array_equal(ext.video[0, :5], pipe.decode(pipe.encode(clip))[0])


def test_bf16_bundle_loads(tmp_path, bundle):
  src, parts = bundle
  out = str(tmp_path / "bf16")
  export.write_bundle(out, dtype="bf16", **parts)
  b = export.read_bundle(out)
  dtypes = {x.dtype for c in ("dit", "text") for x in jax.tree_util.tree_leaves(b.params[c])}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  gen = Pipeline.load(out, devices=ONE).text_to_image("a blue box", **FAST)
  assert gen.video.shape == (1, 1, SIZE, SIZE, 3)
  size = lambda d: os.path.getsize(os.path.join(d, "dit", "params.msgpack"))
  assert size(out) < 0.6 * size(src)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_corrupt_or_incomplete_bundle_is_refused_naming_the_file(tmp_path, bundle, damage):
  src, _ = bundle
  import shutil
  out = str(tmp_path / "b")
  shutil.copytree(src, out)
  target = {"flip": "dit/params.msgpack", "truncate": "text/params.msgpack",
            "delete": "tokenizer.model", "manifest": "manifest.json"}[damage]
  path = os.path.join(out, target)
  if damage == "flip":
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
  elif damage == "truncate":
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
  else:
    os.remove(path)
  with pytest.raises(VidgenError, match=target.replace("/", "/")):
    Pipeline.load(out)


def test_sample_command_writes_videos_and_contact_sheets(tmp_path, bundle, capsys):
  out, _ = bundle
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a red ball moves left\n\na blue box moves up\n")
  rc = vidgen_main(["sample", f"--bundle={out}", "--devices=1", f"--prompts-file={prompts}",
                    "--frames=6",
                    "--height=17", "--steps=2", "--no-progress", f"--out={tmp_path / 'v.mp4'}"])
  assert rc == 0
  err = capsys.readouterr().err
  assert "17x16 (HxW)" in err and "using 16x16" in err
  for i in range(2):
    frames, _ = video_io.decode_video(open(tmp_path / f"v_{i:03d}.mp4", "rb").read())
    assert frames.shape == (6, SIZE, SIZE, 3)
    sheet = video_io.decode_image(open(tmp_path / f"v_{i:03d}.png", "rb").read())
    assert sheet.shape[1] == SIZE
  # image_to_video from a gif'd frame of another size: scaled and center-cropped.
  img = tmp_path / "in.png"
  img.write_bytes(video_io.encode_png(np.full((24, 40, 3), 128, np.uint8)))
  rc = vidgen_main(["sample", f"--bundle={out}", "--devices=1", "--prompt=a red ball",
                    "--mode=image_to_video",
                    f"--image={img}", "--steps=2", "--no-progress", f"--out={tmp_path / 'i.gif'}"])
  assert rc == 0 and (tmp_path / "i.gif").exists() and (tmp_path / "i.png").exists()
  assert "center-cropped" in capsys.readouterr().err


def test_sample_command_user_errors_have_no_traceback(tmp_path, bundle, capsys):
  out, _ = bundle
  cases = [
      (["--prompt=", "--out=x.mp4"], "empty"),
      (["--prompt=a", "--mode=restyle", f"--video={tmp_path / 'missing.mp4'}",
        "--out=x.mp4"], "missing.mp4"),
      (["--prompt=a", "--out=x.avi"], ".mp4 or .gif"),
  ]
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  cases.append((["--prompt=a", "--mode=restyle", f"--video={bad}", "--out=x.mp4"], "bad.mp4"))
  img = tmp_path / "wide.png"
  img.write_bytes(video_io.encode_png(np.zeros((16, 32, 3), np.uint8)))
  cases.append((["--prompt=a", "--mode=image_to_video", f"--image={img}", "--no-resize",
                 "--steps=1", "--out=" + str(tmp_path / "y.mp4")], "no-resize"))
  cases.append((["--prompt=a", "--mode=loop", "--image-first", "--out=x.mp4"],
                "--image-first is for --mode=text_to_video"))
  cases.append((["--prompt=a", "--mesh=fsdp", "--out=x.mp4"], "AXIS=SIZE"))
  cases.append((["--prompt=a", "--mesh=fsdp=3", "--out=x.mp4"], "multiply to 3"))
  cases.append((["--prompt=a", "--devices=9", "--out=x.mp4"], "there are 8 devices"))
  for args, needle in cases:
    rc = vidgen_main(["sample", f"--bundle={out}", "--no-progress"] + args)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, (args, err)
  rc = vidgen_main(["sample", f"--bundle={tmp_path / 'nothing'}", "--prompt=a", "--out=z.mp4"])
  assert rc == 2 and "no bundle directory" in capsys.readouterr().err


@pytest.mark.parametrize("bags", ["off", "same", "none", "apart"])
def test_export_from_a_t2v_workdir_matches_the_task(tmp_path, monkeypatch, capsys, bags):
  """A checkpoint as the trainer writes it (configs/t2v_tiny.py, pixel latents) exports to a
  bundle whose model gives the task's own velocity from the EMA params; --step picks an older
  kept checkpoint. With `text.clause_bags` the bundle's encoder adds the same clause bags
  (twice the text width). With `text.image_bags` "none" the bundle's transformer, as the task's,
  reads no bags on one-frame inputs (text to image), and with "apart" reads them through
  weights of their own; videos read them always."""
  import orbax.checkpoint as ocp
  from vidgen import config as config_lib
  from vidgen.train import checkpoint as ckpt
  from vidgen.train.tasks import get_task
  config = config_lib.load("configs/t2v_tiny.py:tiny,pixel",
                           ["model.depth=1", "model.width=32", "model.num_heads=2",
                            f"model.text.clause_bags={bags != 'off'}",
                            f"model.text.image_bags={'same' if bags == 'off' else bags}"])
  clause_bags = bags != "off"
  tok_path = tok_lib.train(CAPTIONS, str(tmp_path / "tok" / "tokenizer.model"), 64)
  config.data.tokenizer.path = tok_path
  task = get_task(config)
  batch = {"video": jnp.zeros((1, 8, 32, 32, 3), jnp.uint8),
           "tokens": jnp.zeros((1, 32), jnp.int32), "text_mask": jnp.ones((1, 32), bool),
           "fps": jnp.full((1,), 8.0)}
  shapes = jax.eval_shape(lambda: nn.unbox(task.init(jax.random.key(0), batch)))
  rng = np.random.default_rng(0)
  rand = lambda: jax.tree_util.tree_map(
      lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  params, ema, older_ema = rand(), rand(), rand()
  manager = ckpt.make_manager(str(tmp_path / "work"), keep=2, async_save=False)
  opt_state = {"mu": rand(), "nu": rand()}  # as large as the params twice over
  for step, step_ema in ((5, older_ema), (7, ema)):
    state = {"step": np.int32(step), "params": params, "ema_params": step_ema,
             "opt_state": opt_state}
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(ckpt.config_to_json(config))))
  manager.wait_until_finished()
  # Export reads only the params subtree: a whole-state restore (optimizer too) is refused.
  whole = ocp.CheckpointManager.restore
  def restore(self, step, args=None, **kw):
    assert "state" not in args, "export restored the whole training state"
    return whole(self, step, args=args, **kw)
  monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
  out = str(tmp_path / "bundle")
  rc = vidgen_main(["export", f"--workdir={tmp_path / 'work'}", f"--out={out}", "--dtype=f32"])
  assert rc == 0
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["source"]["step"] == 7 and "vae/params.msgpack" not in manifest["files"]
  # Only the EMA params of the transformer and text encoder: no optimizer or training state.
  assert set(manifest["files"]) == set(export.required_files("pixel"))
  size = lambda tree: sum(np.size(x) for x in jax.tree_util.tree_leaves(tree))
  assert manifest["param_counts"] == {"dit": size(ema["dit"]), "text": size(ema["text"])}
  bundle_dit = export.read_bundle(out).params["dit"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, bundle_dit, ema["dit"])
  pipe = Pipeline.load(out, devices=ONE)
  assert (pipe.c.frames, pipe.c.height, pipe.c.width, pipe.c.patch) == (8, 32, 32, (1, 4, 4))
  ids, mask = pipe.c.tokenize(["a red ball moves left"], 32)
  x = jnp.asarray(rng.standard_normal((1, 3, 32, 32, 3)), jnp.float32)
  t = jnp.array([[0.0, 0.5, 0.9]])
  emb = pipe.c.encode_text(jnp.asarray(ids), jnp.asarray(mask))
  want_emb = task.text(ema, jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(emb, want_emb, atol=1e-5)
  assert emb.shape[-1] == task.text_model.config.d_model * (2 if clause_bags else 1)
  assert bool(task.text_model.config.clause_boundaries) == clause_bags
  want = task.velocity(ema, x, t, want_emb, jnp.asarray(mask), jnp.full((1,), 8.0))
  got = pipe.c.velocity(pipe.c.velocity_params, x, t, emb, jnp.asarray(mask))
  np.testing.assert_allclose(got, want, atol=1e-5)
  other = task.velocity(params, x, t, want_emb, jnp.asarray(mask), jnp.full((1,), 8.0))
  assert not np.allclose(other, want, atol=1e-3)  # the bundle holds the EMA params
  d = task.text_model.config.d_model
  assert task.model.image_text_width == (d if bags in ("none", "apart") else 0)
  assert task.model.image_text_apart == (bags == "apart")
  bundle_dit = export.read_bundle(out).configs["dit"]
  assert bundle_dit["image_text_width"] == task.model.image_text_width
  assert bundle_dit["image_text_apart"] == task.model.image_text_apart
  velocity = lambda x, t, e: pipe.c.velocity(pipe.c.velocity_params, x, t, e, jnp.asarray(mask))
  image, t1 = x[:, :1], t[:, 1:2]
  plain = emb.at[..., d:].set(0.0) if clause_bags else emb
  np.testing.assert_allclose(velocity(image, t1, emb),
                             task.velocity(ema, image, t1, want_emb, jnp.asarray(mask),
                                           jnp.full((1,), 8.0)), atol=1e-5)
  # Images read the bags unless image_bags is "none"; videos always read them.
  assert np.allclose(velocity(image, t1, plain), velocity(image, t1, emb),
                     atol=1e-6) == (bags in ("off", "none"))
  assert np.allclose(velocity(x, t, plain), got, atol=1e-6) == (not clause_bags)

  older = str(tmp_path / "older")
  assert vidgen_main(["export", f"--workdir={tmp_path / 'work'}", f"--out={older}",
                      "--step=5"]) == 0
  assert json.load(open(os.path.join(older, "manifest.json")))["source"]["step"] == 5
  jax.tree_util.tree_map(np.testing.assert_array_equal, export.read_bundle(older).params["dit"],
                         older_ema["dit"])
  capsys.readouterr()
  rc = vidgen_main(["export", f"--workdir={tmp_path / 'work'}", f"--out={older}", "--step=6"])
  err = capsys.readouterr().err
  assert rc == 2 and "no step 6; it keeps steps 5, 7" in err and "Traceback" not in err

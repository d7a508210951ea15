"""The evaluation report: JSON with every number, HTML naming every metric, GIFs, TensorBoard."""
import glob
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image, ImageSequence

from vidgen.evaluate import report

ATTRS = ("color", "shape", "direction", "all_correct")


def estimate(acc, n=50):
  return {"accuracy": acc, "ci_low": acc - 0.05, "ci_high": min(1.0, acc + 0.05), "n": n}


def sections():
  oracle = [{"row": name, **{a: estimate(v - 0.01 * i) for i, a in enumerate(ATTRS)}}
            for name, v in (("generated", 0.7), ("real", 0.98), ("shuffled", 0.2),
                            ("static", 0.4))]
  return {
      "Oracle accuracy (95% CI)": oracle,
      "FVD / KVD": [{"set": "generated vs real", "fvd": 312.5, "kvd": 0.125, "n": 16},
                    {"set": "real vs real", "fvd": 41.25, "kvd": -0.0031, "n": 16}],
      "Autoencoder": [{"split": "validation", "psnr": 31.7, "ssim": 0.913}],
      "Validation loss": [{"bucket": "16x32x32", "loss_t0.25": 0.41, "loss_t0.75": 0.62,
                           "note": None}],
  }


def clip(color, frames=6, size=16):
  video = np.zeros((frames, size, size, 3), np.uint8)
  for t in range(frames):
    video[t, 4:10, t:t + 6] = color
  return video


@pytest.fixture
def written(tmp_path):
  clips = [("a red square moves right", [clip((230, 30, 30)), clip((230, 30, 30), frames=5)],
            clip((230, 30, 30))),
           ("a <blue> square & friends", clip((50, 90, 255)), None)]
  paths = report.write_report(str(tmp_path / "out"), sections(), clips, fps=5.0,
                              notes={"FVD / KVD": "real vs real is the floor at this N"})
  return tmp_path / "out", paths


def test_json_holds_every_number(written):
  out, paths = written
  doc = json.loads(open(paths["json"]).read())
  assert doc["sections"] == json.loads(json.dumps(sections()))
  scalars = doc["scalars"]
  assert scalars["FVD_KVD/generated_vs_real/fvd"] == 312.5
  assert scalars["FVD_KVD/real_vs_real/kvd"] == -0.0031
  assert scalars["Autoencoder/validation/psnr"] == 31.7
  assert scalars["Validation_loss/16x32x32/loss_t0.75"] == 0.62
  assert scalars["Oracle_accuracy_95_CI/static/shape"] == pytest.approx(0.39)
  assert scalars["Oracle_accuracy_95_CI/real/color/ci_low"] == pytest.approx(0.93)
  # Every numeric cell is there: 4 rows x 4 attrs x 3 numbers (+ n), 2 x 3, 2, 2.
  assert len(scalars) == 4 * 4 * 3 + 2 * 3 + 2 + 2
  assert doc["clips"][0]["generated"] == ["clips/0000_gen0.gif", "clips/0000_gen1.gif"]
  assert doc["clips"][1]["real"] is None


def test_html_names_every_metric_and_value(written):
  _, paths = written
  page = open(paths["html"], encoding="utf-8").read()
  for title, table in sections().items():
    assert report.html.escape(title) in page
    for col in report.columns(table):
      assert f"<th>{col}</th>" in page
  for name in ("generated", "real", "shuffled", "static"):
    assert f"<td>{name}</td>" in page
  assert "0.700 [0.650, 0.750]" in page  # An estimate with its 95% CI.
  assert "312.5" in page and "-0.0031" in page and "31.7" in page
  assert "real vs real is the floor at this N" in page
  assert "a &lt;blue&gt; square &amp; friends" in page  # Prompts are escaped.
  assert "<blue>" not in page
  for gif in ("clips/0000_gen0.gif", "clips/0000_gen1.gif", "clips/0000_real.gif",
              "clips/0001_gen0.gif"):
    assert f"src='{gif}'" in page


def test_gifs_are_animated_and_keep_colors(written):
  out, _ = written
  assert sorted(os.path.basename(p) for p in glob.glob(str(out / "clips" / "*.gif"))) == [
      "0000_gen0.gif", "0000_gen1.gif", "0000_real.gif", "0001_gen0.gif"]
  with Image.open(out / "clips" / "0000_gen0.gif") as im:
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    assert im.info["duration"] == 200 and im.info["loop"] == 0
  assert len(frames) == 6
  np.testing.assert_array_equal(np.stack(frames), clip((230, 30, 30)))
  with Image.open(out / "clips" / "0000_gen1.gif") as im:
    assert im.n_frames == 5


def test_cells_format_and_json_is_strict():
  assert report.format_cell(None) == "n/a"
  assert report.format_cell(float("nan")) == "n/a"
  assert report.format_cell({"accuracy": None, "ci_low": None, "ci_high": None}) == "n/a"
  assert report.format_cell({"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == (
      "0.500 [0.250, 0.750]")
  assert report.format_cell({"accuracy": 1.0, "ci_low": 0.875, "ci_high": 1.0}) == (
      "1.000 [0.875, 1.000]")
  assert report.format_cell({"mean": 312.5, "ci_low": 290.0, "ci_high": 330.0}) == (
      "312.5 [290, 330]")
  assert report.format_cell(np.int64(7)) == "7"
  doc = report.to_jsonable({"a": np.float32(1.5), "b": float("inf"), "c": np.arange(2)})
  assert doc == {"a": 1.5, "b": None, "c": [0, 1]}


def _read_events(logdir):
  """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  out = []
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.append((v.tag, event.step, v.simple_value))
  return out


def test_log_scalars_to_tensorboard(tmp_path):
  logged = report.log_scalars(str(tmp_path / "tb"), sections(), step=1200)
  events = {tag: (step, value) for tag, step, value in _read_events(str(tmp_path / "tb"))}
  assert set(events) == {f"eval/{k}" for k in logged}
  assert events["eval/FVD_KVD/generated_vs_real/fvd"] == (1200, pytest.approx(312.5))
  assert events["eval/Autoencoder/validation/ssim"] == (1200, pytest.approx(0.913))


# --- vidgen evaluate: the text-to-video run around a generation function -----------------


def test_evaluate_t2v_scores_generated_beside_reference_rows(tmp_path):
  from vidgen.evaluate import commands, oracle
  spec = commands.VideoSpec(frames=9, height=32, width=32, fps=8.0)
  clips = commands.world_prompts("heldout", 6, spec)
  calls = []

  def perfect(prompts, seed):  # Returns the real clip of each prompt: the oracle's ceiling.
    calls.append(seed)
    assert list(prompts) == [c["captions"][0] for c in clips]
    return np.stack([c["video"] for c in clips])

  sections, grid, extra = commands.evaluate_t2v(perfect, spec, num_prompts=6, seeds=2,
                                                with_fvd=False, grid=4, n_boot=50)
  assert calls == [0, 1]
  (title, table), = sections.items()
  rows = {r["row"]: r for r in table}
  groups = [f"generated: {oracle.scene_group(c['metadata'])}" for c in clips]
  assert list(rows) == (["generated"] + [g for g in rows if g in groups]
                        + ["real", "shuffled", "static"])
  assert set(groups) == {r for r in rows if r.startswith("generated: ")}
  for attr, cell in rows["generated"].items():
    if attr != "row":
      assert cell["accuracy"] == rows["real"][attr]["accuracy"], attr
      assert cell["n"] == 2 * rows["real"][attr]["n"], attr  # Two seeds per prompt.
      # The scene rows split the same clips: their counts add up to the whole.
      assert sum(rows[g][attr]["n"] for g in set(groups)) == cell["n"], attr
  for group in set(groups):  # Two seeds: each of the group's prompts counted twice.
    assert rows[group]["count"]["n"] == 2 * groups.count(group)
  assert rows["real"]["all_correct"]["accuracy"] > rows["shuffled"]["all_correct"]["accuracy"]
  assert len(grid) == 4 and len(grid[0][1]) == 2
  np.testing.assert_array_equal(grid[3][2], clips[3]["video"])

  def frozen(prompts, seed):  # The first frame held: must score as the static reference.
    return np.stack([np.repeat(c["video"][:1], spec.frames, axis=0) for c in clips])

  seen = []

  def background_only(videos):  # An autoencoder that loses every object.
    seen.append(videos.shape)
    return np.repeat(np.repeat(videos[:, :, :1, :1], 32, axis=2), 32, axis=3)

  sections, _, _ = commands.evaluate_t2v(frozen, spec, num_prompts=6, with_fvd=False,
                                         n_boot=50, reconstruct=background_only)
  rows = {r["row"]: r for r in sections[title]}
  assert rows["generated"]["moves"]["accuracy"] == rows["static"]["moves"]["accuracy"]
  # The autoencoder row scores the reconstructions of the prompts' own real clips.
  assert seen == [(6, 9, 32, 32, 3)]
  assert rows["autoencoder"]["color"]["accuracy"] == 0.0
  assert rows["autoencoder"]["background"]["accuracy"] == 1.0
  assert rows["real"]["color"]["accuracy"] == 1.0

  paths = report.write_report(str(tmp_path), sections, grid, extra=extra)
  doc = json.loads(open(paths["json"]).read())
  assert doc["prompts"] == [c["captions"][0] for c in clips]
  assert f"{report._slug(title)}/static/moves" in doc["scalars"]


def test_evaluate_command_refuses_bad_usage_and_reads_val_loss(tmp_path):
  from vidgen.errors import VidgenError
  from vidgen.evaluate import commands
  with pytest.raises(VidgenError, match="--bundle"):
    commands.main([])
  with pytest.raises(VidgenError, match="go together"):
    commands.main(["--videos=x"])
  with pytest.raises(VidgenError, match="--step picks a checkpoint of a t2v --workdir"):
    commands.main(["--bundle=b", "--step=4000"])
  loss = tmp_path / "loss.json"
  loss.write_text(json.dumps({"8x32x32": {"t=0.25": 0.4, "t=0.75": 0.6}}))
  assert commands.read_table(str(loss)) == [{"row": "8x32x32", "t=0.25": 0.4, "t=0.75": 0.6}]


def toy_pipeline():
  """vidgen.pipeline.Pipeline over small analytic models (a pooling autoencoder)."""
  import jax
  import jax.numpy as jnp
  from vidgen.pipeline import Components, Pipeline

  def tokenize(texts, max_len):
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, text in enumerate(texts):
      row = [3 + sum(map(ord, w)) % 90 for w in text.split()][:max_len]
      ids[i, :len(row)] = row
    return ids, ids != 0

  table = jax.random.normal(jax.random.key(0), (100, 3))
  pool = lambda v, f: np.asarray(v, np.float32).reshape(
      v.shape[0], v.shape[1], v.shape[2] // f, f, v.shape[3] // f, f, 3).mean((3, 5))

  def decode(z):  # Latent 0 is frame 0, each later latent four frames; 2x2 pixels a latent.
    z = np.asarray(z, np.float32)
    return np.concatenate([z[:, :1], np.repeat(z[:, 1:], 4, 1)], 1).repeat(2, 2).repeat(2, 3)

  comps = Components(
      tokenize=tokenize, encode_text=lambda ids, mask: table[ids] * mask[..., None],
      velocity=lambda params, x, t, emb, mask: x - jnp.tanh(emb.sum(1))[:, None, None, None],
      encode_video=lambda v: jnp.asarray(pool(v, 2)), decode_latents=decode, text_max_len=16,
      temporal_factor=4, spatial_factor=2, latent_channels=3, patch=(1, 2, 2), frames=9,
      height=32, width=32, fps=8.0, shift=1.0)
  return Pipeline(comps, notify=lambda msg: None)


def test_evaluate_t2v_through_a_real_pipeline(tmp_path):
  """The generation step is vidgen.pipeline.Pipeline.text_to_video."""
  from vidgen.evaluate import commands
  pipe = toy_pipeline()
  spec = commands.fit_spec_to_pipeline(pipe, commands.VideoSpec(10, 30, 33, 4.0))
  assert spec == commands.VideoSpec(9, 32, 32, 8.0)
  generate = commands.pipeline_generate_fn(pipe, spec, steps=2, guidance=1.0, sampler="euler",
                                           batch_size=2)
  sections, grid, extra = commands.evaluate_t2v(generate, spec, num_prompts=3, seeds=1,
                                                with_fvd=False, n_boot=20)
  (table_rows,) = sections.values()
  generated = table_rows[0]
  assert generated["row"] == "generated" and generated["count"]["n"] == 3
  assert grid[0][1][0].shape == (9, 32, 32, 3) and grid[0][1][0].dtype == np.uint8
  assert set(extra["timing"]) == {"prompts_s", "generation_s", "oracle_s"}
  report.write_report(str(tmp_path), sections, grid, extra=extra)
  assert len(glob.glob(str(tmp_path / "clips" / "*.gif"))) == 6


def test_evaluate_command_end_to_end(tmp_path, monkeypatch, capsys):
  """`vidgen evaluate --bundle=...` with the bundle loader swapped for the toy pipeline."""
  from vidgen.evaluate import commands
  monkeypatch.setattr(commands, "load_pipeline", lambda bundle, workdir, step: toy_pipeline())
  loss = tmp_path / "loss.json"
  loss.write_text(json.dumps([{"bucket": "9x32x32", "t=0.5": 0.5}]))
  out = tmp_path / "eval"
  argv = ["--bundle=unused", "--num-prompts=2", "--seeds=2", "--steps=2", "--sampler=euler",
          "--sizes=9x32x32,5x16x16", "--no-fvd", f"--val-loss={loss}", f"--out={out}"]
  assert commands.main(argv) == 0
  doc = json.loads((out / "report.json").read_text())
  oracle_titles = [t for t in doc["sections"] if t.startswith(commands.ORACLE_TITLE)]
  assert oracle_titles == [f"{commands.ORACLE_TITLE} @ 9x32x32",
                           f"{commands.ORACLE_TITLE} @ 5x16x16"]
  assert doc["sections"]["Validation loss per bucket"] == [{"bucket": "9x32x32", "t=0.5": 0.5}]
  assert [r["video"]["frames"] for r in doc["runs"]] == [9, 5]
  assert len(doc["clips"]) == 4 and doc["clips"][2]["prompt"].startswith("[5x16x16] ")
  assert len(list((out / "clips").glob("*.gif"))) == 4 * 2 + 4  # 2 seeds + real per clip.
  page = (out / "report.html").read_text()
  assert commands.NOTES[commands.ORACLE_TITLE][:40].replace("'", "&#x27;") in page
  assert "wrote" in capsys.readouterr().out


def test_sizes_come_from_flag_then_config_then_the_model():
  import types
  import ml_collections
  from vidgen.errors import VidgenError
  from vidgen.evaluate import commands
  pipe = types.SimpleNamespace(c=types.SimpleNamespace(frames=17, height=32, width=32, fps=8.0))
  args, _ = commands.parse_args(["--bundle=b", "--height=64"])
  assert commands._specs(args, None, pipe) == [commands.VideoSpec(17, 64, 32, 8.0)]
  config = ml_collections.ConfigDict({"eval": {"sizes": [(9, 32, 32), (17, 48, 64)]}})
  assert [(s.frames, s.height, s.width) for s in commands._specs(args, config, pipe)] == [
      (9, 32, 32), (17, 48, 64)]
  args, _ = commands.parse_args(["--bundle=b", "--sizes=5x16x16, 9x32x48"])
  assert [(s.frames, s.height, s.width) for s in commands._specs(args, config, pipe)] == [
      (5, 16, 16), (9, 32, 48)]
  with pytest.raises(VidgenError, match="FRAMESxHEIGHTxWIDTH"):
    commands.parse_sizes("17x32")


def test_recon_result_becomes_a_table_per_bucket():
  from vidgen.evaluate import commands
  result = {"buckets": {"17x32x32": {"psnr": 30.5, "ssim": 0.91, "clips": 8},
                        "1x32x32": {"psnr": 33.0, "ssim": 0.95, "clips": 4}},
            "psnr": 31.3, "ssim": 0.923, "clips": 12, "png": "recon.png"}
  rows = commands.recon_table(result)
  assert rows == [{"bucket": "17x32x32", "psnr": 30.5, "ssim": 0.91, "clips": 8},
                  {"bucket": "1x32x32", "psnr": 33.0, "ssim": 0.95, "clips": 4},
                  {"bucket": "all", "psnr": 31.3, "ssim": 0.923, "clips": 12}]


def test_evaluate_command_on_an_autoencoder_workdir(tmp_path, monkeypatch):
  from vidgen.evaluate import commands, recon
  calls = []

  def fake_evaluate_vae(config, workdir):  # The real one needs a trained workdir.
    calls.append((config.task, workdir))
    return {"buckets": {"9x32x32": {"psnr": 29.0, "ssim": 0.9, "clips": 2}}, "psnr": 29.0,
            "ssim": 0.9, "clips": 2, "png": "recon.png"}

  monkeypatch.setattr(recon, "evaluate_vae", fake_evaluate_vae)
  cfg = tmp_path / "vae_cfg.py"
  cfg.write_text("import ml_collections\n\ndef get_config():\n"
                 "  return ml_collections.ConfigDict({'task': 'vae', 'seed': 0})\n")
  assert commands.main([f"--config={cfg}", f"--workdir={tmp_path}", "--no-fvd"]) == 0
  assert calls == [("vae", str(tmp_path))]
  doc = json.loads((tmp_path / "eval" / "report.json").read_text())
  assert doc["scalars"]["Autoencoder_reconstruction_PSNR_dB_SSIM/all/psnr"] == 29.0
  assert doc["recon"]["png"] == "recon.png"

"""`vidgen run`: the whole main job end to end (smoke recipe), resume, and refusal of bad configs.

The end-to-end test runs `vidgen run` in a subprocess on one CPU device (the smoke recipe's
batches are smaller than the 8 forced test devices).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from vidgen import config as config_lib
from vidgen import run
from vidgen import world
from vidgen.errors import VidgenError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"


@pytest.fixture
def own_tmp():
  """A private temporary folder: pytest's shared basetemp is pruned by other pytest sessions
  running at the same time (it keeps the newest three), which deleted files mid-test."""
  with tempfile.TemporaryDirectory(prefix="vidgen_test_run_") as path:
    yield path


def _vidgen_cmd(workdir: str, *extra: str) -> tuple[list[str], dict[str, str]]:
  """`vidgen run` of the smoke recipe on one CPU device: (argv, environment)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  return [sys.executable, "-m", "vidgen.main", "run", f"--workdir={workdir}",
          f"--config={SMOKE}", *extra], env


def _vidgen_run(workdir: str, *extra: str) -> subprocess.CompletedProcess:
  cmd, env = _vidgen_cmd(workdir, *extra)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# The smoke recipe with batches that split over the 8 forced test devices.
EIGHT = ("vae.buckets=[(9, 32, 32, 8)]", "t2v.buckets=[(9, 32, 32, 8)]")


def _resolved(*overrides: str, workdir: str = "/tmp/w"):
  return run.resolve(config_lib.load(SMOKE, EIGHT + overrides), workdir)


def test_resolve_puts_data_in_the_workdir():
  config = run.resolve(config_lib.load(os.path.join(ROOT, "configs", "default.py")), "/tmp/w")
  assert config.data.data_dir == "/tmp/w/data"
  assert config.budget_minutes == 60  # The README's main job: a 60-minute budget.


def test_budget_plans_steps_from_timed_steps(tmp_path):
  """The steps that fit the share: calibration steps + (share - time spent) / s a step."""
  workdir = tmp_path / "vae"
  workdir.mkdir()
  rows = [{"step": 10, "perf/seconds_per_step": 9.0},  # Holds the compile: not used.
          {"step": 20, "perf/seconds_per_step": 0.4},
          {"step": 30, "perf/seconds_per_step": 3.0},  # A second bucket compiled: not used.
          {"step": 40, "perf/seconds_per_step": 0.6}]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert run._seconds_per_step(str(workdir), after=10) == pytest.approx(0.5)
  assert run._seconds_per_step(str(tmp_path), after=10) is None


def test_plan_steps_times_the_trainer_and_keeps_the_plan(own_tmp):
  """With a budget, plan_steps trains calibration_steps real steps, then fits the share."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  from tests import _toy_task  # pylint: disable=g-import-not-at-top
  config = _resolved("budget_minutes=0.5", "budget.calibration_steps=6", workdir=own_tmp)
  job = run.Job(config, own_tmp)
  toy = _toy_task.get_config()
  toy.train.steps = 1000  # The cap.
  toy.train.warmup_steps = 10
  workdir = os.path.join(own_tmp, "toy")
  steps = job.plan_steps("vae", toy, workdir, _toy_task.ToyTask(toy))
  plan = job.state.stages["vae_plan"]
  assert run._latest_step(workdir) == 6  # The timed steps were trained and saved.
  assert plan["steps"] == steps and 6 <= steps <= 1000
  share_s = 0.5 * 60 * config.budget.vae_share
  expected = 6 + (share_s - plan["calibration_s"] - plan["start_overhead_s"]) / plan[
      "seconds_per_step"]
  assert steps == int(min(1000, max(6, expected)))
  # Asked again (a resumed run), the recorded plan is kept and nothing is trained.
  again = run.Job(config, own_tmp).plan_steps("vae", toy, workdir,
                                                    _toy_task.ToyTask(toy))
  assert again == steps and run._latest_step(workdir) == 6


def test_stage_configs_share_data_and_point_t2v_at_the_vae_export():
  config = _resolved()
  vae = run.stage_config(config, "vae", "/tmp/w")
  t2v = run.stage_config(config, "t2v", "/tmp/w")
  assert vae.data.world == t2v.data.world == config.data.world
  assert [tuple(b) for b in vae.data.buckets] == [tuple(b) for b in config.vae.buckets]
  assert t2v.model.latent == "cached"
  assert t2v.model.vae.workdir == "/tmp/w/vae"
  assert run.vae_export_dir("/tmp/w") == "/tmp/w/vae/vae_export"
  assert "buckets" not in t2v


@pytest.mark.parametrize("override, message", [
    ("t2v.buckets=[(8, 32, 32, 8)]", "t2v.buckets"),  # 8 frames: not 1 + 4k for the VAE.
    ("vae.buckets=[(9, 32, 32, 4)]", "not a multiple of 8"),  # 8 devices.
    # The transformer's 9-frame clips give a third latent frame the autoencoder never saw.
    ("vae.buckets=[(5, 32, 32, 8)]", "autoencoder trains on at most 5"),
    ("eval.splits=('nope',)", "unknown split"),
    ("samples.modes=('dance',)", "unknown mode"),
    ("samples.scale=0", "samples.scale"),
    ("budget.t2v_share=0.9", "budget"),
    ("data.world.height=8", "at least 16"),
    # Cached text embeddings need an encoder that does not change while the DiT trains.
    ("t2v.model.text.frozen=False", "text.cached=True needs a frozen text encoder"),
])
def test_bad_configs_are_refused(override, message):
  config = _resolved(override)
  with pytest.raises(VidgenError, match=message):
    run.validate(config, "/tmp/w")


def test_position_bias_init_with_a_checkpoint_is_refused_before_work_starts():
  config = _resolved("t2v.model.text.checkpoint=/no/such/t5",
                     "t2v.model.text.relpos_slopes=(0.5, 0.25, 0.5, 0.25)")
  with pytest.raises(VidgenError, match="drop one of them"):
    run.validate(config, "/tmp/w")


def test_valid_smoke_config_passes():
  run.validate(_resolved(), "/tmp/w")


def test_large_recipe_is_valid_on_eight_devices():
  config = run.resolve(config_lib.load(SMOKE.replace(":smoke", ":large")), "/tmp/w")
  run.validate(config, "/tmp/w")
  assert tuple(config.t2v.buckets[0][:3]) == (33, 64, 64)
  assert config.t2v.model.variant == "30M" and tuple(config.t2v.model.patch) == (1, 2, 2)


def test_long_recipe_gives_the_transformer_the_extra_time():
  default = run.resolve(config_lib.load(SMOKE.replace(":smoke", "")), "/tmp/w")
  eight = ("vae.buckets=[(9, 32, 32, 8), (1, 32, 32, 16)]",)  # Batches of 3 clips: not 8.
  long = run.resolve(config_lib.load(SMOKE.replace(":smoke", ":long"), eight), "/tmp/w")
  run.validate(long, "/tmp/w")
  assert long.budget_minutes <= 180  # Issue 8's bound for a longer CPU recipe.
  minutes = lambda c, stage: c.budget_minutes * c.budget[f"{stage}_share"]
  assert minutes(long, "vae") == pytest.approx(minutes(default, "vae"), rel=0.1)
  assert minutes(long, "t2v") > 4 * minutes(default, "t2v")
  # The step cap stays above what the budget buys at 0.05 s a step (twice this CPU's speed).
  assert long.t2v.train.steps > minutes(long, "t2v") * 60 / 0.05
  # The local, causal text position bias binds two-object captions; the default (and its
  # shipped bundle) keeps T5's.
  assert long.t2v.model.text.relpos_causal and len(long.t2v.model.text.relpos_slopes) == 4
  assert not default.t2v.model.text.relpos_slopes
  # Clause bags on video steps only (images read the plain features).
  assert long.t2v.model.text.clause_bags and long.t2v.model.text.image_bags == "none"
  assert not default.t2v.model.text.clause_bags


def test_stage_is_done_only_with_outputs_and_same_settings(tmp_path):
  state = run.RunState(str(tmp_path))
  out = tmp_path / "out.txt"
  out.write_text("x")
  state.record("a", {"done": True, "fingerprint": "k", "seconds": 1.0})
  reread = run.RunState(str(tmp_path))
  assert reread.is_done("a", "k", {"o": str(out)})
  assert not reread.is_done("a", "other", {"o": str(out)})
  out.unlink()
  assert not reread.is_done("a", "k", {"o": str(out)})


def test_bad_override_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  proc = _vidgen_run(str(workdir), "--config.t2v.train.steps=0")
  assert proc.returncode == 2, proc.stderr
  assert "train.steps=0" in proc.stderr
  assert not workdir.exists()
  proc = _vidgen_run(str(workdir), "--config.no.such.key=1")
  assert proc.returncode == 2 and "unknown config key" in proc.stderr
  assert not workdir.exists()


@pytest.mark.slow
def test_smoke_run_end_to_end_then_resume(own_tmp):
  workdir = os.path.join(own_tmp, "run")
  t0 = time.time()
  proc = _vidgen_run(workdir)
  first = time.time() - t0
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  paths = summary["paths"]
  assert os.path.isfile(paths["tokenizer"])
  assert os.path.isfile(os.path.join(paths["vae_export"], "params.msgpack"))
  assert os.path.isfile(os.path.join(paths["vae_export"], "latent_stats.json"))
  assert os.path.isfile(os.path.join(paths["bundle"], "manifest.json"))
  assert os.path.isfile(os.path.join(workdir, "eval", "heldout", "report.json"))
  with open(os.path.join(workdir, "samples", "index.json")) as f:
    samples = json.load(f)
  assert {s["mode"] for s in samples} == set(run.MODES)
  assert all(os.path.getsize(s["path"]) > 0 for s in samples)
  # Image to video and extend continue heldout clip 0 under its own caption.
  config = _resolved()
  w = config.data.world
  caption = world.generate_clip("heldout", 0, seed=w.seed, height=w.height, width=w.width,
                                frames=w.frames, fps=w.fps)["captions"][0]
  prompt = {s["mode"]: s["prompt"] for s in samples}
  assert prompt["image_to_video"] == prompt["extend"] == caption
  assert prompt["text_to_video"] == prompt["restyle"] == config.samples.prompts[0] != caption
  # Written samples.scale times larger, each beside the heldout clips it started from.
  inputs = {s["mode"]: s["inputs"] for s in samples if s["path"].endswith("_00.gif")}
  assert [len(inputs[m]) for m in run.MODES] == [0, 0, 1, 1, 0, 2, 1]
  first_frame = lambda path: np.asarray(Image.open(path).convert("RGB"))
  scale = config.samples.scale
  assert scale > 1
  assert first_frame(samples[0]["path"]).shape[:2] == (w.height * scale, w.width * scale)
  real = world.generate_clip("heldout", 1, seed=w.seed, height=w.height, width=w.width,
                             frames=w.frames, fps=w.fps)["video"]
  np.testing.assert_array_equal(first_frame(inputs["connect"][1])[::scale, ::scale], real[0])
  stages = summary["stages"]
  assert stages["vae"]["step"] == 4 and stages["t2v"]["step"] == 4
  assert stages["t2v"]["steps_run"] == 4
  stage_names = [s.name for s in run.Job(_resolved(), workdir).stages()]
  assert "cache" in stage_names  # The default trains the transformer on cached latents.
  # ... and cached text embeddings of its frozen text encoder, exported in the bundle as is.
  assert set(stages["cache"]) == {"latents", "text"}
  assert os.path.isfile(os.path.join(stages["cache"]["text"], "manifest.json"))
  assert set(summary["stage_seconds"]) == set(stage_names)
  assert summary["headline"]["heldout/color"]["accuracy"] is not None
  assert summary["skipped"] == []

  # Again on the same workdir: everything is skipped, nothing retrains.
  mtime = os.path.getmtime(os.path.join(paths["bundle"], "manifest.json"))
  t0 = time.time()
  proc = _vidgen_run(workdir)
  second = time.time() - t0
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    again = json.load(f)
  assert again["skipped"] == list(summary["stage_seconds"])
  assert os.path.getmtime(os.path.join(paths["bundle"], "manifest.json")) == mtime
  assert second < first / 2

  # More transformer steps: only t2v and what follows it run; t2v resumes at step 4.
  proc = _vidgen_run(workdir, "--config.t2v.train.steps=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    more = json.load(f)
  assert more["skipped"] == ["data", "tokenizer", "vae", "vae_eval", "cache"]
  assert more["stages"]["t2v"]["resumed_from"] == 4
  assert more["stages"]["t2v"]["steps_run"] == 2


@pytest.mark.slow
def test_sigterm_mid_training_stops_the_job_and_the_same_command_resumes(own_tmp):
  """A trainer stopped by SIGTERM saves a checkpoint; the stage is not marked done and
  nothing downstream (export, evaluation) runs on the half-trained weights."""
  workdir = os.path.join(own_tmp, "run")
  cmd, env = _vidgen_cmd(workdir, "--config.t2v.train.steps=100000")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  in_t2v = False
  for line in proc.stdout:  # The t2v trainer logs every 2 steps once its handler is set.
    in_t2v = in_t2v or line.startswith("[t2v]")
    if in_t2v and line.startswith("step 4:"):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 2, out[-3000:] + err[-3000:]
  assert "run the same command again" in err
  with open(os.path.join(workdir, "run_state.json")) as f:
    stages = json.load(f)["stages"]
  assert stages["vae"]["done"] and "t2v" not in stages and "export" not in stages
  assert not os.path.exists(os.path.join(workdir, "bundle"))
  stopped = run._latest_step(os.path.join(workdir, "t2v"))
  assert 4 <= stopped < 100000

  # The same job finishes from that checkpoint (a few more steps, so the test is short).
  proc = _vidgen_run(workdir, f"--config.t2v.train.steps={stopped + 2}")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["skipped"][:3] == ["data", "tokenizer", "vae"]
  assert summary["stages"]["t2v"]["resumed_from"] == stopped
  assert summary["stages"]["t2v"]["step"] == stopped + 2
  assert os.path.isfile(os.path.join(summary["paths"]["bundle"], "manifest.json"))

"""Trainer behaviour on 8 forced CPU devices with the toy task: determinism, resume,
non-finite skips, SIGTERM, gradient accumulation, optimizer pieces, config checks."""
import os
import shutil
import signal
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import _toy_task  # noqa: E402


from vidgen.errors import VidgenError
from vidgen.train import checkpoint as ckpt
from vidgen.train import config as train_config
from vidgen.train import optimizer as opt_lib
from vidgen.train import step as step_lib
from vidgen.train import loop as loop_module
from vidgen.train.loop import train
from vidgen.train.state import TrainState


def _config(**train_overrides):
  c = _toy_task.get_config()
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def _run(config, workdir, **kw):
  return train(config, str(workdir), task=_toy_task.ToyTask(config), **kw)


@pytest.fixture(scope="module")
def reference():
  """One uninterrupted 8-step run."""
  path = tempfile.mkdtemp(prefix="vidgen_train_ref_")
  yield _run(_config(), path)
  shutil.rmtree(path, ignore_errors=True)


def _losses(summary):
  return [summary["losses"][s] for s in sorted(summary["losses"])]


def test_same_seed_same_losses_and_training_helps(reference, tmp_path):
  again = _run(_config(), tmp_path / "again")
  assert _losses(again) == _losses(reference)  # bitwise
  assert len(_losses(reference)) == 8 and all(np.isfinite(_losses(reference)))
  assert _losses(reference)[-1] < 0.5 * _losses(reference)[0]
  other = _config()
  other.seed = 1
  assert _losses(_run(other, tmp_path / "seed1"))[0] != _losses(reference)[0]


def test_resume_equals_uninterrupted(reference, tmp_path):
  first = _run(_config(), tmp_path, stop_at=3)
  assert first["preempted"] and first["step"] == 3 and first["checkpoint_steps"] == [3]
  second = _run(_config(), tmp_path)
  assert second["resumed_from"] == 3 and second["step"] == 8
  resumed = [first["losses"][s] for s in (1, 2, 3)] + [second["losses"][s] for s in range(4, 9)]
  assert resumed == _losses(reference)
  np.testing.assert_array_equal(
      jax.device_get(second["final_state"].ema_params["up"]["kernel"]),
      jax.device_get(reference["final_state"].ema_params["up"]["kernel"]))


def test_sigterm_saves_and_exits_then_resumes(reference, tmp_path, monkeypatch):
  calls = []

  def to_global(local, mesh):
    calls.append(1)
    if len(calls) == 4:  # SIGTERM arrives while step 4 is being prepared.
      os.kill(os.getpid(), signal.SIGTERM)
    return real_to_global(local, mesh)

  real_to_global = loop_module.shd.to_global
  monkeypatch.setattr(loop_module.shd, "to_global", to_global)
  first = _run(_config(), tmp_path)
  monkeypatch.undo()
  assert first["preempted"] and first["step"] == 4 and first["checkpoint_steps"] == [4]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed afterwards
  second = _run(_config(), tmp_path)
  assert second["resumed_from"] == 4 and not second["preempted"]
  assert [second["losses"][s] for s in range(5, 9)] == _losses(reference)[4:]


def test_nonfinite_step_is_skipped_and_counted(tmp_path):
  config = _config()
  config.data.nan_batches = (2,)  # batch index 2 feeds step 3
  summary = _run(config, tmp_path)
  assert summary["skipped"] == 1 and summary["step"] == 8
  assert np.isnan(summary["losses"][3])
  assert all(np.isfinite(summary["losses"][s]) for s in (1, 2, 4, 5, 6, 7, 8))
  state = summary["final_state"]
  assert int(state.nonfinite_streak) == 0 and int(state.nonfinite_total) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_too_many_nonfinite_stops_with_good_checkpoint(tmp_path):
  config = _config(checkpoint_every=2, max_consecutive_nonfinite=2, async_checkpoint=False)
  config.data.nan_batches = (2, 3, 4, 5, 6, 7)  # steps 3.. are NaN
  with pytest.raises(VidgenError, match="consecutive steps up to step 4 had a non-finite"):
    _run(config, tmp_path)
  manager = ckpt.make_manager(str(tmp_path), keep=3)
  step = manager.latest_step()
  assert step in (2, 4)
  restored = ckpt.restore_state(manager, step, None)  # It restores, with finite params.
  assert int(restored["step"]) == step
  leaves = jax.tree.leaves(restored["params"])
  assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)
  manager.close()


class _Quadratic:
  """loss = mean((x @ w - y)^2): no randomness, so micro-batching must not change grads."""

  def loss(self, params, batch, rng):
    del rng
    err = batch["x"] @ params["w"] - batch["y"]
    return jnp.mean(err ** 2), {"err": jnp.mean(jnp.abs(err))}


def _quadratic_state(tx):
  params = {"w": jnp.ones((3, 2)), "bias": jnp.zeros((2,))}
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, opt_state=tx.init(params), ema_params={},
                    rng=jax.random.PRNGKey(0), nonfinite_streak=zero, nonfinite_total=zero)


def test_gradient_accumulation_matches_full_batch():
  t = _config(warmup_steps=0).train
  tx, schedule = opt_lib.make_optimizer(t)
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
  out = {}
  for n in (1, 4):
    step = jax.jit(step_lib.make_train_step(_Quadratic(), tx, schedule, microbatches=n))
    out[n] = step(_quadratic_state(tx), batch)
  np.testing.assert_allclose(out[4][1]["train/loss"], out[1][1]["train/loss"], rtol=1e-6)
  np.testing.assert_allclose(out[4][1]["train/grad_norm"], out[1][1]["train/grad_norm"],
                             rtol=1e-6)
  np.testing.assert_allclose(out[4][0].params["w"], out[1][0].params["w"], rtol=1e-6)
  assert not np.allclose(out[1][0].params["w"], 1.0)


def test_ema_and_lr_in_step():
  t = _config(ema_decay=0.5, warmup_steps=4, lr=1.0).train
  tx, schedule = opt_lib.make_optimizer(t)
  state = _quadratic_state(tx).replace(ema_params={"w": jnp.ones((3, 2)),
                                                   "bias": jnp.zeros((2,))})
  batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros((4, 2))}
  step = jax.jit(step_lib.make_train_step(_Quadratic(), tx, schedule, ema_decay=0.5))
  state, m = step(state, batch)
  assert float(m["train/lr"]) == 0.0  # warm-up starts at 0
  state, m = step(state, batch)
  assert float(m["train/lr"]) == pytest.approx(0.25)
  new_w = np.asarray(state.params["w"])
  assert not np.allclose(new_w, 1.0)
  # ema_2 = 0.5 * ema_1 + 0.5 * w_2, ema_1 = 0.5 * 1 + 0.5 * w_1 (w_1 = 1: lr was 0).
  np.testing.assert_allclose(state.ema_params["w"], 0.5 * 1.0 + 0.5 * new_w, rtol=1e-6)


def test_ema_warmup_forgets_the_initial_params():
  t = _config(ema_decay=0.999, warmup_steps=0, lr=0.1).train
  tx, schedule = opt_lib.make_optimizer(t)
  batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros((4, 2))}
  ema_w = {}
  for warmup in (False, True):
    step = jax.jit(step_lib.make_train_step(_Quadratic(), tx, schedule, ema_decay=0.999,
                                            ema_warmup=warmup))
    state = _quadratic_state(tx).replace(ema_params={"w": jnp.ones((3, 2)),
                                                     "bias": jnp.zeros((2,))})
    for _ in range(200):
      state, _ = step(state, batch)
    ema_w[warmup] = np.asarray(state.ema_params["w"])
  w = np.asarray(state.params["w"])  # Both runs train the same params; only the EMA differs.
  # Fixed decay: 0.999 ** 200 = 82 % of the average is still the initial w = 1.
  assert np.abs(ema_w[False] - 1.0).max() < 0.25 * np.abs(w - 1.0).max()
  # Warm-up: decay (1 + s) / (10 + s) early, so the average follows the recent params.
  assert np.abs(ema_w[True] - w).max() < 0.2 * np.abs(w - 1.0).max()
  assert float(step_lib.ema_decay_at(jnp.int32(0), 0.999, True)) == pytest.approx(0.1)
  assert float(step_lib.ema_decay_at(jnp.int32(10 ** 6), 0.999, True)) == pytest.approx(0.999)
  assert float(step_lib.ema_decay_at(jnp.int32(0), 0.999, False)) == pytest.approx(0.999)


def test_decay_mask_by_name():
  params = {"proj_in": {"kernel": 1, "bias": 2}, "norm": {"scale": 3},
            "text_embed": {"embedding": 4}, "up": {"kernel": 5}}
  mask = opt_lib.decay_mask(params, ("bias", "scale", "norm", "embedding"))
  assert mask == {"proj_in": {"kernel": True, "bias": False}, "norm": {"scale": False},
                  "text_embed": {"embedding": False}, "up": {"kernel": True}}


def test_schedules():
  t = _config(lr=1.0, warmup_steps=10, steps=110, final_lr_fraction=0.1).train
  cos = opt_lib.make_schedule(t)
  assert float(cos(0)) == 0.0 and float(cos(5)) == pytest.approx(0.5)
  assert float(cos(10)) == pytest.approx(1.0) and float(cos(110)) == pytest.approx(0.1)
  assert float(cos(60)) == pytest.approx(0.55, rel=1e-4)
  t.schedule = "constant"
  const = opt_lib.make_schedule(t)
  assert float(const(5)) == pytest.approx(0.5) and float(const(100)) == pytest.approx(1.0)


def test_config_validation_messages():
  c = _config()
  c.mesh.fsdp, c.mesh.data = 3, 1
  with pytest.raises(VidgenError, match="multiply to 3 but there are 8"):
    train_config.validate(c, 8)
  c.mesh.fsdp, c.mesh.data = -1, -1
  with pytest.raises(VidgenError, match="at most one"):
    train_config.validate(c, 8)
  c.mesh.data, c.mesh.tensor = 1, 3
  with pytest.raises(VidgenError, match="do not divide"):
    train_config.validate(c, 8)
  c = _config(schedule="linear")
  with pytest.raises(VidgenError, match="cosine"):
    train_config.validate(c, 8)
  c = _config()
  c.mesh.rules = (("batch", "pipeline"),)
  with pytest.raises(VidgenError, match="pipeline"):
    train_config.validate(c, 8)
  c = _config()
  c.mesh.dcn_data, c.mesh.fsdp = 2, -1
  assert train_config.mesh_shapes(c.mesh, 8)[0]["fsdp"] == 4


def test_global_batch_must_divide(tmp_path):
  c = _config(microbatches=3)
  with pytest.raises(VidgenError, match="multiple of the data x fsdp devices"):
    _run(c, tmp_path)


def test_metrics_samples_and_tensorboard(tmp_path):
  calls = []

  class Sampling(_toy_task.ToyTask):
    def sample(self, params, step, workdir):
      calls.append((step, workdir, sorted(params)))
      return {"clip": np.full((3, 4, 4, 3), step, np.uint8)}

  config = _config(sample_every=3, log_every=4)
  summary = train(config, str(tmp_path), task=Sampling(config))
  assert [c[0] for c in calls] == [3, 6] and calls[0][1] == str(tmp_path)
  assert calls[0][2] == sorted(summary["final_state"].params)
  import json
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [4, 8]
  for key in ("train/loss", "train/mse", "train/grad_norm", "train/param_norm", "train/lr",
              "perf/steps_per_s", "perf/tokens_per_s", "train/skipped_total"):
    assert key in rows[-1], key
  # tokens/s = steps/s x tokens per step (8 clips x 32 pixels).
  assert rows[-1]["perf/tokens_per_s"] == pytest.approx(rows[-1]["perf/steps_per_s"] * 256,
                                                        rel=1e-6)
  assert rows[-1]["train/loss"] == pytest.approx(
      np.mean([summary["losses"][s] for s in (5, 6, 7, 8)]), rel=1e-6)
  events = os.listdir(tmp_path / "tensorboard")
  assert any(e.startswith("events.out.tfevents") for e in events)


def test_eval_hook_runs_every_eval_every_steps_on_ema_params_and_is_logged(tmp_path):
  calls = []

  class Evaluating(_toy_task.ToyTask):
    def evaluate(self, params, step, workdir):
      calls.append((step, workdir, params))
      leaf = jax.tree.leaves(params)[0]
      return {"val/loss": float(step) / 10, "val/leaf": float(jnp.sum(leaf))}

  config = _config(eval_every=3, log_every=4, steps=6)
  summary = train(config, str(tmp_path), task=Evaluating(config))
  assert [c[0] for c in calls] == [3, 6] and calls[0][1] == str(tmp_path)
  # The EMA params (the toy config has EMA on), not the raw ones.
  final = summary["final_state"]
  jax.tree.map(np.testing.assert_array_equal, calls[1][2], final.ema_params)
  assert not np.allclose(np.asarray(jax.tree.leaves(final.ema_params)[0]),
                         np.asarray(jax.tree.leaves(final.params)[0]))
  assert summary["evals"][3]["val/loss"] == pytest.approx(0.3)
  assert summary["evals"][6]["val/leaf"] == pytest.approx(
      float(jnp.sum(jax.tree.leaves(final.ema_params)[0])))
  import json
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = {r["step"]: r for r in rows if "val/loss" in r}
  assert sorted(evals) == [3, 6] and evals[6]["val/loss"] == pytest.approx(0.6)
  assert all("train/loss" not in r for r in evals.values())  # Own rows, not mixed in.
  # eval_every=0 never calls it; negative is refused.
  calls.clear()
  train(_config(eval_every=0, steps=2), str(tmp_path / "off"), task=Evaluating(_config()))
  assert calls == []
  with pytest.raises(VidgenError, match="eval_every"):
    train_config.validate(_config(eval_every=-1), jax.device_count())


def test_mfu_and_peak_table():
  from vidgen.train import metrics
  assert metrics.mfu(1e12, 1.0, 2, 1e12) == pytest.approx(0.5)
  assert metrics.mfu(1e12, 1.0, 2, None) is None
  assert metrics.peak_flops(jax.devices()[0]) is None  # CPU: unknown, no MFU reported

  class FakeDevice:
    device_kind = "TPU v5p"
  assert metrics.peak_flops(FakeDevice()) == 459e12


def test_distributed_needs_flags_or_environment(monkeypatch):
  from vidgen.train import distributed
  for k in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS",
            "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(k, raising=False)
  assert distributed.initialize() is False  # one process: nothing to join
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  assert not distributed._multi_host_env()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
  assert distributed._multi_host_env()
  with pytest.raises(VidgenError, match="--num_processes"):
    distributed.initialize("127.0.0.1:1234")

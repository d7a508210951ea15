"""Validation loss at fixed timesteps: deterministic, per bucket, respects `valid`, and lower
for better params; the trainer's t2v eval hook."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vidgen.errors import VidgenError
from vidgen.evaluate import val_loss as vl
from vidgen.train import t2v_task

TIMESTEPS = (0.2, 0.5, 0.8)


def t2v_config() -> ml_collections.ConfigDict:
  """A micro pixel-space T2V (configs/t2v_tiny.py:tiny,pixel with a 1-block 32-wide DiT)."""
  c = ml_collections.ConfigDict()
  c.task = "t2v"
  c.data = ml_collections.ConfigDict(dict(tokenizer=dict(vocab_size=64),
                                          eval_split="validation"))
  c.model = t2v_task.get_model_config("tiny")
  c.model.width, c.model.num_heads, c.model.depth = 32, 2, 1
  c.model.patch = (1, 4, 4)
  c.model.latent = "pixel"
  c.train = ml_collections.ConfigDict(dict(eval_every=1, eval_max_batches=0))
  return c


def batch(seed: int, frames: int, b: int = 2, valid=None) -> dict:
  rng = np.random.default_rng(seed)
  out = dict(video=rng.integers(0, 256, (b, frames, 16, 16, 3)).astype(np.uint8),
             tokens=rng.integers(1, 64, (b, 6)).astype(np.int32),
             text_mask=np.ones((b, 6), bool), fps=np.full((b,), 8.0, np.float32))
  if valid is not None:
    out["valid"] = np.asarray(valid, bool)
  return out


@pytest.fixture(scope="module")
def task_and_params():
  config = t2v_config()
  task = t2v_task.T2VTask(config)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch(0, 4)))
  return config, task, params


def batches():
  """Two bucket shapes; the image bucket's second batch has one padding clip."""
  return [batch(1, 4), batch(2, 1, b=3), batch(3, 4), batch(4, 1, b=3, valid=[1, 1, 0])]


def test_rows_per_bucket_deterministic_and_valid_respected(task_and_params):
  config, task, params = task_and_params
  fn = vl.make_eval_fn(task, TIMESTEPS)
  rows = vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=batches(), eval_fn=fn)
  assert [r["bucket"] for r in rows] == ["4x16x16", "1x16x16", "all"]
  assert [r["clips"] for r in rows] == [4, 5, 9]
  cols = [vl.column(t) for t in TIMESTEPS]
  assert cols == ["t=0.20", "t=0.50", "t=0.80"]
  for r in rows:
    assert r["mean"] == pytest.approx(np.mean([r[c] for c in cols]))
    assert all(np.isfinite(r[c]) and r[c] > 0 for c in cols)
  # "all" is the clip-weighted mean of the buckets.
  for c in cols:
    assert rows[2][c] == pytest.approx((4 * rows[0][c] + 5 * rows[1][c]) / 9, rel=1e-6)
  # The same params give the same numbers (a fresh jitted function, too).
  again = vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=batches())
  assert again == rows
  # A padding clip's content does not count ...
  changed = batches()
  changed[3]["video"][2] = 255 - changed[3]["video"][2]
  assert vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=changed,
                     eval_fn=fn) == rows
  # ... a real clip's does; another seed draws other noise; max_batches stops early.
  changed[3]["video"][0] = 255 - changed[3]["video"][0]
  assert vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=changed,
                     eval_fn=fn)[1] != rows[1]
  assert vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=batches(),
                     eval_fn=fn, seed=1)[0] != rows[0]
  short = vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=batches(),
                      eval_fn=fn, max_batches=1)
  assert [(r["bucket"], r["clips"]) for r in short] == [("4x16x16", 2), ("all", 2)]
  with pytest.raises(VidgenError, match="no valid clips"):
    vl.val_loss(task, params, config, timesteps=TIMESTEPS, eval_fn=fn,
                batches=[batch(5, 4, valid=[0, 0])])


class ExactFlow:
  """A T2V-like task whose data is one known clip x0*: the exact velocity is
  (x_t - x0*) / t, computed from params["x0"] (the "model")."""

  def __init__(self, task):
    self.task = task

  def latents(self, b):
    return self.task.latents(b)

  def text(self, params, tokens, mask):
    return jnp.zeros(tokens.shape + (4,), jnp.float32)

  def velocity(self, params, x_t, t, text, text_mask, fps=None):
    return (x_t - params["x0"]) / t.reshape(t.shape + (1,) * (x_t.ndim - t.ndim))


def test_exact_velocity_scores_zero_and_a_wrong_one_does_not(task_and_params):
  config, task, _ = task_and_params
  data = batch(7, 4)
  exact = ExactFlow(task)
  x0 = task.latents(data)
  good = vl.val_loss(exact, {"x0": x0}, config, timesteps=TIMESTEPS, batches=[data])
  bad = vl.val_loss(exact, {"x0": jnp.zeros_like(x0)}, config, timesteps=TIMESTEPS,
                    batches=[data])
  for c in map(vl.column, TIMESTEPS):
    assert good[-1][c] < 1e-8
    # Predicting with x0 = 0: v - (eps - x0) = x0 / t, so the MSE is E[x0^2] / t^2.
    t = float(c[2:])
    assert bad[-1][c] == pytest.approx(float(jnp.mean(x0 ** 2)) / t ** 2, rel=1e-4)


def test_training_lowers_val_loss(task_and_params):
  config, task, params = task_and_params
  data = batch(8, 4)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(p, o, key):
    grads = jax.grad(lambda q: task.loss(q, data, key)[0])(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o

  trained = params
  for i in range(40):
    trained, opt = step(trained, opt, jax.random.key(i))
  fn = vl.make_eval_fn(task, TIMESTEPS)
  before = vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=[data], eval_fn=fn)
  after = vl.val_loss(task, trained, config, timesteps=TIMESTEPS, batches=[data], eval_fn=fn)
  assert after[-1]["mean"] < 0.9 * before[-1]["mean"], (before, after)


def test_hook_gives_scalars_and_the_trainer_picks_it_for_t2v(task_and_params, monkeypatch):
  config, task, params = task_and_params
  splits = []

  def fake_batches(cfg, split):  # The real one reads the built dataset.
    splits.append(split)
    return batches()

  monkeypatch.setattr(vl, "eval_batches", fake_batches)
  evaluate = vl.hook(task, config, timesteps=TIMESTEPS)
  values = evaluate(params, 5, "/nonexistent")
  rows = vl.val_loss(task, params, config, timesteps=TIMESTEPS, batches=batches())
  assert splits == ["validation"]
  assert values == {"val/loss": rows[-1]["mean"], "val/loss_t=0.20": rows[-1]["t=0.20"],
                    "val/loss_t=0.50": rows[-1]["t=0.50"], "val/loss_t=0.80": rows[-1]["t=0.80"],
                    "val/4x16x16/loss": rows[0]["mean"], "val/1x16x16/loss": rows[1]["mean"]}
  from vidgen.train import loop
  assert loop.eval_hook(task, config) is not None
  config_off = config.copy_and_resolve_references()
  config_off.train.eval_every = 0
  assert loop.eval_hook(task, config_off) is None


def test_evaluate_command_computes_the_val_loss_table(task_and_params, monkeypatch, tmp_path):
  import json
  from vidgen import export
  from vidgen.evaluate import commands
  from vidgen.train import tasks
  config, task, params = task_and_params
  restored = []

  def fake_restore(workdir, step=None):  # The real one reads a trainer checkpoint.
    restored.append((workdir, step))
    return params, {}, 7 if step is None else step

  monkeypatch.setattr(export, "_restore_params", fake_restore)
  monkeypatch.setattr(tasks, "get_task", lambda c: task)
  monkeypatch.setattr(vl, "eval_batches", lambda c, split: batches())
  cfg = tmp_path / "t2v_cfg.py"
  cfg.write_text("import ml_collections\n\ndef get_config():\n"
                 "  return ml_collections.ConfigDict({'task': 't2v', 'seed': 0})\n")
  out = tmp_path / "eval"
  assert commands.main([f"--config={cfg}", f"--workdir={tmp_path}", "--val-loss",
                        "--no-generate", f"--out={out}"]) == 0
  assert restored == [(str(tmp_path), None)]
  doc = json.loads((out / "report.json").read_text())
  table = doc["sections"][commands.VAL_LOSS_TITLE]
  expected = vl.val_loss(task, params, config, batches=batches())
  assert [r["bucket"] for r in table] == ["4x16x16", "1x16x16", "all"]
  assert table[-1]["mean"] == pytest.approx(expected[-1]["mean"], rel=1e-6)
  assert doc["val_loss_step"] == 7
  assert commands.main([f"--config={cfg}", f"--workdir={tmp_path}", "--step=5", "--val-loss",
                        "--no-generate", f"--out={out}"]) == 0  # an older kept checkpoint
  assert restored[-1] == (str(tmp_path), 5)
  assert json.loads((out / "report.json").read_text())["val_loss_step"] == 5
  with pytest.raises(VidgenError, match="t2v config"):
    commands.main(["--val-loss", "--no-generate", f"--out={out}"])

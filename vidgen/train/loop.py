"""The trainer: `vidgen train --config=configs/X.py --workdir=DIR [--config.a.b=v ...]`.

One loop serves every task. A workdir with checkpoints resumes from the newest one. SIGTERM
(or a multi-host preemption notice) saves and exits cleanly.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from vidgen import config as config_lib
from vidgen.errors import VidgenError
from vidgen.train import checkpoint as ckpt
from vidgen.train import distributed
from vidgen.train import metrics as metrics_lib
from vidgen.train import sharding as shd
from vidgen.train import state as state_lib
from vidgen.train import step as step_lib
from vidgen.train.config import batch_divisor, validate
from vidgen.train.optimizer import make_optimizer
from vidgen.train.tasks import get_task

log = logging.getLogger(__name__)

IteratorFactory = Callable[..., Any]


def default_iterator(config: ml_collections.ConfigDict, *, process_index: int,
                     process_count: int) -> Any:
  """The data engineer's grain pipeline (vidgen.data.pipeline.make_train_iterator)."""
  try:
    from vidgen.data.pipeline import make_train_iterator  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise VidgenError(f"the data pipeline is not available ({e}); pass make_iterator= or use "
                      "a task with a make_train_iterator hook") from e
  return make_train_iterator(config, process_index=process_index, process_count=process_count)


class _Preemption:
  """A SIGTERM flag (one process) or jax's preemption sync point (several processes)."""

  def __init__(self):
    self.flag = threading.Event()
    self.previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set())

  def reached(self, step: int) -> bool:
    if self.flag.is_set():
      return True
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except (RuntimeError, AttributeError):
        return False
    return False

  def close(self) -> None:
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


def _check_batch(shapes: dict, divisor: int, microbatches: int) -> None:
  sizes = {v.shape[0] for v in shapes.values()}
  if len(sizes) != 1:
    shown = {k: v.shape for k, v in shapes.items()}
    raise VidgenError(f"batch arrays disagree on the batch size: {shown}")
  size = sizes.pop()
  if size % (divisor * microbatches):
    raise VidgenError(f"global batch {size} must be a multiple of the data x fsdp devices "
                      f"({divisor}) times train.microbatches ({microbatches})")


def eval_hook(task: Any, config: ml_collections.ConfigDict
              ) -> Callable[[Any, int, str], Mapping[str, float]] | None:
  """The periodic evaluation (train.eval_every > 0): `task.evaluate(params, step, workdir)`,
  or for a text-to-video task without one the validation loss at fixed timesteps."""
  if not config.train.get("eval_every", 0):
    return None
  if hasattr(task, "evaluate"):
    return task.evaluate
  if config.get("task") == "t2v":
    from vidgen.evaluate import val_loss  # pylint: disable=g-import-not-at-top
    return val_loss.hook(task, config)
  log.warning("train.eval_every=%d but task %s has no evaluate(); no evaluation runs",
              config.train.eval_every, type(task).__name__)
  return None


def train(config: ml_collections.ConfigDict, workdir: str, *, task: Any = None,
          make_iterator: IteratorFactory | None = None,
          stop_at: int | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint if there is one.

  `stop_at` ends the run after that step with a checkpoint, as a preemption would (tests).
  Returns a summary: final step, per-step losses {step: loss}, skipped steps, and more.
  """
  t = config.train
  validate(config, jax.device_count(), jax.process_count())
  task = get_task(config) if task is None else task
  make_iterator = (make_iterator or getattr(task, "make_train_iterator", None)
                   or default_iterator)
  pi, pc = jax.process_index(), jax.process_count()
  mesh = shd.make_mesh(config.mesh)
  rules = shd.rules_from_config(config.mesh)
  tx, schedule = make_optimizer(t)
  ema = t.ema_decay > 0

  iterator = make_iterator(config, process_index=pi, process_count=pc)
  pending = next(iterator)  # Shapes for init; the first batch of a fresh run.
  batch_shapes = shd.global_batch_shapes(pending)
  _check_batch(batch_shapes, batch_divisor(config.mesh, jax.device_count()), t.microbatches)

  manager = ckpt.make_manager(workdir, keep=t.keep, keep_period=t.keep_period,
                              async_save=t.async_checkpoint)
  abstract, shardings = state_lib.state_shardings(task, tx, batch_shapes, ema, config.seed,
                                                  mesh, rules)
  resumed_from = manager.latest_step()
  if resumed_from is not None:
    state = ckpt.restore_state(manager, resumed_from,
                               state_lib.with_shardings(abstract, shardings))
    ckpt.restore_iterator(manager, resumed_from, iterator)
    pending = None
    log.info("resumed from step %d in %s", resumed_from, workdir)
  else:
    state, _ = state_lib.create_train_state(task, tx, batch_shapes, ema, config.seed, mesh,
                                            rules)
  step_fn = step_lib.jit_train_step(
      step_lib.make_train_step(task, tx, schedule, microbatches=t.microbatches,
                               ema_decay=t.ema_decay, ema_warmup=t.ema_warmup, mesh=mesh),
      shardings, mesh)

  step = int(jax.device_get(state.step))
  writer = metrics_lib.Writer(workdir, enabled=pi == 0)
  throughput = metrics_lib.Throughput(step)
  peak = metrics_lib.peak_flops()
  flops_cache: dict[tuple, float] = {}
  preemption = _Preemption()
  bar = None
  if pi == 0 and t.progress_bar and t.steps - step >= 100:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=t.steps, initial=step, unit="step", dynamic_ncols=True)
  summary = {"resumed_from": resumed_from, "losses": {}, "evals": {}, "preempted": False,
             "param_count": state_lib.param_count(abstract.params)}
  last_good = {"step": resumed_from}
  log_window: dict[str, list[float]] = {}

  def flops_for(batch) -> float:
    key = tuple((k, v.shape) for k, v in sorted(batch.items()))
    if key not in flops_cache:
      flops_cache[key] = float(task.flops_per_step(batch) or 0.0)
    return flops_cache[key]

  def handle(done_step: int, device_metrics: dict, flops: float) -> None:
    """Host side of a finished step (called one step late, so the device never waits)."""
    values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    summary["losses"][done_step] = values["train/loss"]
    if "train/tokens" in values:
      throughput.add_tokens(values["train/tokens"])
    for k, v in values.items():
      log_window.setdefault(k, []).append(v)
    if values["train/nonfinite_streak"] >= t.max_consecutive_nonfinite:
      manager.wait_until_finished()
      raise VidgenError(
          f"{int(values['train/nonfinite_streak'])} consecutive steps up to step {done_step} "
          f"had a non-finite loss or gradient (limit train.max_consecutive_nonfinite="
          f"{t.max_consecutive_nonfinite}); their updates were skipped and the run stopped. "
          f"The last good checkpoint is step {manager.latest_step()} in {workdir}/checkpoints; "
          "lower train.lr, check the data, or raise the limit.")
    if done_step % t.log_every == 0 or done_step == t.steps:
      means = {k: float(np.mean(v)) for k, v in log_window.items()}
      means["train/skipped_total"] = float(np.sum(log_window["train/skipped"]))
      log_window.clear()
      perf = throughput.measure(done_step)
      if perf:
        means.update(perf)
        means["perf/mfu"] = metrics_lib.mfu(flops, perf["perf/seconds_per_step"],
                                            jax.device_count(), peak)
        means["perf/tflops_per_s_per_device"] = (
            flops * perf["perf/steps_per_s"] / jax.device_count() / 1e12)
      writer.scalars(done_step, means)
      if pi == 0:
        line = metrics_lib.format_console(done_step, means)
        if bar is not None:
          bar.write(line)
        else:
          print(line, flush=True)

  def save(at: int, force: bool = False) -> None:
    ckpt.save(manager, at, state, iterator, config, force=force)
    last_good["step"] = at

  evaluate = eval_hook(task, config)

  def run_eval(at: int) -> None:
    """task.evaluate on the EMA params; its scalars go to TensorBoard and the console."""
    values = evaluate(state.ema_params if ema else state.params, at, workdir)
    values = {k: float(v) for k, v in (values or {}).items()}
    if values:
      writer.scalars(at, values)
      summary["evals"][at] = values
      if pi == 0:
        line = f"step {at}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
        if bar is not None:
          bar.write(line)
        else:
          print(line, flush=True)

  prev = None
  try:
    while step < t.steps:
      if preemption.reached(step):
        log.warning("preemption at step %d: saving and exiting", step)
        summary["preempted"] = True
        break
      local = pending if pending is not None else next(iterator)
      pending = None
      batch = shd.to_global(local, mesh)
      flops = flops_for(batch)
      with shd.use(mesh, rules):
        state, device_metrics = step_fn(state, batch)
      step += 1
      if prev is not None:
        handle(*prev)
      prev = (step, device_metrics, flops)
      if bar is not None:
        bar.update(1)
      if step % t.checkpoint_every == 0 or step == t.steps:
        save(step)
      if t.sample_every and step % t.sample_every == 0 and hasattr(task, "sample"):
        videos = task.sample(state.ema_params if ema else state.params, step, workdir)
        if videos:
          writer.videos(step, videos)
      if evaluate is not None and step % t.eval_every == 0:
        run_eval(step)
      if stop_at is not None and step >= stop_at:
        summary["preempted"] = True
        break
    if prev is not None:
      handle(*prev)
    if last_good["step"] != step and step > 0:
      save(step, force=True)
    manager.wait_until_finished()
  finally:
    preemption.close()
    if bar is not None:
      bar.close()
    writer.close()
    manager.close()
  summary.update(step=step, skipped=int(jax.device_get(state.nonfinite_total)),
                 checkpoint_steps=list(manager.all_steps()), final_state=state)
  return summary


def main(argv: list[str]) -> int:
  rest, overrides = config_lib.split_overrides(argv)
  parser = argparse.ArgumentParser(prog="vidgen train", description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="configs/X.py[:ARG]")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--stop_after", type=int, default=None,
                      help="save and exit after this step, as a preemption would")
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  config = config_lib.load(args.config, overrides)
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  summary = train(config, args.workdir, stop_at=args.stop_after)
  if jax.process_index() == 0:
    status = "preempted, checkpoint saved" if summary["preempted"] else "done"
    print(f"vidgen train: {status} at step {summary['step']} "
          f"({summary['skipped']} skipped steps); workdir {args.workdir}", flush=True)
  return 0

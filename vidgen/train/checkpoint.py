"""Orbax checkpoints of the train state, the grain iterator state and the config.

Layout: WORKDIR/checkpoints/STEP/{state,data,config}. Orbax writes each step into a
temporary directory and renames it when complete, so a write that is killed half-way never
shadows the last good checkpoint (tmp directories are ignored by `latest_step`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "config")


def make_manager(workdir: str, *, keep: int, keep_period: int = 0,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the last `keep` steps plus every `keep_period`-th."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, keep_period=keep_period or None, create=True,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options, item_names=ITEMS)


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator: Any,
         config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
  """Starts saving (async if the manager is); the iterator state is captured now."""
  args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(iterator),
      config=ocp.args.JsonSave(config_to_json(config)))
  return manager.save(step, args=args, force=force)


def restore_state(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores the state onto `target`'s shardings (abstract arrays: any mesh works)."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return restored["state"]


def restore_config(manager: ocp.CheckpointManager, step: int) -> dict:
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return restored["config"]


def restore_iterator(manager: ocp.CheckpointManager, step: int, iterator: Any) -> Any:
  """Sets the grain iterator's state from the checkpoint.

  Each process saved `process_I-of-N.json`. When the process count changed, process I takes
  the state of process I mod N_old: right for pipelines whose position is the same on every
  process (a global batch index, as vidgen's are); a warning says so.
  """
  directory = epath.Path(manager.directory) / str(step) / "data"
  index, count = jax.process_index(), jax.process_count()
  path = directory / f"process_{index}-of-{count}.json"
  if not path.exists():
    saved = sorted(directory.glob("process_*-of-*.json"))
    if not saved:
      raise FileNotFoundError(f"no data iterator state in {directory}")
    old_count = int(saved[0].name.split("-of-")[1].split(".")[0])
    path = directory / f"process_{index % old_count}-of-{old_count}.json"
    log.warning("checkpoint was written by %d processes, now %d: process %d resumes the "
                "data iterator from %s", old_count, count, index, path.name)
  text = path.read_text()
  if isinstance(iterator, grain.DatasetIterator):
    iterator.set_state(json.loads(text))
  else:
    iterator.set_state(text.encode())
  return iterator


def tmp_dirs(manager: ocp.CheckpointManager) -> list[str]:
  """Unfinished (temporary) step directories, e.g. left by a killed save."""
  root = epath.Path(manager.directory)
  return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.isdigit())

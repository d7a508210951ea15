"""`get_task(config)`: the Task for `config.task`, imported lazily by path."""
from __future__ import annotations

import importlib
from typing import Any

import ml_collections

from vidgen.errors import VidgenError

TASKS = {
    "vae": "vidgen.train.vae_task:VAETask",
    "t2v": "vidgen.train.t2v_task:T2VTask",
}


def resolve(name: str) -> type:
  """A task class from a short name in TASKS or a 'module.path:ClassName'."""
  path = TASKS.get(name, name)
  if ":" not in path:
    raise VidgenError(f"config.task={name!r}: expected one of {sorted(TASKS)} or "
                      "'module.path:ClassName'")
  module_name, _, class_name = path.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise VidgenError(f"config.task={name!r}: cannot import {module_name} ({e})") from e
  if not hasattr(module, class_name):
    raise VidgenError(f"config.task={name!r}: {module_name} has no {class_name}")
  return getattr(module, class_name)


def get_task(config: ml_collections.ConfigDict) -> Any:
  """Builds the task object for this config: `cls(config)`."""
  return resolve(config.task)(config)

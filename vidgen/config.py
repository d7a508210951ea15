"""Configs are Python files whose `get_config(arg)` returns an ml_collections ConfigDict.

Used as `--config=configs/x.py[:arg]` with `--config.a.b=value` overrides. Overrides of
keys the config does not have are refused with the list of valid keys, before any work.
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

from vidgen.errors import VidgenError


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path[:arg]` by calling the file's `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise VidgenError(f"config file {path!r} does not exist; pass --config=configs/NAME.py[:ARG] "
                      f"(available: {', '.join(sorted(_available_configs()))})")
  module_spec = importlib.util.spec_from_file_location(
      f"vidgen_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise VidgenError(f"config file {path!r} has no get_config(arg) function")
  config = module.get_config(arg) if arg else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise VidgenError(f"{path}: get_config() must return an ml_collections.ConfigDict, "
                      f"got {type(config).__name__}")
  return config


def _available_configs() -> list[str]:
  root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
  if not os.path.isdir(root):
    return []
  return [os.path.join("configs", f) for f in os.listdir(root)
          if f.endswith(".py") and not f.startswith("_")]


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of a config as a dotted path."""
  keys = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, path + "."))
    else:
      keys.append(path)
  return keys


def _parse_value(text: str, current: Any, key: str) -> Any:
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise VidgenError(f"--config.{key}={text}: expected true or false")
  if isinstance(current, str) or current is None:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
    return value if current is None else text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise VidgenError(f"--config.{key}={text}: expected {type(current).__name__} "
                      f"like {current!r}") from None
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(current)(value)
  if not isinstance(value, type(current)):
    raise VidgenError(f"--config.{key}={text}: expected {type(current).__name__} "
                      f"like {current!r}, got {type(value).__name__}")
  return value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies `a.b=value` overrides; unknown keys are refused with the valid ones."""
  config = copy.deepcopy(config)  # The caller's config stays as it was.
  valid = flat_keys(config)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise VidgenError(f"override --config.{item} needs a value: --config.{item}=VALUE")
    node, *_ = config, None
    parts = key.split(".")
    for part in parts[:-1]:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        node = None
        break
      node = node[part]
    if node is None or not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
      raise VidgenError(f"unknown config key {key!r}. Valid keys:\n  " + "\n  ".join(valid))
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise VidgenError(f"--config.{key} is a group; set one of its keys: "
                        + ", ".join(k for k in valid if k.startswith(key + ".")))
    with node.ignore_type():
      node[parts[-1]] = _parse_value(text, current, key)
  return config


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.a.b=value` overrides from the other arguments."""
  rest, overrides = [], []
  for arg in argv:
    if arg.startswith("--config."):
      overrides.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest, overrides


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads a config file and applies overrides: what every subcommand calls."""
  return apply_overrides(load_config_file(spec), overrides)

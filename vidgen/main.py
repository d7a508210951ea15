"""The `vidgen` command: one thin entry point, one function per subcommand.

Each subcommand lives in the module that does the work and takes its own argv.
"""
from __future__ import annotations

import importlib
import sys

from vidgen.errors import VidgenError

COMMANDS = {
    "run": ("vidgen.run", "The main job: data, tokenizer, autoencoder, transformer, "
                          "evaluation, export, samples; resumable."),
    "data": ("vidgen.data.commands", "Build datasets (build), inspect them (show), "
                                     "train the caption tokenizer (tokenizer)."),
    "train": ("vidgen.train.loop", "Train a config (autoencoder or transformer)."),
    "compile": ("vidgen.train.aot", "Compile a config's train step for N devices and print "
                                    "per-device memory."),
    "evaluate": ("vidgen.evaluate.commands", "Evaluate a workdir or bundle."),
    "sample": ("vidgen.sample", "Generate videos from an exported bundle."),
    "export": ("vidgen.export", "Export a workdir's parameters as an inference bundle."),
}


def usage() -> str:
  lines = ["usage: vidgen COMMAND [--config=configs/X.py[:ARG]] [--config.KEY=VALUE ...]", "",
           "commands:"]
  lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0
  if argv[0] not in COMMANDS:
    print(f"vidgen: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
    return 2
  module_name, _ = COMMANDS[argv[0]]
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name == module_name:
      print(f"vidgen: the {argv[0]!r} command is not built yet", file=sys.stderr)
      return 2
    raise
  try:
    return int(module.main(argv[1:]) or 0)
  except VidgenError as e:
    print(f"vidgen {argv[0]}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"vidgen {argv[0]}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())

"""A toy denoising task on synthetic batches: checks the trainer end to end in seconds.

  vidgen train --config=configs/toy.py --workdir=/tmp/toy
  vidgen compile --config=configs/toy.py --devices=8
  launch/local_hosts.sh 2 --config=configs/toy.py --workdir=/tmp/toy2
"""
import os
import sys

# The toy task lives with the tests; make the repo root importable for the CLI.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from tests._toy_task import get_config as _toy_config  # noqa: E402


def get_config(arg: str = ""):
  del arg
  return _toy_config()

"""Several hosts on one machine: 2 processes x 2 CPU devices train, checkpoint and stop;
1 process x 4 devices resumes; the losses continue as an uninterrupted run's would."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "vidgen.main", "train", "--config=configs/toy.py",
          f"--workdir={workdir}", "--config.train.log_every=1", *extra]


def _env(devices):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR="/tmp/vidgen_test_jax_cache")
  return env


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["train/loss"] for r in map(json.loads, f)}


def _run(cmd, env, timeout=400):
  """Runs cmd in its own process group; on timeout the whole group is killed."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
  return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def workdir_root():
  # Not tmp_path: pytest sessions of other users of this checkout prune old basetemps.
  root = tempfile.mkdtemp(prefix="vidgen_multiprocess_")
  yield root
  shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_hosts_then_one_host_resume(workdir_root):
  split = os.path.join(workdir_root, "split")
  reference = os.path.join(workdir_root, "reference")
  # launch/local_hosts.sh starts the 2 processes (127.0.0.1 coordinator, 2 devices each).
  env = dict(_env(2), PYTHON=sys.executable, PORT=str(_free_port()))
  run = _run(["bash", "launch/local_hosts.sh", "2", "--devices_per_host=2",
              *_cmd(split, "--stop_after=4")[4:]], env)
  host1 = open(os.path.join(split, "host_1.log")).read()
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + host1[-3000:]
  assert "preempted, checkpoint saved at step 4" in run.stdout
  data_dir = os.path.join(split, "checkpoints", "4", "data")
  assert sorted(os.listdir(data_dir))[-2:] == ["process_0-of-2.json", "process_1-of-2.json"]

  for workdir in (split, reference):  # resume on 1 x 4; the reference runs 8 steps on 1 x 4
    run = _run(_cmd(workdir), _env(4))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "done at step 8" in run.stdout

  got, want = _losses(split), _losses(reference)
  assert sorted(got) == sorted(want) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)],
                             rtol=1e-5)
  assert want[8] < want[1]

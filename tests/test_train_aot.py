"""`vidgen compile` in a fresh process: per-device memory follows the mesh."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compile(*overrides, devices=8):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
  env["JAX_COMPILATION_CACHE_DIR"] = "/tmp/vidgen_test_jax_cache"
  run = subprocess.run([sys.executable, "-m", "vidgen.main", "compile", "--config=configs/toy.py",
                        f"--devices={devices}", "--json", *overrides], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(run.stdout.strip().splitlines()[-1])


def test_compile_reports_per_device_memory():
  # A wider toy so that the state dominates; fsdp=8 shards it, data=8 replicates it.
  wide = ("--config.model.embed=64", "--config.model.mlp=1024")
  fsdp = _compile(*wide, "--config.mesh.fsdp=-1", devices=8)
  data = _compile(*wide, "--config.mesh.fsdp=1", "--config.mesh.data=-1", devices=8)
  assert fsdp["devices"] == data["devices"] == 8
  assert fsdp["mesh"]["fsdp"] == 8 and data["mesh"]["data"] == 8
  assert fsdp["params"] == data["params"] == 2 * 64 * 1024 + 1024 + 64 + 3 * 64 + 64 + 64 * 3 \
      + 3 + 32 * 64 + 2 * 64
  # State = params + EMA + Adam mu, nu (+ a few scalars): ~4x params in f32.
  assert 4 * 4 * data["params"] <= data["state_bytes_per_device"] < 4 * 4 * data["params"] + 1024
  assert fsdp["state_bytes_per_device"] < data["state_bytes_per_device"] / 4
  for r in (fsdp, data):
    # The compiled step's arguments are the state plus the batch shard.
    assert r["argument_size_in_bytes"] >= r["state_bytes_per_device"]
    assert r["argument_size_in_bytes"] < r["state_bytes_per_device"] + 8192
    assert r["alias_size_in_bytes"] > 0  # the donated state is reused for the output
    assert r["peak_bytes_per_device_estimate"] > 0


def test_compile_refuses_a_mesh_that_does_not_fit():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  run = subprocess.run([sys.executable, "-m", "vidgen.main", "compile", "--config=configs/toy.py",
                        "--devices=6", "--config.mesh.tensor=4"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 2 and "do not divide" in run.stderr

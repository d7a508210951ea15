"""Multi-host start-up: `jax.distributed.initialize` from flags or from the environment."""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)



def add_flags(parser) -> None:
  parser.add_argument("--coordinator", default=os.environ.get("VIDGEN_COORDINATOR"),
                      help="host:port of process 0 (several hosts); env VIDGEN_COORDINATOR")
  parser.add_argument("--num_processes", type=int,
                      default=_int_env("VIDGEN_NUM_PROCESSES"))
  parser.add_argument("--process_id", type=int, default=_int_env("VIDGEN_PROCESS_ID"))


def _int_env(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value else None


def _multi_host_env() -> bool:
  """Whether the environment says this is one of several hosts (jax finds its peers)."""
  env = os.environ
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  return (len(hosts) > 1 or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))
          or bool(env.get("JAX_COORDINATOR_ADDRESS"))
          or int(env.get("SLURM_NTASKS", "1") or 1) > 1
          or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the other processes; returns whether jax.distributed was initialized.

  Explicit flags win (e.g. 127.0.0.1:PORT for local stand-in hosts); otherwise TPU pods,
  GKE JobSets and SLURM are detected by jax itself from their environment.
  """
  if coordinator:
    if num_processes is None or process_id is None:
      from vidgen.errors import VidgenError
      raise VidgenError("--coordinator needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif _multi_host_env():
    jax.distributed.initialize()
  else:
    return False
  _orbax_distributed_barriers()
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _orbax_distributed_barriers() -> None:
  """Makes Orbax synchronise through the coordination service, not device collectives.

  Orbax's default barrier is a jitted psum over all devices. Run from its async-save threads
  it can interleave with the train step's collectives in a different order on each process
  (a deadlock seen with gloo on CPU under load); coordination-service barriers cannot.
  """
  import orbax.checkpoint  # noqa: F401  (defines the flag) pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  try:
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True
  except AttributeError:  # An Orbax without the flag: keep its default.
    log.warning("this Orbax has no experimental_orbax_use_distributed_barrier flag")

"""The device mesh, logical-axis rules to shardings, and per-process batches to global arrays.

Modules speak only logical axis names; this is the one place that maps them to mesh axes.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidgen.train.config import MESH_AXES, mesh_shapes

BATCH_AXES = ("data", "fsdp")

Rules = tuple[tuple[str, Any], ...]


def rules_from_config(mesh_config: ml_collections.ConfigDict) -> Rules:
  """The logical axis rules as a tuple of (logical name, mesh axis | tuple | None)."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in mesh_config.rules)


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with Auto axes data, fsdp, tensor, sequence."""
  devices = list(jax.devices() if devices is None else devices)
  ici, dcn = mesh_shapes(mesh_config, len(devices))
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if any(v > 1 for v in dcn.values()):
    return Mesh(_hybrid_devices(ici, dcn, devices), MESH_AXES, axis_types=axis_types)
  return jax.make_mesh(tuple(ici[a] for a in MESH_AXES), MESH_AXES, axis_types=axis_types,
                       devices=devices)


def _hybrid_devices(ici: dict[str, int], dcn: dict[str, int],
                    devices: list[jax.Device]) -> np.ndarray:
  """Devices for an ICI x DCN mesh: each axis is (dcn outer) x (ici inner).

  TPU slices are found by `slice_index`; elsewhere (GPU hosts, CPU tests) processes are the
  granules when their number matches, else devices are split in order.
  """
  ici_shape, dcn_shape = [ici[a] for a in MESH_AXES], [dcn[a] for a in MESH_AXES]
  if hasattr(devices[0], "slice_index"):
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                allow_split_physical_axes=True)
  if jax.process_count() == int(np.prod(dcn_shape)) > 1:
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices,
                                                process_is_granule=True,
                                                allow_split_physical_axes=True)
  n = len(MESH_AXES)
  array = np.array(devices, dtype=object).reshape(dcn_shape + ici_shape)
  array = array.transpose([i for pair in zip(range(n), range(n, 2 * n)) for i in pair])
  return array.reshape([d * i for d, i in zip(dcn_shape, ici_shape)])


@contextlib.contextmanager
def use(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Sets the mesh and the logical rules for tracing (activation constraints need both)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of (abstract) arrays, boxed with logical names or not.

  Unboxed leaves are replicated. A dimension that does not divide by its mesh axes (e.g. a
  3-channel output bias on fsdp=2) stays unsharded. The result has the structure of
  `nn.unbox(boxed_tree)`.
  """
  specs = nn.get_partition_spec(boxed_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  return jax.tree.map(lambda a, s: fit_sharding(a.shape, s), nn.unbox(boxed_tree), shardings)


def fit_sharding(shape: Sequence[int], sharding: NamedSharding) -> NamedSharding:
  """Drops mesh axes from dimensions they do not divide evenly."""
  spec, mesh = tuple(sharding.spec), sharding.mesh
  fitted = []
  for dim, axes in zip(shape, spec + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
    size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
    fitted.append(axes if dim % size == 0 else None)
  return NamedSharding(mesh, P(*fitted))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch arrays are split along their first axis over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch_shapes(local_batch: Mapping[str, np.ndarray],
                        process_count: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes of a batch whose per-process shards have `local_batch`'s shapes."""
  n = jax.process_count() if process_count is None else process_count
  return {k: jax.ShapeDtypeStruct((v.shape[0] * n,) + v.shape[1:], v.dtype)
          for k, v in local_batch.items()}


def abstract_batch(shapes: Mapping[str, jax.ShapeDtypeStruct],
                   mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Global batch shapes with the batch sharding attached (for lowering)."""
  sharding = batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
          for k, v in shapes.items()}


def to_global(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy shards -> global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}

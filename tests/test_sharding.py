"""Mesh layouts on 8 forced CPU devices: the compiled step's param, optimizer-state and
activation shardings follow the logical rules."""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import _toy_task  # noqa: E402
from vidgen.errors import VidgenError  # noqa: E402
from vidgen.train import sharding as shd  # noqa: E402
from vidgen.train import state as state_lib  # noqa: E402
from vidgen.train import step as step_lib  # noqa: E402
from vidgen.train.optimizer import make_optimizer  # noqa: E402


LAYOUTS = {
    "data": dict(data=8, fsdp=1, tensor=1, sequence=1),
    "fsdp_tensor": dict(data=1, fsdp=4, tensor=2, sequence=1),
    "data_fsdp_tensor": dict(data=2, fsdp=2, tensor=2, sequence=1),
    "fsdp_sequence": dict(data=1, fsdp=4, tensor=1, sequence=2),
}


def _spec(mesh, *axes):
  """The expected spec, with size-1 mesh axes dropped (they shard nothing)."""
  def keep(a):
    if a is None:
      return None
    names = a if isinstance(a, tuple) else (a,)
    names = tuple(n for n in names if mesh.shape[n] > 1)
    return None if not names else names if len(names) > 1 else names[0]
  return P(*[keep(a) for a in axes])


def _same(sharding, mesh, ndim, *axes):
  return sharding.is_equivalent_to(NamedSharding(mesh, _spec(mesh, *axes)), ndim)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_compiled_step_shardings_follow_rules(layout):
  config = _toy_task.get_config()
  config.update({"mesh": {**config.mesh.to_dict(), **LAYOUTS[layout]}})
  config.train.microbatches = 2
  seen = {}
  task = _toy_task.ToyTask(config, inspect=lambda name, s: seen.setdefault(name, s))
  mesh = shd.make_mesh(config.mesh)
  assert dict(mesh.shape) == LAYOUTS[layout]
  rules = shd.rules_from_config(config.mesh)
  tx, schedule = make_optimizer(config.train)
  batch_shapes = task.batch_spec()
  abstract, shardings = state_lib.state_shardings(task, tx, batch_shapes, True, 0, mesh, rules)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(task, tx, schedule, microbatches=2, ema_decay=0.9, mesh=mesh),
      shardings, mesh)
  with shd.use(mesh, rules):
    compiled = step.lower(state_lib.with_shardings(abstract, shardings),
                          shd.abstract_batch(batch_shapes, mesh)).compile()
  out_state, _ = compiled.output_shardings
  params = out_state.params
  # Params: (patch, embed) -> (None, fsdp); (embed, mlp) -> (fsdp, tensor); norms replicated.
  assert _same(params["proj_in"]["kernel"], mesh, 2, None, "fsdp")
  assert _same(params["up"]["kernel"], mesh, 2, "fsdp", "tensor")
  assert _same(params["down"]["kernel"], mesh, 2, "tensor", "fsdp")
  assert _same(params["text_embed"]["embedding"], mesh, 2, "tensor", "fsdp")
  assert _same(params["norm"]["scale"], mesh, 1, None)
  # Adam moments and EMA follow their params; counters are replicated.
  mu = optax_mu(out_state.opt_state)
  assert _same(mu["up"]["kernel"], mesh, 2, "fsdp", "tensor")
  assert _same(out_state.ema_params["down"]["kernel"], mesh, 2, "tensor", "fsdp")
  assert _same(out_state.step, mesh, 0)
  # Activations inside the compiled step: batch over (data, fsdp), length over sequence;
  # embed gets no fsdp (batch took it), mlp gets tensor.
  assert _same(seen["embed"], mesh, 3, ("data", "fsdp"), "sequence", None)
  assert _same(seen["mlp"], mesh, 3, ("data", "fsdp"), "sequence", "tensor")
  # The state really is born with these shardings.
  state, _ = state_lib.create_train_state(task, tx, batch_shapes, True, 0, mesh, rules)
  assert state.params["up"]["kernel"].sharding.is_equivalent_to(params["up"]["kernel"], 2)
  if mesh.shape["fsdp"] > 1:
    shard = state.params["up"]["kernel"].addressable_shards[0].data
    assert shard.shape[0] == config.model.embed // mesh.shape["fsdp"]


def optax_mu(opt_state):
  found = []
  jax.tree_util.tree_map(lambda x: x, opt_state)
  for node in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda n: hasattr(n, "mu")):
    if hasattr(node, "mu"):
      found.append(node.mu)
  assert len(found) == 1
  return found[0]


def test_mesh_fill_and_hybrid():
  config = _toy_task.get_config()
  config.mesh.tensor, config.mesh.fsdp = 2, -1
  assert dict(shd.make_mesh(config.mesh).shape) == dict(data=1, fsdp=4, tensor=2, sequence=1)
  config.mesh.dcn_data = 2  # two "slices" of 4 devices
  mesh = shd.make_mesh(config.mesh)
  assert dict(mesh.shape) == dict(data=2, fsdp=2, tensor=2, sequence=1)
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 4
  # The DCN split is outermost: data index 0 holds the first "slice" (devices 0-3).
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  assert sorted(ids[0].ravel()) == [0, 1, 2, 3] and sorted(ids[1].ravel()) == [4, 5, 6, 7]
  config.mesh.dcn_data, config.mesh.fsdp = 1, 3
  with pytest.raises(VidgenError, match="multiply to 6 but there are 8"):
    shd.make_mesh(config.mesh)


def test_local_batch_becomes_global_sharded_array():
  config = _toy_task.get_config()
  config.mesh.data, config.mesh.fsdp = 2, 4
  mesh = shd.make_mesh(config.mesh)
  local = _toy_task.make_global_batch(0, seed=0, d=dict(config.data.to_dict(), nan_batches=()),
                                      process_index=0, process_count=1)
  batch = shd.to_global(local, mesh)
  video = batch["video"]
  assert video.shape == local["video"].shape and len(video.addressable_shards) == 8
  assert video.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 5)
  assert all(s.data.shape[0] == 1 for s in video.addressable_shards)
  np.testing.assert_array_equal(np.asarray(video), local["video"])
  assert nn.logical_to_mesh_axes(("batch", "embed"), shd.rules_from_config(config.mesh)) == \
      P(("data", "fsdp"), None)


def test_indivisible_dimensions_stay_unsharded():
  config = _toy_task.get_config()
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  mesh = shd.make_mesh(config.mesh)
  rules = shd.rules_from_config(config.mesh)
  boxed = {"bias": nn.Partitioned(jax.ShapeDtypeStruct((3,), np.float32), ("conv_out",)),
           "kernel": nn.Partitioned(jax.ShapeDtypeStruct((8, 6), np.float32), ("embed", "mlp")),
           "plain": jax.ShapeDtypeStruct((5,), np.float32)}
  out = shd.logical_to_shardings(boxed, mesh, rules)
  assert out["bias"].spec == P(None)  # 3 does not divide by fsdp=4
  assert out["kernel"].spec == P("fsdp", "tensor")  # 8 / 4 and 6 / 2 divide
  assert out["plain"].is_fully_replicated


def _tiny_dit_config(**model):
  """The real tiny T2V config on pixels: 16 clips of 4 x 16 x 16, 1 x 2 x 2 patches (256
  tokens a clip), so attention scores dominate the step's activations."""
  from vidgen import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load("configs/t2v_tiny.py:tiny,pixel")
  config.data.buckets = [(4, 16, 16, 16)]
  config.data.tokenizer.max_len = 8
  config.model.patch = (1, 2, 2)
  config.model.attention = "xla"
  config.model.update(model)
  return config


def test_dit_step_activations_split_over_the_batch():
  """Same global batch on 8 devices (fsdp=8) and on 1: per-device temporaries must shrink by
  about 8 (activations split over the batch, not replicated or all-gathered)."""
  from vidgen.train import aot  # pylint: disable=g-import-not-at-top
  config = _tiny_dit_config()
  eight = aot.compile_report(config)
  one = aot.compile_report(config, devices=jax.devices()[:1])
  assert eight["mesh"]["fsdp"] == 8 and one["devices"] == 1
  assert eight["batch"]["video"] == one["batch"]["video"] == [16, 4, 16, 16, 3]
  # The [16 / 8, 4, 256, 256] f32 scores alone are 2 MiB a layer; the ratio is ~8.
  ratio = one["temp_size_in_bytes"] / eight["temp_size_in_bytes"]
  assert ratio > 6, (one["temp_size_in_bytes"], eight["temp_size_in_bytes"])


def _largest_buffer_elements(hlo: str) -> tuple[int, str]:
  import re  # pylint: disable=g-import-not-at-top
  best = (0, "")
  for dtype, dims in re.findall(r"\b(f32|bf16|pred|s32)\[([\d,]+)\]", hlo):
    n = int(np.prod([int(d) for d in dims.split(",")]))
    best = max(best, (n, f"{dtype}[{dims}]"))
  return best


@pytest.mark.parametrize("segments", [False, True])
def test_blockwise_attention_step_has_no_quadratic_buffer(segments):
  """With attention="blockwise" the compiled DiT step (8 devices) holds no buffer as large as
  a per-device score matrix [B/8, heads, T, T]: an O(T^2) residual (e.g. the mask of every
  key block kept for the backward pass) is what blockwise attention exists to avoid."""
  from vidgen.models import dit as dit_lib  # pylint: disable=g-import-not-at-top
  from vidgen.train.tasks import get_task  # pylint: disable=g-import-not-at-top
  config = _tiny_dit_config(attention="blockwise", block_size=256)
  task = get_task(config)
  mesh = shd.make_mesh(config.mesh)
  rules = shd.rules_from_config(config.mesh)
  b, t, heads = 16, 1024, dit_lib.VARIANTS["tiny"]["num_heads"]
  x = jax.ShapeDtypeStruct((b, t, 12), np.float32)

  def loss(params, x):
    seg = (jnp.arange(t)[None] >= t // 2).astype(jnp.int32) * jnp.ones((b, 1), jnp.int32)
    out = task.model.apply(
        {"params": params}, x, jnp.full((b, 1), 0.5), jnp.zeros((b, t, 3), jnp.int32),
        jnp.ones((b, 8, task.text_dim)), jnp.ones((b, 8), bool),
        segment_ids=seg if segments else None, method=dit_lib.DiT.forward_tokens)
    return jnp.mean(out ** 2)

  with shd.use(mesh, rules):
    params = jax.eval_shape(lambda: nn.unbox(task.model.init(
        jax.random.key(0), jnp.zeros((1, t, 12)), jnp.full((1, 1), 0.5),
        jnp.zeros((1, t, 3), jnp.int32), jnp.ones((1, 8, task.text_dim)),
        jnp.ones((1, 8), bool), method=dit_lib.DiT.forward_tokens))["params"])
    batch = NamedSharding(mesh, P(shd.BATCH_AXES))
    hlo = jax.jit(jax.grad(loss), in_shardings=(None, batch)).lower(
        params, x).compile().as_text()
  scores = b // 8 * heads * t * t
  elements, shape = _largest_buffer_elements(hlo)
  assert elements < scores, shape

"""`vidgen data cache`: cached latents / text embeddings equal on-the-fly encoding, batch for
batch, with the pipeline's buckets, shuffle, process slices and resume."""
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.data import cache, commands, pipeline
from vidgen.data import config as data_config
from vidgen.data.tokenizer import Tokenizer
from vidgen.errors import VidgenError
from vidgen.evaluate import val_loss
from vidgen.models import text as text_lib
from vidgen.train import t2v_task
from test_data_helpers import tiny_shapes_config
from test_t2v_task import export_random_vae

T5 = text_lib.get_t5_config("tiny")  # The tiny DiT's text variant: the checkpoint's shapes.


def write_t5_checkpoint(path: str, vocab: int, seed: int = 0) -> None:
  """Random tensors in the Hugging Face T5EncoderModel layout ([out, in] Linear weights)."""
  rng = np.random.default_rng(seed)
  w = lambda *s: (rng.standard_normal(s) / math.sqrt(s[-1])).astype(np.float32)
  inner, d = T5.num_heads * T5.d_kv, T5.d_model
  t = {"shared.weight": rng.standard_normal((vocab, d)).astype(np.float32),
       "encoder.final_layer_norm.weight": 1 + 0.1 * w(d)}
  for i in range(T5.num_layers):
    p = f"encoder.block.{i}.layer"
    for name in "qkv":
      t[f"{p}.0.SelfAttention.{name}.weight"] = w(inner, d)
    t[f"{p}.0.SelfAttention.o.weight"] = w(d, inner)
    if i == 0:
      t[f"{p}.0.SelfAttention.relative_attention_bias.weight"] = w(
          T5.relative_attention_num_buckets, T5.num_heads)
    t[f"{p}.0.layer_norm.weight"] = 1 + 0.1 * w(d)
    t[f"{p}.1.layer_norm.weight"] = 1 + 0.1 * w(d)
    t[f"{p}.1.DenseReluDense.wi_0.weight"] = w(T5.d_ff, d)
    t[f"{p}.1.DenseReluDense.wi_1.weight"] = w(T5.d_ff, d)
    t[f"{p}.1.DenseReluDense.wo.weight"] = w(d, T5.d_ff)
  text_lib.write_safetensors(path, t)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("cache")
  config = tiny_shapes_config(str(root / "data"), frames=9, train_size=24, validation_size=6)
  config.data.buckets = [(9, 16, 16, 4), (1, 16, 16, 4)]
  config.data.clip.random_crop = False  # Cached latents are the centered windows.
  config.data.tokenizer.max_len = 48  # Short captions are padded.
  commands.build(config.data)
  commands.train_tokenizer(config.data)
  vae_dir = str(root / "vae")
  export_random_vae(vae_dir)
  vocab = Tokenizer(data_config.tokenizer_path(config.data)).vocab_size
  ckpt = str(root / "t5.safetensors")
  write_t5_checkpoint(ckpt, vocab)
  config.task = "t2v"
  config.model = t2v_task.get_model_config("tiny")
  config.model.width, config.model.num_heads, config.model.depth = 32, 2, 1
  config.model.patch = (1, 2, 2)
  config.model.latent = "cached"
  config.model.vae.workdir = vae_dir
  config.model.text.checkpoint = ckpt
  config.model.text.cached = True
  written = cache.write_cache(config, log=lambda *_: None)
  return config, written


def on_the_fly(config):
  """The same config, encoding with the frozen VAE and text encoder at every batch."""
  live = config.copy_and_resolve_references()
  live.model.latent = "vae"
  live.model.text.cached = False
  return live, t2v_task.T2VTask(live)


def test_cached_batches_equal_on_the_fly_encoding(setup):
  config, written = setup
  assert set(written) == {"latents", "text"}
  assert os.path.dirname(written["latents"]) == cache.cache_root(config.data)
  live, task = on_the_fly(config)
  loader = cache.make_loader(config, "train", training=True, process_index=0, process_count=1)
  cached_it = cache.make_train_iterator(config, process_index=0, process_count=1)
  plain_it = pipeline.make_train_iterator(live, process_index=0, process_count=1)
  buckets = set()
  for step in range(loader.batches_per_epoch + 3):  # Into the second epoch (new shuffle).
    got, ref = next(cached_it), next(plain_it)
    assert "video" not in got and got["latents"].dtype == np.float32
    bucket = loader.local_part(step)[1]
    buckets.add(bucket)
    frames = config.data.buckets[bucket][0]
    assert got["latents"].shape == (4, 1 + (frames - 1) // 4, 4, 4, 4)
    np.testing.assert_allclose(got["latents"], np.asarray(task.latents(ref)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got["tokens"], ref["tokens"])  # Same captions drawn.
    np.testing.assert_array_equal(got["text_mask"], ref["text_mask"])
    np.testing.assert_array_equal(got["fps"], ref["fps"])
    emb = np.asarray(task.text(None, jnp.asarray(ref["tokens"]), jnp.asarray(ref["text_mask"])))
    np.testing.assert_allclose(got["text_embeddings"], emb, rtol=1e-4, atol=1e-4)
  assert buckets == {0, 1}


def test_cached_eval_batches_and_resume(setup):
  config, _ = setup
  live, task = on_the_fly(config)
  got = list(cache.make_eval_iterator(config, process_index=0, process_count=1))
  ref = list(pipeline.make_eval_iterator(live, process_index=0, process_count=1))
  assert len(got) == len(ref) > 0
  for g, r in zip(got, ref):
    np.testing.assert_array_equal(g["valid"], r["valid"])
    np.testing.assert_allclose(g["latents"], np.asarray(task.latents(r)), rtol=1e-4, atol=1e-4)

  it = cache.make_train_iterator(config, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = cache.make_train_iterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  for a in expected:
    b = next(resumed)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  halves = [cache.make_loader(config, "train", training=True, process_index=p,
                              process_count=2) for p in (0, 1)]
  whole = cache.make_loader(config, "train", training=True, process_index=0, process_count=1)
  for k in range(2):  # Each process reads its half of the same global batch.
    full = whole.map(k)
    parts = [h.map(k) for h in halves]
    np.testing.assert_array_equal(np.concatenate([p["latents"] for p in parts]),
                                  full["latents"])


def test_text_embedding_cache_round_trip_with_mask(setup):
  config, written = setup
  module, variables = t2v_task.frozen_text_encoder(config)
  tokenizer = Tokenizer(data_config.tokenizer_path(config.data))
  from vidgen.data import datasets
  import json
  source = datasets.open_source(config.data, "validation")
  offsets = np.load(os.path.join(written["text"], "validation_offsets.npy"))
  emb = np.load(os.path.join(written["text"], "validation_embeddings.npy"), mmap_mode="r")
  mask = np.load(os.path.join(written["text"], "validation_mask.npy"))
  assert offsets[0] == 0 and offsets[-1] == emb.shape[0] == mask.shape[0]
  assert emb.shape[1:] == (config.data.tokenizer.max_len, T5.d_model)
  for i in (0, len(source) - 1):
    texts = json.loads(datasets.as_text(source[i]["captions"]))
    assert offsets[i + 1] - offsets[i] == len(texts)
    ids, m = tokenizer.encode(texts, config.data.tokenizer.max_len)
    ref, ref_mask = text_lib.encode_text(module, variables, jnp.asarray(ids), jnp.asarray(m))
    rows = slice(offsets[i], offsets[i + 1])
    np.testing.assert_array_equal(mask[rows], np.asarray(ref_mask))
    assert (~mask[rows]).any()  # Short captions: padding travels with the embeddings.
    np.testing.assert_allclose(emb[rows], np.asarray(ref), rtol=1e-4, atol=1e-4)
  # A changed setting never reads a stale cache: another caption length is another key.
  other = config.copy_and_resolve_references()
  other.data.tokenizer.max_len = 40
  assert cache.text_dir(other) != written["text"]
  with pytest.raises(VidgenError, match="vidgen data cache"):
    cache.make_loader(other, "train", training=True, process_index=0, process_count=1)


def test_train_steps_on_cached_batches(setup, tmp_path):
  config, _ = setup
  task = t2v_task.T2VTask(config)  # latent="cached": channels from the VAE workdir.
  assert task.text_frozen is not None
  it = task.make_train_iterator(config, process_index=0, process_count=1)
  batch = next(it)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  assert set(params) == {"dit"}  # Frozen, cached text: nothing of the encoder trains.
  grad_fn = jax.jit(jax.value_and_grad(task.loss, has_aux=True))
  for step in range(2):
    batch = next(it)
    (loss, _), grads = grad_fn(params, batch, jax.random.key(step))
    assert math.isfinite(float(loss))
    assert float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))) > 0
    params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
  assert task.flops_per_step(batch) > 0
  spec = task.batch_spec()  # What AOT compiles for: a first-bucket batch of the cache.
  loader = cache.make_loader(config, "train", training=True, process_index=0, process_count=1)
  first = next(k for k in range(loader.batches_per_epoch) if loader.local_part(k)[1] == 0)
  real = loader.map(first)
  assert {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in spec.items()} == {
      k: (v.shape, v.dtype) for k, v in real.items()}


def test_val_loss_reads_the_cache_like_the_trainer(setup):
  """The trainer's validation loss (train.eval_every) on a cached config: cached latents and
  text embeddings, the same numbers as encoding on the fly."""
  config, _ = setup
  task = t2v_task.T2VTask(config)
  live, live_task = on_the_fly(config)
  first = next(cache.make_eval_iterator(config, process_index=0, process_count=1))
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), first))
  rows = val_loss.val_loss(task, params, config, timesteps=(0.3, 0.7))
  ref = val_loss.val_loss(live_task, params, live, timesteps=(0.3, 0.7))
  assert rows[-1]["bucket"] == "all" and rows[-1]["clips"] == 6
  assert [r["bucket"] for r in rows] == ["3x4x4", "1x4x4", "all"]  # Latent shapes.
  assert len(rows) == len(ref)
  for got, want in zip(rows, ref):
    assert got["clips"] == want["clips"]
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-3)


def test_cache_command_and_missing_cache(setup, tmp_path, capsys):
  config, written = setup
  missing = config.copy_and_resolve_references()
  missing.data.clip.resize_method = "bilinear"  # Another key: nothing cached for it.
  with pytest.raises(VidgenError, match="no cached latents"):
    cache.make_train_iterator(missing, process_index=0, process_count=1)
  pixel = config.copy_and_resolve_references()
  pixel.model.latent, pixel.model.text.checkpoint = "pixel", ""
  with pytest.raises(VidgenError, match="nothing to cache"):
    cache.write_cache(pixel)
  # The command on an already written cache finds it (same key) and does not re-encode.
  mtime = os.path.getmtime(os.path.join(written["latents"], cache.MANIFEST))
  assert cache.write_cache(config) == written
  assert os.path.getmtime(os.path.join(written["latents"], cache.MANIFEST)) == mtime
  assert "already cached" in capsys.readouterr().out


def test_text_frozen_at_random_init_is_cached_and_keyed_by_seed(setup):
  """`model.text.frozen` without a checkpoint (the main job's default): the tiny T5 frozen at
  its seed's random init. Cached embeddings equal the task's own encoding; another seed is
  another encoder (other values, another cache); nothing of it trains."""
  config, written = setup
  frozen = config.copy_and_resolve_references()
  frozen.model.text.checkpoint, frozen.model.text.frozen = "", True
  text_dir = cache.write_text(frozen, log=lambda *_: None)
  assert text_dir != written["text"]  # Not the checkpoint's cache.
  task = t2v_task.T2VTask(frozen)
  assert task.text_frozen is not None
  assert task.text_model.config.vocab_size == frozen.data.tokenizer.vocab_size
  it = cache.make_train_iterator(frozen, process_index=0, process_count=1)
  batch = next(it)
  emb = task.text(None, jnp.asarray(batch["tokens"]), jnp.asarray(batch["text_mask"]))
  np.testing.assert_allclose(batch["text_embeddings"], np.asarray(emb), rtol=1e-4, atol=1e-4)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  assert set(params) == {"dit"}
  # The same seed rebuilds the same encoder (a resumed run, the export); another does not.
  again = t2v_task.frozen_text_encoder(frozen)[1]
  jax.tree.map(np.testing.assert_array_equal, again, task.text_frozen)
  other = frozen.copy_and_resolve_references()
  other.model.text.seed = 1
  assert cache.text_dir(other) != text_dir
  other_emb = t2v_task.T2VTask(other).text(None, jnp.asarray(batch["tokens"]),
                                           jnp.asarray(batch["text_mask"]))
  assert float(jnp.abs(other_emb - emb).mean()) > 1e-2
  local = frozen.copy_and_resolve_references()  # Another position-bias init: another cache.
  local.model.text.relpos_slopes, local.model.text.relpos_causal = (0.5, 0.25, 0.5, 0.25), True
  assert cache.text_dir(local) not in (text_dir, cache.text_dir(other))
  local_task = t2v_task.T2VTask(local)
  assert local_task.text_model.config.relative_attention_init_causal
  local_emb = local_task.text(None, jnp.asarray(batch["tokens"]), jnp.asarray(batch["text_mask"]))
  assert float(jnp.abs(local_emb - emb).mean()) > 1e-2
  with_checkpoint = config.copy_and_resolve_references()  # A trained bias: nothing to start.
  with_checkpoint.model.text.relpos_slopes = (0.5, 0.25, 0.5, 0.25)
  with pytest.raises(VidgenError, match="drop one of them"):
    t2v_task.T2VTask(with_checkpoint)
  joint = frozen.copy_and_resolve_references()
  joint.model.text.frozen = False  # Cached text of an encoder that trains: refused.
  with pytest.raises(VidgenError, match="text.frozen=True"):
    t2v_task.T2VTask(joint)
  with pytest.raises(VidgenError, match="frozen encoder"):
    cache.write_text(joint)


def test_clause_bags_are_cached_at_twice_the_width(setup, monkeypatch):
  """`model.text.clause_bags`: the frozen encoder's features followed by each token's clause
  bag. Its own cache key, which changes with the clause ends; cached embeddings equal the
  task's encoding; the boundaries are the tokenizer's clause-ending pieces; the transformer
  reads the wider text."""
  config, _ = setup
  frozen = config.copy_and_resolve_references()
  frozen.model.text.checkpoint, frozen.model.text.frozen = "", True
  bags = frozen.copy_and_resolve_references()
  bags.model.text.clause_bags = True
  text_dir = cache.write_text(bags, log=lambda *_: None)
  assert text_dir != cache.text_dir(frozen)
  tok = Tokenizer(data_config.tokenizer_path(bags.data))
  ends = tok.clause_boundaries()
  ids = tok.encode(["a red circle moves up and to the left. a blue square, and"], 32)[0][0]
  pieces = [tok._sp.id_to_piece(int(i)) for i in ids[ids != 0]]
  is_end = [int(i) in ends for i in ids[ids != 0]]
  assert "\u2581and" in pieces  # 'and' joins "up and to the left": not a clause end.
  assert is_end == [p in (".", ",", "</s>") for p in pieces] and sum(is_end) == 3
  from vidgen.data import tokenizer as tok_lib
  monkeypatch.setattr(tok_lib, "CLAUSE_ENDS", tok_lib.CLAUSE_ENDS + ("\u2581and",))
  assert tok.clause_boundaries() != ends and cache.text_dir(bags) != text_dir
  monkeypatch.undo()
  task = t2v_task.T2VTask(bags)
  assert task.text_model.config.clause_boundaries == ends
  batch = next(cache.make_train_iterator(bags, process_index=0, process_count=1))
  assert batch["text_embeddings"].shape[-1] == 2 * task.text_model.config.d_model
  emb = task.text(None, jnp.asarray(batch["tokens"]), jnp.asarray(batch["text_mask"]))
  np.testing.assert_allclose(batch["text_embeddings"], np.asarray(emb), rtol=1e-4, atol=1e-4)
  plain = t2v_task.T2VTask(frozen).text(None, jnp.asarray(batch["tokens"]),
                                         jnp.asarray(batch["text_mask"]))
  np.testing.assert_allclose(np.asarray(emb)[..., :plain.shape[-1]], plain, atol=1e-5)
  params = nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  assert params["dit"]["text_proj_0"]["kernel"].shape[0] == emb.shape[-1]

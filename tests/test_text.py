"""T5 encoder: the Hugging Face safetensors converter against a plain-numpy T5 forward."""
import dataclasses
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from vidgen.models import text as text_lib

CFG = dict(vocab_size=50, d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=2,
           relative_attention_num_buckets=8, relative_attention_max_distance=16)


def _hf_checkpoint(per_layer: bool, seed: int = 0) -> dict:
  """Random tensors in the Hugging Face T5EncoderModel layout ([out, in] Linear weights)."""
  c = CFG
  rng = np.random.default_rng(seed)
  inner = c["num_heads"] * c["d_kv"]
  w = lambda *s: (rng.standard_normal(s) / math.sqrt(s[-1])).astype(np.float32)
  t = {"shared.weight": rng.standard_normal((c["vocab_size"], c["d_model"])).astype(np.float32),
       "encoder.final_layer_norm.weight": 1 + 0.1 * w(c["d_model"])}
  for i in range(c["num_layers"]):
    p = f"encoder.block.{i}.layer"
    for name in "qkv":
      t[f"{p}.0.SelfAttention.{name}.weight"] = w(inner, c["d_model"])
    t[f"{p}.0.SelfAttention.o.weight"] = w(c["d_model"], inner)
    if i == 0 or per_layer:
      t[f"{p}.0.SelfAttention.relative_attention_bias.weight"] = w(
          c["relative_attention_num_buckets"], c["num_heads"])
    t[f"{p}.0.layer_norm.weight"] = 1 + 0.1 * w(c["d_model"])
    t[f"{p}.1.layer_norm.weight"] = 1 + 0.1 * w(c["d_model"])
    t[f"{p}.1.DenseReluDense.wi_0.weight"] = w(c["d_ff"], c["d_model"])
    t[f"{p}.1.DenseReluDense.wi_1.weight"] = w(c["d_ff"], c["d_model"])
    t[f"{p}.1.DenseReluDense.wo.weight"] = w(c["d_model"], c["d_ff"])
  return t


def _np_bucket(rel, num_buckets, max_distance):
  """Hugging Face's _relative_position_bucket (bidirectional), written out in numpy."""
  num_buckets //= 2
  out = (rel > 0).astype(np.int64) * num_buckets
  rel = np.abs(rel)
  max_exact = num_buckets // 2
  ratio = np.log(np.maximum(rel, 1) / max_exact) / np.log(max_distance / max_exact)
  large = max_exact + (ratio * (num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return out + np.where(rel < max_exact, rel, large)


def _np_t5(t, tokens, mask, per_layer):
  """Reference T5 v1.1 / umT5 encoder forward in float64 numpy."""
  c = CFG
  h, dk = c["num_heads"], c["d_kv"]
  rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * w
  gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  x = t["shared.weight"].astype(np.float64)[tokens]
  b, n = tokens.shape
  pos = np.arange(n)
  buckets = _np_bucket(pos[None, :] - pos[:, None], c["relative_attention_num_buckets"],
                       c["relative_attention_max_distance"])
  bias = None
  for i in range(c["num_layers"]):
    p = f"encoder.block.{i}.layer"
    if i == 0 or per_layer:
      table = t[f"{p}.0.SelfAttention.relative_attention_bias.weight"]
      bias = table[buckets].transpose(2, 0, 1)[None]  # [1, H, q, k]
    y = rms(x, t[f"{p}.0.layer_norm.weight"])
    q, k, v = (
        (y @ t[f"{p}.0.SelfAttention.{m}.weight"].T).reshape(b, n, h, dk) for m in "qkv")
    s = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
    s = np.where(mask[:, None, None, :], s, -1e9)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, n, h * dk)
    x = x + o @ t[f"{p}.0.SelfAttention.o.weight"].T
    y = rms(x, t[f"{p}.1.layer_norm.weight"])
    ff = gelu(y @ t[f"{p}.1.DenseReluDense.wi_0.weight"].T) * (
        y @ t[f"{p}.1.DenseReluDense.wi_1.weight"].T)
    x = x + ff @ t[f"{p}.1.DenseReluDense.wo.weight"].T
  return rms(x, t["encoder.final_layer_norm.weight"])


@pytest.mark.parametrize("variant,per_layer", [("t5_v1_1_small", False), ("umt5_small", True)])
def test_hf_converter_matches_numpy_reference(tmp_path, variant, per_layer):
  tensors = _hf_checkpoint(per_layer)
  path = str(tmp_path / "model.safetensors")
  text_lib.write_safetensors(path, tensors)
  overrides = {k: v for k, v in CFG.items() if k != "vocab_size"}
  module, variables = text_lib.load_hf_t5_encoder(path, variant, **overrides)
  assert module.config.vocab_size == CFG["vocab_size"]
  assert module.config.per_layer_relpos == per_layer
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, CFG["vocab_size"], (2, 12)).astype(np.int32)
  mask = np.ones((2, 12), bool)
  mask[1, 7:] = False
  tokens[~mask] = 0
  emb, out_mask = jax.jit(lambda v, t, m: text_lib.encode_text(module, v, t, m))(
      variables, tokens, mask)
  want = _np_t5(tensors, tokens, mask, per_layer)
  np.testing.assert_allclose(np.asarray(emb)[mask], want[mask], atol=1e-4, rtol=1e-4)
  assert np.all(np.asarray(emb)[~mask] == 0) and np.array_equal(out_mask, mask)
  # Padding tokens do not change the valid positions.
  tokens2 = tokens.copy()
  tokens2[1, 7:] = 5
  emb2, _ = text_lib.encode_text(module, variables, tokens2, mask)
  np.testing.assert_allclose(emb2[1, :7], emb[1, :7], atol=1e-5)


def test_bucket_function_matches_hf():
  rel = np.arange(-200, 201)
  for nb, md in ((32, 128), (8, 16)):
    np.testing.assert_array_equal(text_lib.relative_position_bucket(rel, nb, md),
                                  _np_bucket(rel, nb, md))


def test_safetensors_round_trip_bf16_and_missing_key(tmp_path):
  path = str(tmp_path / "x.safetensors")
  a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
  b = np.ones((4,), np.float16)
  text_lib.write_safetensors(path, {"a": a, "b": b})
  back = text_lib.read_safetensors(path)
  assert back["a"].dtype == a.dtype and np.array_equal(back["a"], a)
  assert np.array_equal(back["b"], b)
  with pytest.raises(KeyError, match="encoder.block.0"):
    text_lib.convert_hf_t5_encoder({"shared.weight": np.zeros((3, 4))},
                                   text_lib.get_t5_config("tiny"))


def test_variant_sizes():
  """T5 v1.1 encoder sizes (eval_shape: nothing allocated): base ~110M, xxl ~4.8B."""
  def count(variant):
    m = text_lib.T5Encoder(text_lib.get_t5_config(variant))
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                                           jnp.ones((1, 4), bool)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(
        jax.tree.map(lambda b: getattr(b, "value", b), shapes,
                     is_leaf=lambda b: hasattr(b, "names"))))
  assert 100e6 < count("t5_v1_1_base") < 120e6
  assert 4.6e9 < count("t5_v1_1_xxl") < 4.9e9


def test_scratch_init_attends_broadly():
  """Trained from scratch (the tiny encoder), T5 starts as HF T5 does: unscaled attention with
  queries initialised at std (d_model d_kv)^-1/2 and a small position bias, so first-layer
  logits have unit scale and a token spreads its attention. With unit-variance queries the
  logits had std sqrt(d_kv) ~ 5.7: near one-hot attention that barely learns."""
  config = text_lib.get_t5_config("tiny", vocab_size=512)
  tokens = jax.random.randint(jax.random.key(1), (4, 24), 1, 512)
  params = jax.tree.map(
      lambda b: getattr(b, "value", b),
      text_lib.T5Encoder(config).init(jax.random.key(0), tokens, jnp.ones((4, 24), bool)),
      is_leaf=lambda b: hasattr(b, "names"))["params"]
  layer = params["layers_0"]
  x = params["token_embed"]["embedding"][tokens]
  h = x / jnp.sqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + 1e-6)
  q = jnp.einsum("bld,dhk->blhk", h, layer["attention"]["q"]["kernel"])
  k = jnp.einsum("bld,dhk->blhk", h, layer["attention"]["k"]["kernel"])
  pos = np.arange(24)
  buckets = text_lib.relative_position_bucket(pos[None, :] - pos[:, None],
                                              config.relative_attention_num_buckets,
                                              config.relative_attention_max_distance)
  bias = jnp.transpose(layer["relpos_bias"]["embedding"][buckets], (2, 0, 1))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias
  assert 0.5 < float(jnp.std(logits)) < 2.0
  assert float(jnp.mean(jnp.max(jax.nn.softmax(logits, -1), -1))) < 0.5


def _encode(config, tokens, seed=0):
  module = text_lib.T5Encoder(config)
  mask = jnp.ones(tokens.shape, bool)
  variables = nn.meta.unbox(jax.jit(module.init)(jax.random.key(seed), tokens, mask))
  return module.apply(variables, tokens, mask), variables


def test_local_position_bias_init_binds_each_word_to_the_words_before_it():
  """`relative_attention_init_slopes` starts the bias table at -slope * distance, and with
  `relative_attention_init_causal` masks the words after each query: a word's feature then
  changes with its neighbour (the frozen encoder binds "red" to the "circle" after it) and
  not at all with the words after it. T5's own init barely tells the contexts apart."""
  slopes = (0.5, 0.25, 0.5, 0.25)
  local = text_lib.get_t5_config("tiny", vocab_size=512, relative_attention_init_slopes=slopes,
                                 relative_attention_init_causal=True)
  table = np.asarray(text_lib.local_bias_table(local))
  # Exact buckets 0..7 are the distances 0..7 before the query; the other half is masked.
  np.testing.assert_allclose(table[:8], -np.arange(8)[:, None] * np.asarray(slopes)[None])
  assert (table[16:] == -1e4).all()
  both = text_lib.get_t5_config("tiny", vocab_size=512, relative_attention_init_slopes=slopes)
  assert np.isfinite(np.asarray(text_lib.local_bias_table(both))).all()

  tokens = jax.random.randint(jax.random.key(1), (8, 24), 1, 512)
  before = tokens.at[:, 9].set((tokens[:, 9] + 7) % 511 + 1)  # The word before position 10.
  after = tokens.at[:, 14].set((tokens[:, 14] + 7) % 511 + 1)  # A word after it.
  change = lambda a, b: float(jnp.linalg.norm(a[:, 10] - b[:, 10]) / jnp.linalg.norm(a[:, 10]))
  x, variables = _encode(local, tokens)
  np.testing.assert_allclose(variables["params"]["layers_0"]["relpos_bias"]["embedding"], table)
  assert change(x, _encode(local, after)[0]) == 0.0  # Causal: later words do not reach it.
  bound = change(x, _encode(local, before)[0])
  t5 = text_lib.get_t5_config("tiny", vocab_size=512)
  y = _encode(t5, tokens)[0]
  assert bound > 0.3 and bound > 2.5 * change(y, _encode(t5, before)[0])  # 0.49 vs 0.13
  assert change(y, _encode(t5, after)[0]) > 0.0
  # From a bundle's JSON the slopes come back as a list; the config stays equal and hashable.
  again = text_lib.T5Config(**json.loads(json.dumps(dataclasses.asdict(local))))
  assert again == local and hash(again) == hash(local)


def test_local_position_bias_init_refuses_bad_slopes():
  with pytest.raises(ValueError, match="one slope >= 0 per head"):
    text_lib.get_t5_config("tiny", relative_attention_init_slopes=(0.5, 0.25))
  with pytest.raises(ValueError, match="one slope >= 0 per head"):
    text_lib.get_t5_config("tiny", relative_attention_init_slopes=(0.5, -1.0, 0.5, 0.5))
  with pytest.raises(ValueError, match="needs relative_attention_init_slopes"):
    text_lib.get_t5_config("tiny", relative_attention_init_causal=True)


def test_clause_bags_bind_each_clauses_words():
  """`clause_bags`: every token gets the bag (sum / sqrt n) of its clause's token embeddings.
  Two captions with the same words but the motions bound to the other objects have the same
  bag of words over the whole caption, and different clause bags at every object token."""
  # Ids: 2 EOS, 3 '.', 4 ';'; words: 10 red, 11 blue, 12 circle, 13 square, 14 left, 15 up.
  ends = (2, 3, 4)
  first = jnp.asarray([[10, 12, 14, 3, 11, 13, 15, 2, 0, 0],  # red circle left . blue square up
                       [10, 12, 15, 4, 11, 13, 14, 2, 0, 0]])  # ... up ; blue square left
  mask = first != 0
  table = jax.random.normal(jax.random.key(0), (20, 8))
  bag = np.asarray(text_lib.clause_bags(table[first], first, mask, ends))
  t = np.asarray(table)
  np.testing.assert_allclose(bag[0, 0], (t[10] + t[12] + t[14]) / np.sqrt(3), rtol=1e-5)
  np.testing.assert_allclose(bag[0, 3], bag[0, 0])  # The '.' ends (and belongs to) clause 1.
  np.testing.assert_allclose(bag[0, 5], (t[11] + t[13] + t[15]) / np.sqrt(3), rtol=1e-5)
  np.testing.assert_allclose(bag[0, 7], bag[0, 5])
  assert (bag[:, 8:] == 0).all()  # Padding.
  whole = lambda row: t[np.asarray(first[row])[np.asarray(mask[row])]].sum(0)
  np.testing.assert_allclose(whole(0) - t[3], whole(1) - t[4], rtol=1e-5)  # Same words...
  assert np.linalg.norm(bag[0, 0] - bag[1, 0]) > 1
  assert np.linalg.norm(bag[0, 5] - bag[1, 5]) > 1  # ...bound otherwise.

  plain = text_lib.get_t5_config("tiny", vocab_size=20)
  bags = dataclasses.replace(plain, clause_boundaries=ends)
  assert bags.output_dim == 2 * plain.d_model == 256
  variables = nn.meta.unbox(text_lib.T5Encoder(bags).init(jax.random.key(0), first, mask))
  x = text_lib.T5Encoder(bags).apply(variables, first, mask)
  y = text_lib.T5Encoder(plain).apply(variables, first, mask)
  np.testing.assert_allclose(np.asarray(x[..., :128]), np.asarray(y), rtol=1e-5, atol=1e-6)
  embed = variables["params"]["token_embed"]["embedding"]
  want = text_lib.clause_bags(jnp.asarray(embed)[first], first, mask, ends)
  np.testing.assert_allclose(np.asarray(x[..., 128:]), np.asarray(want), rtol=1e-5, atol=1e-6)
  again = text_lib.T5Config(**json.loads(json.dumps(dataclasses.asdict(bags))))
  assert again == bags and hash(again) == hash(bags)

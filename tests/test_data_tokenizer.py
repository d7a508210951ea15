"""The caption tokenizer: training, padding at id 0, encode/decode round trip, pickling."""
import pickle

import numpy as np

from vidgen.data import tokenizer as tok

CAPTIONS = [f"a {size} {color} {shape} moves {d} across a {bg} background"
            for size in ("small", "large") for color in ("red", "green", "blue", "white")
            for shape in ("circle", "square", "cross") for d in ("left", "up")
            for bg in ("black", "navy")]


def test_round_trip_padding_and_mask(tmp_path):
  path = tok.train(CAPTIONS, str(tmp_path / "tokenizer.model"), vocab_size=80)
  t = tok.Tokenizer(path)
  assert 10 < t.vocab_size <= 80
  texts = [CAPTIONS[0], CAPTIONS[-1], "red"]
  ids, mask = t.encode(texts, max_len=64)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (3, 64)
  np.testing.assert_array_equal(mask, ids != 0)
  assert mask[2].sum() < mask[0].sum() < 64  # Shorter text, more padding; none truncated.
  assert (ids[mask] > 0).all() and (ids < t.vocab_size).all()
  assert t.decode(ids) == texts
  short_ids, short_mask = t.encode([CAPTIONS[0]], max_len=3)  # Truncated, never overflowing.
  assert short_ids.shape == (1, 3) and short_mask.all()
  again = pickle.loads(pickle.dumps(t))  # grain workers receive it pickled.
  np.testing.assert_array_equal(again.encode(texts, 64)[0], ids)


def test_words_of_a_small_caption_vocabulary_stay_whole(tmp_path):
  """A caption set with few words gets one piece per word (unigram split them into letters
  and stopped short of vocab_size), so the text encoder reads words, not fragments."""
  path = tok.train(CAPTIONS * 4, str(tmp_path / "t.model"), vocab_size=128)
  t = tok.Tokenizer(path)
  assert t.vocab_size == 128
  ids, mask = t.encode(CAPTIONS, max_len=64)
  words = np.array([len(c.split()) for c in CAPTIONS])
  np.testing.assert_array_equal(mask.sum(1), words + 1)  # Each word one piece, plus EOS.


def test_too_small_vocabulary_is_a_clear_error(tmp_path):
  import pytest
  from vidgen.errors import VidgenError
  with pytest.raises(VidgenError, match="try another data.tokenizer.vocab_size"):
    tok.train(CAPTIONS, str(tmp_path / "t.model"), vocab_size=5)
  with pytest.raises(VidgenError, match="vidgen data tokenizer"):
    tok.Tokenizer(str(tmp_path / "missing.model"))

"""Caption tokenizer: a sentencepiece model trained on a dataset's captions; id 0 is padding."""
from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from vidgen.errors import VidgenError

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
# Pieces that end a clause, for the text encoder's clause bags (text.clause_bags). Not 'and':
# it splits "moves up and to the left" in two, leaving half the direction without its object
# (docs/benchmarks.md, "Session 22").
CLAUSE_ENDS = (".", "\u2581.", ",", "\u2581,", ";", "\u2581;")


def train(captions: Iterable[str], path: str, vocab_size: int) -> str:
  """Trains a BPE sentencepiece model on captions and writes it to `path`."""
  model = io.BytesIO()
  captions = [c for c in captions if c.strip()]
  if not captions:
    raise VidgenError("no captions to train the tokenizer on")
  try:
    _train(captions, model, vocab_size)
  except RuntimeError as e:
    raise VidgenError(f"sentencepiece could not train a {vocab_size}-piece tokenizer: {e}; "
                      "try another data.tokenizer.vocab_size") from e
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return path


def _train(captions: list[str], model: io.BytesIO, vocab_size: int) -> None:
  # BPE, not unigram: on a caption set with a small vocabulary (the Shapes World's has 88
  # words) unigram stopped at 121 pieces whatever vocab_size asked, split "white" into
  # w|hi|t|e and made captions 51 pieces long on average (half cut at 48); BPE merges up to
  # vocab_size, keeps every word one piece and averages 23 (docs/benchmarks.md).
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(captions), model_writer=model, vocab_size=vocab_size,
      model_type="bpe", pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1,
      hard_vocab_limit=False,  # Small caption sets have fewer pieces than vocab_size.
      character_coverage=1.0, normalization_rule_name="nmt_nfkc_cf",  # Case-folded.
      minloglevel=2)


class Tokenizer:
  """`encode(texts, max_len) -> (ids int32 [N, L], mask bool [N, L])`; 0 = padding."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise VidgenError(f"no tokenizer at {path}; run `vidgen data tokenizer --config=...`")
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_file=path)

  def __getstate__(self):  # Picklable for grain workers: reload from the path.
    return {"path": self.path}

  def __setstate__(self, state):
    self.__init__(state["path"])

  @property
  def vocab_size(self) -> int:
    return int(self._sp.get_piece_size())

  def encode(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ending in EOS, truncated/padded to max_len, and the valid-token mask."""
    ids = np.zeros((len(texts), max_len), np.int32)
    for i, pieces in enumerate(self._sp.encode(list(texts))):
      row = (list(pieces) + [EOS_ID])[:max_len]
      ids[i, :len(row)] = row
    return ids, ids != PAD_ID

  def clause_boundaries(self) -> tuple[int, ...]:
    """Ids of the CLAUSE_ENDS pieces this vocabulary has, and EOS."""
    ids = {int(self._sp.piece_to_id(p)) for p in CLAUSE_ENDS}
    return tuple(sorted((ids - {UNK_ID}) | {EOS_ID}))

  def decode(self, ids: np.ndarray) -> list[str]:
    """[N, L] (or [L]) ids -> texts; padding and EOS are dropped."""
    ids = np.asarray(ids)
    rows = ids[None] if ids.ndim == 1 else ids
    texts = [self._sp.decode([int(t) for t in row if t not in (PAD_ID, EOS_ID)])
             for row in rows]
    return texts

"""Captions from metadata: detailed, short and paraphrased, each true to the scene."""
from __future__ import annotations

from typing import Any

import numpy as np

from vidgen.world import palette as P

# Words that may name each attribute value in any caption (tests and tools read these).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
  "circle": ("circle", "disk", "ball"),
  "square": ("square", "box"),
  "triangle": ("triangle",),
  "cross": ("cross", "plus sign"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
  "small": ("small", "little"), "large": ("large", "big")}
SPEED_WORDS: dict[str, tuple[str, ...]] = {
  "slow": ("slowly", "gently", "at a slow pace"),
  "fast": ("quickly", "fast", "rapidly", "at high speed")}
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
  "left": ("to the left", "leftward"),
  "right": ("to the right", "rightward"),
  "up": ("upward", "up"),
  "down": ("downward", "down"),
  "up-left": ("up and to the left", "toward the upper left", "diagonally up-left"),
  "up-right": ("up and to the right", "toward the upper right", "diagonally up-right"),
  "down-left": ("down and to the left", "toward the lower left", "diagonally down-left"),
  "down-right": ("down and to the right", "toward the lower right", "diagonally down-right"),
}
MOVE_VERBS = ("moves", "glides", "drifts", "travels", "slides")
STILL_PHRASES = ("sits still", "stays still", "rests in place", "does not move")
BACKGROUND_WORDS = ("background", "backdrop")
EDGE_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}


def _first(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
  """The canonical word, or a random synonym when a generator is given."""
  return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _bounce_clause(obj: dict[str, Any]) -> str:
  edges = list(dict.fromkeys(b["edge"] for b in obj["bounces"]))  # first contacts, in order
  if not edges:
    return ""
  if len(edges) == 1:
    return f" and bounces off the {edges[0]} edge"
  return f" and bounces off the {', the '.join(edges[:-1])} and the {edges[-1]} edges"


def object_phrase(obj: dict[str, Any], rng: np.random.Generator | None = None, *,
                  article: str = "A", with_size: bool = True, background: str = "") -> str:
  """'A large red circle moves slowly to the left [across a black background] and bounces
  off the left edge, leaving a red trail'."""
  size = _first(SIZE_WORDS[obj["size"]], rng) + " " if with_size else ""
  noun = f"{article} {size}{obj['color']} {_first(SHAPE_WORDS[obj['shape']], rng)}"
  if obj["direction"] == P.STILL:
    text = f"{noun} {_first(STILL_PHRASES, rng)}"
    return text + (f" on {background}" if background else "")
  verb = _first(MOVE_VERBS, rng)
  speed = _first(SPEED_WORDS[obj["speed"]], rng)
  direction = _first(DIRECTION_WORDS[obj["direction"]], rng)
  text = f"{noun} {verb} {speed} {direction}"
  if background:
    text += f" across {background}"
  text += _bounce_clause(obj)
  if obj["trail"]:
    text += f", leaving a {obj['color']} trail"
  return text


def _background(meta: dict[str, Any], rng: np.random.Generator | None) -> str:
  return f"a {meta['background']} {_first(BACKGROUND_WORDS, rng)}"


def _pillar_sentence(meta: dict[str, Any], rng: np.random.Generator | None) -> str:
  if not meta.get("pillar"):
    return ""
  return " " + _first(("A brown pillar stands in front.", "A brown pillar stands in the "
                       "foreground.", "A brown pillar stands in front of the scene."), rng)


def detailed_caption(meta: dict[str, Any], rng: np.random.Generator | None = None) -> str:
  """Every attribute of the scene; with rng, synonyms are drawn (a paraphrase)."""
  objects = meta["objects"]
  bg = _background(meta, rng)
  if len(objects) == 1:
    text = object_phrase(objects[0], rng, background=bg) + "."
  else:
    first = object_phrase(objects[0], rng, article="a")
    rest = " ".join(object_phrase(o, rng) + "." for o in objects[1:])
    text = f"On {bg}, {first}. {rest}"
  return text + _pillar_sentence(meta, rng)


def short_caption(meta: dict[str, Any]) -> str:
  """'red circle moving left' (one clause per object)."""
  parts = []
  for obj in meta["objects"]:
    motion = ("staying still" if obj["direction"] == P.STILL
              else f"moving {obj['direction']}")
    parts.append(f"{obj['color']} {obj['shape']} {motion}")
  return " and ".join(parts)


def _list_template(meta: dict[str, Any], rng: np.random.Generator) -> str:
  """'A black background with a big red disk gliding leftward ...' style."""
  clauses = []
  for obj in meta["objects"]:
    size = _first(SIZE_WORDS[obj["size"]], rng)
    noun = f"a {size} {obj['color']} {_first(SHAPE_WORDS[obj['shape']], rng)}"
    if obj["direction"] == P.STILL:
      clauses.append(f"{noun} that {_first(STILL_PHRASES, rng)}")
      continue
    verb = _first(MOVE_VERBS, rng)
    clause = (f"{noun} that {verb} {_first(SPEED_WORDS[obj['speed']], rng)} "
              f"{_first(DIRECTION_WORDS[obj['direction']], rng)}{_bounce_clause(obj)}")
    if obj["trail"]:
      clause += f" and leaves a {obj['color']} trail behind it"
    clauses.append(clause)
  text = f"{_background(meta, rng).capitalize()} with " + ", and ".join(clauses) + "."
  return text + _pillar_sentence(meta, rng)


def captions(meta: dict[str, Any], rng: np.random.Generator, n_paraphrases: int = 4
             ) -> list[str]:
  """[detailed, short, paraphrase...]; paraphrases alternate templates and draw synonyms."""
  out = [detailed_caption(meta), short_caption(meta)]
  for k in range(n_paraphrases):
    out.append(detailed_caption(meta, rng) if k % 2 == 0 else _list_template(meta, rng))
  return out

"""The Shapes World oracle: real clips score near-perfectly, broken clips fail the right way."""
import numpy as np
import pytest

from vidgen import world
from vidgen.evaluate import oracle as O
from vidgen.world import palette as P
from vidgen.world import scene as S

KW = dict(seed=0, height=32, width=32, frames=16, fps=8.0)


def _scene(objects, *, pillar_x=None, background="black", height=32, width=32, frames=16,
           fps=8.0):
  """Hand-made metadata: objects as (color, shape, size, direction, speed, trail, (x, y) in S)."""
  s = min(height, width)
  metas, centers = [], []
  for color, shape, size, direction, speed, trail, (x, y) in objects:
    lo, hi = S.center_bounds(size, height, width)
    vel = S.velocity_px(direction, speed, height, width)
    start = np.array([x, y]) * s
    c, bounces = S.trajectory(start, vel, lo, hi, frames, fps)
    centers.append(c)
    metas.append(dict(color=color, shape=shape, size=size, direction=direction, speed=speed,
                      trail=trail, start=start.tolist(), start_s=[x, y], bounces=bounces))
  pillar = None if pillar_x is None else {"x": pillar_x * s, "x_s": pillar_x,
                                          "width": P.PILLAR_WIDTH * s}
  return {"version": 1, "split": "test", "index": 0, "seed": 0, "height": height,
          "width": width, "frames": frames, "fps": fps, "background": background,
          "objects": metas, "pillar": pillar, "heldout": [],
          "centers": np.stack(centers, 1).tolist()}


@pytest.fixture(scope="module")
def clips():
  return O.real_clips("train", 40, **KW)


def test_real_clips_score_near_perfectly(clips):
  results = O.score_real(clips)
  summary = O.summarize(results)
  for attr in O.ATTRIBUTES:
    assert summary[attr]["n"] > 0, attr  # every kind of scene is in the sample
    assert summary[attr]["accuracy"] >= 0.95, (attr, summary[attr])
  assert summary["all_correct"]["accuracy"] >= 0.9
  kinds = [m for m in (c["metadata"] for c in clips)]
  assert any(m["pillar"] for m in kinds) and any(len(m["objects"]) == 2 for m in kinds)
  assert any(o["trail"] for m in kinds for o in m["objects"])
  assert any(o["bounces"] for m in kinds for o in m["objects"])
  assert any(o["direction"] == "still" for m in kinds for o in m["objects"])


@pytest.mark.parametrize("height,width,split", [(64, 64, "heldout"), (24, 40, "test")])
def test_real_clips_other_resolutions(height, width, split):
  clips = O.real_clips(split, 12, **{**KW, "height": height, "width": width})
  summary = O.summarize(O.score_real(clips))
  assert summary["all_correct"]["accuracy"] >= 11 / 12


def test_noisy_real_clips_still_score(clips):
  rng = np.random.default_rng(0)
  ok = 0
  for c in clips[:12]:
    noisy = np.clip(c["video"] + rng.normal(0, 12, c["video"].shape), 0, 255).astype(np.uint8)
    ok += O.score_clip(noisy, c["metadata"])["all_correct"]
  assert ok >= 11


def test_shuffled_and_static_are_much_worse(clips):
  real = O.summarize(O.score_real(clips))
  shuffled = O.summarize(O.score_shuffled(clips))
  static = O.summarize(O.score_static(clips))
  assert shuffled["all_correct"]["accuracy"] <= 0.2
  assert shuffled["color"]["accuracy"] < real["color"]["accuracy"] - 0.5
  assert shuffled["shape"]["accuracy"] < 0.7
  assert static["moves"]["accuracy"] < 0.3
  assert static["all_correct"]["accuracy"] < 0.3
  assert static["color"]["accuracy"] >= 0.95  # a still frame still shows the right things


def test_wrong_color_fails_color_only():
  meta = _scene([("red", "square", "large", "right", "slow", False, (0.3, 0.5))])
  video = world.render(meta)
  assert O.score_clip(video, meta)["all_correct"]
  recolored = video.copy()
  red = np.all(video == P.OBJECT_COLORS["red"], axis=-1)
  recolored[red] = P.OBJECT_COLORS["blue"]
  res = O.score_clip(recolored, meta)
  assert res["color"] is False
  assert res["shape"] and res["size"] and res["direction"] and res["count"]


def test_wrong_shape_and_size():
  meta = _scene([("green", "triangle", "small", "down", "fast", False, (0.5, 0.2))],
                height=64, width=64)
  assert O.score_clip(world.render(meta), meta)["all_correct"]
  for attr, change in [("shape", {"shape": "circle"}), ("shape", {"shape": "cross"}),
                       ("size", {"size": "large"})]:
    wrong = {**meta, "objects": [{**meta["objects"][0], **change}]}
    res = O.score_clip(world.render(wrong), meta)
    assert res[attr] is False and res["color"] and res["direction"], (attr, change)


def test_reversed_motion_fails_direction():
  meta = _scene([("cyan", "circle", "large", "up-right", "slow", False, (0.25, 0.7))])
  assert not meta["objects"][0]["bounces"]
  video = world.render(meta)
  assert O.score_clip(video, meta)["direction"]
  res = O.score_clip(video[::-1], meta)
  assert res["direction"] is False and res["moves"] and res["shape"]


def test_speed_is_judged():
  slow = _scene([("orange", "square", "small", "left", "slow", False, (0.8, 0.5))])
  fast = _scene([("orange", "square", "small", "left", "fast", False, (0.8, 0.5))],
                frames=8)
  assert O.score_clip(world.render(slow), slow)["speed"]
  assert O.score_clip(world.render(fast), fast)["speed"]
  wrong = {**fast, "objects": [{**fast["objects"][0], "speed": "slow"}]}
  assert O.score_clip(world.render(fast), wrong)["speed"] is False
  assert O.score_clip(world.render(slow)[:8], fast)["speed"] is False


def test_still_object_that_moves_and_static_clip():
  meta = _scene([("white", "cross", "large", "still", None, False, (0.5, 0.5))])
  assert O.score_clip(world.render(meta), meta)["moves"]
  moving = _scene([("white", "cross", "large", "right", "slow", False, (0.3, 0.5))])
  assert O.score_clip(world.render(moving), meta)["moves"] is False
  assert O.score_clip(O.static_video(world.render(moving)), moving)["moves"] is False


def test_missing_object_fails_count():
  meta = _scene([("red", "circle", "large", "right", "slow", False, (0.25, 0.3)),
                 ("yellow", "cross", "large", "left", "slow", False, (0.75, 0.7))])
  assert O.score_clip(world.render(meta), meta)["all_correct"]
  only_red = {**meta, "objects": meta["objects"][:1],
              "centers": np.asarray(meta["centers"])[:, :1].tolist()}
  res = O.score_clip(world.render(only_red), meta, details=True)
  assert res["count"] is False and res["all_correct"] is False
  red = res["details"]["objects"][0]
  assert red["color"] and red["shape"] and red["direction"]
  extra = O.score_clip(world.render(meta), only_red)
  assert extra["count"] is False


def test_object_vanishing_behind_pillar_fails_persistence():
  meta = _scene([("magenta", "square", "small", "right", "fast", False, (0.1, 0.5))],
                pillar_x=0.5, background="navy")
  video = world.render(meta)
  res = O.score_clip(video, meta)
  assert res["persistence"] is True and res["all_correct"]
  # Cut the object from the frame after it first reaches the pillar onwards.
  empty = {**meta, "objects": [], "centers": [[] for _ in range(16)]}
  xs = np.asarray(meta["centers"])[:, 0, 0]
  half = P.SIZES["small"] * 32 / 2
  k = int(np.argmax(np.abs(xs - meta["pillar"]["x"]) < half + meta["pillar"]["width"] / 2))
  vanished = video.copy()
  vanished[k + 1:] = world.render(empty)[k + 1:]
  assert 2 < k < 8
  res = O.score_clip(vanished, meta)
  assert res["persistence"] is False and res["color"] and res["shape"]


def test_trail_must_appear_and_stay():
  meta = _scene([("green", "circle", "small", "down-right", "fast", True, (0.15, 0.15))])
  video = world.render(meta)
  assert O.score_clip(video, meta)["trail"] is True
  no_trail = world.render({**meta, "objects": [{**meta["objects"][0], "trail": False}]})
  assert O.score_clip(no_trail, meta)["trail"] is False  # the prompt asked for a trail
  plain = {**meta, "objects": [{**meta["objects"][0], "trail": False}]}
  assert O.score_clip(video, plain)["trail"] is False    # a trail nobody asked for
  # A trail that fades: paint from the first half is gone at the end.
  faded = video.copy()
  bg = np.array(P.BACKGROUNDS["black"], np.uint8)
  lab = O.snap(video)
  first_half = (lab[7] == P.PALETTE_INDEX["green"]) & (lab[-1] == P.PALETTE_INDEX["green"])
  obj_last = O.snap(no_trail)[-1] == P.PALETTE_INDEX["green"]
  faded[-1][first_half & ~obj_last] = bg
  assert O.score_clip(faded, meta)["trail"] is False


def test_background_flicker():
  meta = _scene([("blue", "square", "large", "left", "slow", False, (0.7, 0.5))],
                background="navy")
  video = world.render(meta)
  res = O.score_clip(video, meta)
  assert res["background"] and res["flicker"]
  bg = np.all(video == P.BACKGROUNDS["navy"], axis=-1)
  swapped = video.copy()
  swapped[3][bg[3]] = P.BACKGROUNDS["black"]  # one frame with another background
  res = O.score_clip(swapped, meta)
  assert res["flicker"] is False and res["background"] is True
  brighter = video.astype(np.int32)
  brighter[5:7][bg[5:7]] += 25  # a brightness pulse that still snaps to navy
  res = O.score_clip(np.clip(brighter, 0, 255).astype(np.uint8), meta)
  assert res["flicker"] is False and res["background"] is True
  assert O.score_clip(video, {**meta, "background": "gray"})["background"] is False


def test_single_frame_has_no_motion_attributes():
  clip = world.generate_clip("test", 1, **{**KW, "frames": 1})
  res = O.score_clip(clip["video"], clip["metadata"])
  for attr in ("moves", "direction", "speed", "persistence", "trail", "flicker"):
    assert res[attr] is None
  assert res["all_correct"] and res["color"] and res["shape"]


def test_summarize_confidence_intervals():
  results = [{a: (i % 4 != 0) for a in O.ATTRIBUTES} | {"all_correct": i % 2 == 0, "trail": None}
             for i in range(200)]
  summary = O.summarize(results)
  assert summary["color"]["accuracy"] == pytest.approx(0.75)
  assert summary["color"]["ci_low"] < 0.75 < summary["color"]["ci_high"]
  assert summary["color"]["ci_high"] - summary["color"]["ci_low"] < 0.2
  assert summary["trail"] == {"accuracy": None, "ci_low": None, "ci_high": None, "n": 0}
  assert summary["all_correct"]["n"] == 200

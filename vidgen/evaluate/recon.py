"""Reconstruction quality of the autoencoder: PSNR, SSIM, per bucket, and a side-by-side PNG.

`evaluate_vae(config, workdir)` reconstructs the validation split, writes
`workdir/eval/recon.json` and `workdir/eval/recon.png`, and measures the latent statistics
(written with the export) if the workdir has none yet.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import ndimage

from vidgen.errors import VidgenError


def psnr(original: np.ndarray, recon: np.ndarray) -> float:
  """PSNR in dB of two uint8 (0..255) arrays of equal shape (one clip or many)."""
  a = np.asarray(original, np.float64)
  b = np.asarray(recon, np.float64)
  mse = np.mean((a - b) ** 2)
  return float(10.0 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def _gaussian_filter(x: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
  """'valid' 11x11 Gaussian filtering over the last two axes of [..., H, W]."""
  r = size // 2
  g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  g /= g.sum()
  y = ndimage.correlate1d(x, g, axis=-2, mode="constant")[..., r:-r, :]
  return ndimage.correlate1d(y, g, axis=-1, mode="constant")[..., :, r:-r]


def ssim_frames(original: np.ndarray, recon: np.ndarray) -> np.ndarray:
  """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255) of
  every frame of uint8 [..., H, W, 3] videos, averaged over channels: shape [...]."""
  a = np.moveaxis(np.asarray(original, np.float64), -1, -3)  # [..., 3, H, W]
  b = np.moveaxis(np.asarray(recon, np.float64), -1, -3)
  if min(a.shape[-2:]) < 11:
    raise VidgenError(f"SSIM needs frames of at least 11x11 pixels, got {a.shape[-2:]}")
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
  var_a = _gaussian_filter(a * a) - mu_a ** 2
  var_b = _gaussian_filter(b * b) - mu_b ** 2
  cov = _gaussian_filter(a * b) - mu_a * mu_b
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
              / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return ssim_map.mean(axis=(-3, -2, -1))


def ssim(original: np.ndarray, recon: np.ndarray) -> float:
  """Mean per-frame SSIM of uint8 videos [..., H, W, 3]."""
  return float(np.mean(ssim_frames(original, recon)))


def to_uint8(video_pm1: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 0..255 (rounded, clipped)."""
  return np.clip(np.round((np.asarray(video_pm1, np.float32) + 1.0) * 127.5), 0, 255
                 ).astype(np.uint8)


def report(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
  """Per-bucket and overall PSNR/SSIM from (bucket name, original, recon) uint8 batches.

  PSNR is averaged per clip (each clip's MSE over all its frames)."""
  per: dict[str, dict[str, list[float]]] = {}
  for name, original, recon in pairs:
    entry = per.setdefault(name, {"psnr": [], "ssim": []})
    for o, r in zip(original, recon):
      entry["psnr"].append(psnr(o, r))
      entry["ssim"].append(ssim(o, r))
  if not per:
    raise VidgenError("no clips to evaluate")
  out: dict[str, Any] = {"buckets": {}}
  for name, entry in per.items():
    out["buckets"][name] = {"psnr": float(np.mean(entry["psnr"])),
                            "ssim": float(np.mean(entry["ssim"])), "clips": len(entry["psnr"])}
  all_psnr = [v for e in per.values() for v in e["psnr"]]
  all_ssim = [v for e in per.values() for v in e["ssim"]]
  out.update(psnr=float(np.mean(all_psnr)), ssim=float(np.mean(all_ssim)), clips=len(all_psnr))
  return out


def side_by_side(original: np.ndarray, recon: np.ndarray, path: str, max_clips: int = 4,
                 max_frames: int = 9, scale: int = 4) -> str:
  """A PNG: for each clip a row of original frames above a row of reconstructed ones."""
  from PIL import Image
  o = np.asarray(original)[:max_clips, :max_frames]
  r = np.asarray(recon)[:max_clips, :max_frames]
  n, t, h, w, _ = o.shape
  gap = 2
  canvas = np.full((n * (2 * h + 3 * gap), t * (w + gap), 3), 255, np.uint8)
  for i in range(n):
    y = i * (2 * h + 3 * gap)
    for j in range(t):
      x = j * (w + gap)
      canvas[y:y + h, x:x + w] = o[i, j]
      canvas[y + h + gap:y + 2 * h + gap, x:x + w] = r[i, j]
  image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale),
                                         Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image.save(path)
  return path


def reconstruct(model: Any, params: Any, video_uint8: np.ndarray, chunked: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 reconstruction from the posterior mean, latent mean) of uint8 [B, T, H, W, 3]."""
  from vidgen.models import vae as vae_lib
  if chunked:
    mean, _ = vae_lib.encode_chunked(model, params, video_uint8)
    recon = vae_lib.decode_chunked(model, params, mean)
  else:
    import jax.numpy as jnp
    mean, _ = vae_lib.encode(model, params, jnp.asarray(video_uint8, jnp.float32) / 127.5 - 1)
    recon = vae_lib.decode(model, params, mean)
  return to_uint8(np.asarray(recon)), np.asarray(mean)


def split_batches(config: Any, max_clips: int, split: str | None = None
                  ) -> Iterable[tuple[str, np.ndarray]]:
  """(bucket name, uint8 batch) of a split (default: the eval split) in order: the data
  pipeline if its dataset is built, else Shapes World clips generated at each bucket's shape."""
  data = config.data
  split = split or data.eval_split
  try:
    from vidgen.data import pipeline
    seen = 0
    for batch in pipeline.make_eval_iterator(config, process_index=0, process_count=1,
                                             split=split):
      video = np.asarray(batch["video"])
      if "valid" in batch:
        video = video[np.asarray(batch["valid"]).astype(bool)]
      t, h, w = video.shape[1:4]
      yield f"{t}x{h}x{w}", video
      seen += len(video)
      if seen >= max_clips:
        return
    return
  except Exception:  # Dataset not built or pipeline unavailable: generate clips directly.
    if data.dataset != "shapes_world":
      raise
  from vidgen.world import generate_clip
  per_bucket = max(1, max_clips // len(data.buckets))
  for frames, height, width, _ in data.buckets:
    clips = [generate_clip(split, i, seed=data.world.seed, height=height, width=width,
                           frames=frames, fps=data.world.fps)["video"]
             for i in range(per_bucket)]
    for start in range(0, per_bucket, 16):
      yield f"{frames}x{height}x{width}", np.stack(clips[start:start + 16])


def latent_stats_on(model: Any, params: Any, config: Any, max_clips: int = 64,
                    split: str | None = None) -> Any:
  """Per-channel latent statistics (posterior means) on clips of the training split."""
  from vidgen.models import vae as vae_lib
  split = split or config.data.train_split
  latents = [np.asarray(vae_lib.encode_chunked(model, params, video)[0])
             for _, video in split_batches(config, max_clips, split)]
  return vae_lib.measure_latent_stats(latents)


def load_or_export(config: Any, workdir: str) -> tuple[Any, Any, Any]:
  """(model, params, stats) of a workdir: its export, else its newest trainer checkpoint,
  exported now with latent statistics measured on the training split."""
  from vidgen.train import vae_task
  try:
    model, params, stats = vae_task.load_vae(workdir)
  except VidgenError:
    params = vae_task.restore_vae_params(workdir)
    if params is None:
      raise VidgenError(f"{workdir} holds no trained autoencoder (no {vae_task.EXPORT_DIR}/, "
                        f"no checkpoint with params['vae']); train one with `vidgen train "
                        f"--config=configs/vae_tiny.py --workdir={workdir}`") from None
    model, stats = vae_task.build_model(config), None
  if stats is None:
    stats = latent_stats_on(model, params, config)
    vae_task.export_vae(workdir, config, params, stats)
  return model, params, stats


def evaluate_vae(config: Any, workdir: str, max_clips: int = 64) -> dict[str, Any]:
  """PSNR/SSIM of reconstructions on the eval split, per bucket; writes
  `workdir/eval/recon.json` and `recon.png`. Returns the report dict."""
  model, params, stats = load_or_export(config, workdir)
  pairs, first = [], None
  for name, video in split_batches(config, max_clips):
    recon, _ = reconstruct(model, params, video)
    pairs.append((name, video, recon))
    if first is None or video.shape[1] > first[0].shape[1]:
      first = (video, recon)
  result = report(pairs)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  result["png"] = side_by_side(first[0], first[1], os.path.join(out_dir, "recon.png"))
  result["latent_stats"] = stats.to_dict()
  with open(os.path.join(out_dir, "recon.json"), "w") as f:
    json.dump(result, f, indent=1)
  return result


def summarize(result: Mapping[str, Any]) -> str:
  lines = [f"PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}  ({result['clips']} clips)"]
  for name, b in result["buckets"].items():
    lines.append(f"  {name:>12}: PSNR {b['psnr']:.2f} dB  SSIM {b['ssim']:.4f}  ({b['clips']})")
  return "\n".join(lines)

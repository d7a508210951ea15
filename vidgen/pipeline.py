"""Generation in every mode from one trained model: `Pipeline.load(bundle_dir)` then a mode.

Every mode is text-to-video sampling with some latent frames given (vidgen.sampling): the
transformer learned to keep given frames (t = 0) and fill in the rest.

Frame bookkeeping follows the causal autoencoder: a clip of 1 + 4k frames has 1 + k latents;
latent 0 encodes one frame, each later latent four. A clip that must sit at a later
position (an image as the last frame, the start of a second clip, a clip being extended
backward) is encoded "as a continuation": its first frame is repeated once in front, the
clip is encoded, and latent 0 is dropped, so each latent encodes four frames as it should.

Input policy (stated once, used everywhere): images and videos of another size are scaled
to cover the target and center-cropped (`resize=False` refuses them instead); frame counts
are rounded to the nearest 1 + 4k (input clips are trimmed to the longest valid count);
heights and widths to the nearest multiple of the latent patch size in pixels. Each
adjustment is reported through `notify`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vidgen import sampling
from vidgen.errors import VidgenError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Components:
  """What the pipeline needs of the trained models, as plain functions.

  Latents here are always the *normalised* latents the transformer sees.
  - tokenize(texts, max_len) -> (ids int32 [N, L], mask bool [N, L])
  - encode_text(ids, mask) -> embeddings [N, L, D]
  - velocity(params, x [B, F, h, w, c], t [B, F], text [B, L, D], text_mask [B, L]) -> v (f32),
    with `params` = `velocity_params` passed as an argument (never closed over: closed-over
    arrays would be baked into every compiled sampler step as constants)
  - encode_video(video f32 [B, T, H, W, 3] in [-1, 1], T = 1 + tf k) -> latents [B, 1 + k, ...]
  - decode_latents(latents) -> video f32 [B, 1 + tf (F - 1), H, W, 3] (chunked, on the host)
  """
  tokenize: Callable[[Sequence[str], int], tuple[np.ndarray, np.ndarray]]
  encode_text: Callable[[Any, Any], jax.Array]
  velocity: Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
  encode_video: Callable[[Any], jax.Array]
  decode_latents: Callable[[Any], np.ndarray]
  text_max_len: int
  velocity_params: Any = None
  temporal_factor: int = 4
  spatial_factor: int = 4
  latent_channels: int = 8
  patch: tuple[int, int, int] = (1, 2, 2)
  frames: int = 17  # Defaults: the training clip size (also the extension window).
  height: int = 32
  width: int = 32
  fps: float = 8.0
  shift: float | None = None  # None: resolution-dependent, as in training:
  shift_base_tokens: int = 256  # shift = shift_base * sqrt(latent tokens / shift_base_tokens)
  shift_base: float = 1.0
  latent: str = "vae"  # "vae": latents of an autoencoder; "pixel": the video itself.
  mesh: Any = None  # The jax Mesh the params are sharded over (None: one device).
  params: dict[str, Any] | None = None  # Every placed param tree by component (inspection).


@dataclasses.dataclass
class Generation:
  """A batch of results: `video` uint8 [B, T, H, W, 3] and the final `latents`."""
  video: np.ndarray
  latents: np.ndarray
  fps: float


# ---------------------------------------------------------------------------------------
# Input policy helpers (pure).

def nearest_valid_frames(frames: int, temporal_factor: int) -> int:
  """The nearest 1 + tf k to `frames` (ties go up), at least 1."""
  if frames <= 1:
    return 1
  k = (frames - 1) / temporal_factor
  return 1 + temporal_factor * int(math.floor(k + 0.5))


def nearest_multiple(n: int, m: int) -> int:
  """The nearest positive multiple of m to n."""
  return max(m, m * int(math.floor(n / m + 0.5)))


def to_unit(video: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> f32 in [-1, 1]."""
  return np.asarray(video, np.float32) / 127.5 - 1.0


def to_uint8(video: Any) -> np.ndarray:
  """f32 in [-1, 1] -> uint8, rounded and clipped."""
  return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Placement: the mesh and the logical rules (the trainer's, vidgen.train).

def make_mesh(mesh_shape: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with Auto axes data, fsdp, tensor, sequence.

  mesh_shape: sizes of some axes (-1 fills); unnamed axes are 1, except fsdp, which fills
  with the remaining devices unless another axis is -1.
  """
  from vidgen.train import config as train_config
  from vidgen.train import sharding as shd
  sizes = dict(mesh_shape or {})
  unknown = sorted(set(sizes) - set(train_config.MESH_AXES))
  if unknown:
    raise VidgenError(f"mesh_shape names unknown axes {unknown}; the mesh axes are "
                      f"{', '.join(train_config.MESH_AXES)}")
  config = train_config.get_mesh_config()
  if any(v == -1 for v in sizes.values()):
    config.fsdp = 1
  for axis, size in sizes.items():
    config[axis] = int(size)
  return shd.make_mesh(config, devices)


def mesh_rules(mesh: Mesh) -> tuple:
  """The trainer's default logical rules, restricted to the axes `mesh` has.

  Refuses a mesh with axes the rules do not know, or with Explicit axes (linen's logical
  sharding needs Auto ones).
  """
  from vidgen.train import config as train_config
  if not isinstance(mesh, Mesh):
    raise VidgenError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
  names = tuple(mesh.axis_names)
  unknown = [n for n in names if n not in train_config.MESH_AXES]
  if unknown:
    raise VidgenError(f"mesh axes {unknown} are not among the logical rules' mesh axes "
                      f"({', '.join(train_config.MESH_AXES)}); build the mesh with those "
                      "names, or pass mesh_shape={...} instead")
  explicit = [n for n, t in zip(names, mesh.axis_types)
              if t != jax.sharding.AxisType.Auto]
  if explicit:
    raise VidgenError(f"mesh axes {explicit} are not Auto; make the mesh with "
                      "axis_types=(jax.sharding.AxisType.Auto,) * n")
  rules = []
  for logical, axes in train_config.DEFAULT_RULES:
    axes = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,)) if a in names)
    rules.append((logical, axes if len(axes) > 1 else axes[0] if axes else None))
  return tuple(rules)


@functools.lru_cache(maxsize=None)
def _plain_velocity(model: Callable) -> Callable:
  """(x, t, params, emb, mask) -> v: one stable function per model, so sampler steps compile
  once per shape however many Pipelines share the model."""
  return lambda x, t, params, emb, mask: model(params, x, t, emb, mask)


@functools.lru_cache(maxsize=None)
def _guided_velocity(model: Callable) -> Callable:
  """Classifier-free guided (x, t, params, emb, mask, null_emb, null_mask, g) -> v."""
  def velocity(x, t, params, emb, mask, null_emb, null_mask, guidance):
    return sampling.cfg_velocity(functools.partial(model, params), x, t, emb, mask, null_emb,
                                 null_mask, guidance)
  return velocity


class Pipeline:
  """Generation in every mode. Build with `Pipeline.load(bundle_dir)` or from Components."""

  def __init__(self, components: Components, *, progress: bool = False,
               notify: Callable[[str], None] | None = None):
    self.c = components
    self.progress = progress
    self.notify = notify or log.warning

  # ------------------------------------------------------------------------- loading
  @classmethod
  def load(cls, bundle_dir: str, *, mesh: Mesh | None = None,
           mesh_shape: Mapping[str, int] | None = None,
           devices: Sequence[jax.Device] | None = None, dtype: str | None = None,
           progress: bool = False, notify: Callable[[str], None] | None = None) -> "Pipeline":
    """Loads an exported bundle (vidgen.export), verifying every file against the manifest.

    Placement: with one device, everything lives on it. With several (`devices`, default
    all), or an explicit `mesh`, the params are sharded by their logical axis names through
    the trainer's default rules (vidgen.train.config.DEFAULT_RULES) and sampling runs
    jitted on the shards. The default mesh puts all devices on `fsdp`; `mesh_shape` (e.g.
    {"fsdp": 4, "tensor": 2}) picks another layout of the axes data, fsdp, tensor, sequence.
    dtype: compute dtype ("bf16"/"f32"); default bf16 on accelerators, f32 on CPU.
    """
    from vidgen import export  # Local: export imports this module's helpers.
    if mesh is not None and (mesh_shape is not None or devices is not None):
      raise VidgenError("pass either mesh or mesh_shape/devices, not both")
    if mesh is None and (mesh_shape is not None
                         or len(jax.devices() if devices is None else devices) > 1):
      mesh = make_mesh(mesh_shape, devices)
    rules = mesh_rules(mesh) if mesh is not None else None
    device = devices[0] if mesh is None and devices else None
    bundle = export.read_bundle(bundle_dir)
    components = export.build_components(bundle, dtype=dtype, mesh=mesh, rules=rules,
                                         device=device)
    del bundle  # The host copy of the params goes; the placed ones stay.
    return cls(components, progress=progress, notify=notify)

  # ------------------------------------------------------------------------- sizes
  def _frames(self, frames: int | None) -> int:
    frames = self.c.frames if frames is None else int(frames)
    if frames < 1:
      raise VidgenError(f"frames must be at least 1, got {frames}")
    valid = nearest_valid_frames(frames, self.c.temporal_factor)
    if valid != frames:
      self.notify(f"{frames} frames do not fit the autoencoder (1 + {self.c.temporal_factor}k "
                  f"frames); using {valid}")
    return valid

  def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
    unit_h = self.c.spatial_factor * self.c.patch[1]
    unit_w = self.c.spatial_factor * self.c.patch[2]
    height = self.c.height if height is None else int(height)
    width = self.c.width if width is None else int(width)
    if height < 1 or width < 1:
      raise VidgenError(f"height and width must be positive, got {height}x{width}")
    h, w = nearest_multiple(height, unit_h), nearest_multiple(width, unit_w)
    if (h, w) != (height, width):
      self.notify(f"{height}x{width} (HxW) is not a multiple of {unit_h}x{unit_w} pixels "
                  f"(autoencoder x patch); using {h}x{w}")
    return h, w

  def _latent_shape(self, batch: int, frames: int, height: int, width: int) -> tuple[int, ...]:
    return (batch, 1 + (frames - 1) // self.c.temporal_factor, height // self.c.spatial_factor,
            width // self.c.spatial_factor, self.c.latent_channels)

  def input_video(self, video: np.ndarray, *, resize: bool = True
                  ) -> tuple[np.ndarray, int, int]:
    """A given video fitted to the output size its own size rounds to: (video, H, W)."""
    video = np.asarray(video)
    height, width = self._size(video.shape[1] if video.ndim == 4 else None,
                               video.shape[2] if video.ndim == 4 else None)
    return self.fit_input(video, height, width, resize=resize, name="video"), height, width

  def fit_input(self, video: np.ndarray, height: int, width: int, *, resize: bool = True,
                name: str = "input") -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, height, width, 3]: scale to cover and center-crop."""
    video = np.asarray(video)
    if video.ndim == 3:
      video = video[None]
    if video.ndim != 4 or video.shape[-1] != 3:
      raise VidgenError(f"{name}: expected frames [T, H, W, 3], got shape {video.shape}")
    if video.shape[1:3] == (height, width):
      return video.astype(np.uint8)
    if not resize:
      raise VidgenError(f"{name} is {video.shape[1]}x{video.shape[2]} (HxW) but the output is "
                        f"{height}x{width}; drop --no-resize to scale and center-crop it")
    from vidgen.data import video_io
    self.notify(f"{name}: {video.shape[1]}x{video.shape[2]} scaled to cover {height}x{width} "
                f"and center-cropped")
    return video_io.fit_frames(video.astype(np.uint8), height, width, policy="crop",
                               method="area")

  def _trim_clip(self, video: np.ndarray, name: str, keep: str = "start") -> np.ndarray:
    """Trims a clip to the longest 1 + tf k frames, keeping its start (or its end)."""
    tf = self.c.temporal_factor
    n = 1 + tf * ((len(video) - 1) // tf)
    if n != len(video):
      self.notify(f"{name}: {len(video)} frames trimmed to {n} (1 + {tf}k)")
      video = video[:n] if keep == "start" else video[len(video) - n:]
    return video

  # ------------------------------------------------------------------------- text
  def encode_prompts(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array, jax.Array,
                                                               jax.Array]:
    """(emb, mask, null_emb, null_mask): the prompts and the null text in one encoder call.

    The null text is all padding (an empty mask), as in training's caption dropout
    (vidgen.diffusion.drop_text).
    """
    if isinstance(prompts, str):
      prompts = [prompts]
    if not prompts:
      raise VidgenError("no prompt given")
    for i, p in enumerate(prompts):
      if not isinstance(p, str) or not p.strip():
        raise VidgenError(f"prompt {i + 1} is empty; give a description of the video")
    limit = self.c.text_max_len
    ids, mask = self.c.tokenize(list(prompts), 8 * limit)
    for i, n in enumerate(mask.sum(-1)):
      if n > limit:
        self.notify(f"prompt {i + 1} is {int(n)} tokens; the text encoder reads {limit}: "
                    f"truncated to its first {limit} tokens")
    ids = np.concatenate([ids[:, :limit], np.zeros((1, limit), ids.dtype)])
    mask = np.concatenate([mask[:, :limit], np.zeros((1, limit), bool)])
    emb = self.c.encode_text(jnp.asarray(ids), jnp.asarray(mask))
    m = jnp.asarray(mask)
    return emb[:-1], m[:-1], emb[-1:], m[-1:]

  # ------------------------------------------------------------------------- latents
  def encode(self, video: np.ndarray) -> jax.Array:
    """uint8 [T, H, W, 3] (T = 1 + tf k) -> latents [1, 1 + k, h, w, c]."""
    return jnp.asarray(self.c.encode_video(to_unit(video)[None]), jnp.float32)

  def encode_continuation(self, video: np.ndarray) -> jax.Array:
    """uint8 [tf k, H, W, 3] -> k latents that sit at a later position (see module doc)."""
    if len(video) % self.c.temporal_factor:
      raise ValueError(f"needs a multiple of {self.c.temporal_factor} frames, got {len(video)}")
    return self.encode(np.concatenate([video[:1], video]))[:, 1:]

  def decode(self, latents: jax.Array) -> np.ndarray:
    """latents [B, F, ...] -> uint8 [B, 1 + tf (F - 1), H, W, 3], one sample at a time."""
    return np.concatenate([to_uint8(self.c.decode_latents(latents[i:i + 1]))
                           for i in range(latents.shape[0])])

  def reconstruct(self, videos: np.ndarray) -> np.ndarray:
    """uint8 [B, T, H, W, 3] (T = 1 + tf k) through the autoencoder and back, one at a time."""
    return np.concatenate([self.decode(self.encode(v)) for v in np.asarray(videos)])

  # ------------------------------------------------------------------------- the sampler
  def _sample(self, text: tuple, shape: Sequence[int], cond: sampling.Condition | None, *,
              key: jax.Array, steps: int, sampler: str, guidance: float, shift: float | None,
              start: float = 1.0, z: jax.Array | None = None) -> jax.Array:
    """One window of sampling: noise of `shape`, given frames in `cond`, from time `start`."""
    emb, mask, null_emb, null_mask = text
    if steps < 1:
      raise VidgenError(f"steps must be at least 1, got {steps}")
    if sampler not in sampling.SAMPLERS:
      raise VidgenError(f"unknown sampler {sampler!r}; choose one of "
                        f"{', '.join(sampling.SAMPLERS)}")
    if shift is None:
      shift = self.c.shift
    if shift is None:  # Training's rule: sqrt(tokens / base), at least 1.
      tokens = int(np.prod(shape[1:4])) // int(np.prod(self.c.patch))
      shift = sampling.resolution_shift(tokens, self.c.shift_base_tokens, self.c.shift_base,
                                        max_shift=math.inf)
    noise = jax.random.normal(key, tuple(shape), jnp.float32)
    x_start = None
    if start < 1.0:
      u_start = float(sampling.unshift_timesteps(np.array(start), shift))
      steps = max(1, int(math.ceil(steps * u_start)))  # The matching part of the schedule.
      x_start = sampling.noise_to(z, noise, start)
    ts = sampling.timesteps(steps, shift, start)
    params = self.c.velocity_params
    if float(guidance) == 1.0:  # The conditional model alone: no null pass.
      velocity, args = _plain_velocity(self.c.velocity), (params, emb, mask)
    else:
      velocity = _guided_velocity(self.c.velocity)
      args = (params, emb, mask, null_emb, null_mask, jnp.float32(guidance))
    progress = None
    if self.progress:
      from tqdm import tqdm
      progress = lambda r: tqdm(r, desc="denoising", unit="step", leave=False)
    return sampling.sample(velocity, noise, ts, sampler=sampler, cond=cond, x_start=x_start,
                           progress=progress, args=args)

  def _finish(self, latents: jax.Array) -> Generation:
    latents = jax.device_get(latents)
    return Generation(video=self.decode(jnp.asarray(latents)), latents=np.asarray(latents),
                      fps=self.c.fps)

  @staticmethod
  def _cond(shape: Sequence[int], given: dict[int, jax.Array], tie: bool = False
            ) -> sampling.Condition:
    """A Condition with latent frames {index: latents [1|B, n, h, w, c]} starting at index."""
    mask = np.zeros(tuple(shape[:2]), bool)
    latents = np.zeros(tuple(shape), np.float32)
    for start, z in given.items():
      n = z.shape[1]
      mask[:, start:start + n] = True
      latents[:, start:start + n] = np.asarray(z)
    return sampling.Condition(mask=jnp.asarray(mask), latents=latents, tie_last_to_first=tie)

  # ------------------------------------------------------------------------- modes
  def text_to_video(self, prompts: Sequence[str] | str, *, frames: int | None = None,
                    height: int | None = None, width: int | None = None, steps: int = 30,
                    sampler: str = "unipc", guidance: float = 5.0, shift: float | None = None,
                    seed: int = 0, image_first: bool = False) -> Generation:
    """Videos from text: one per prompt.

    image_first: sample the first frame as an image (exactly `text_to_image` with this seed),
    then the rest of the clip given it, as image to video (Emu Video's factorisation, with
    the one model trained for both): the motion is then drawn for an object already placed.
    """
    text = self.encode_prompts(prompts)
    frames = self._frames(frames)
    height, width = self._size(height, width)
    shape = self._latent_shape(text[0].shape[0], frames, height, width)
    key, cond = jax.random.key(seed), None
    if image_first and shape[1] > 1:
      first = self._sample(text, (shape[0], 1) + tuple(shape[2:]), None, key=key, steps=steps,
                           sampler=sampler, guidance=guidance, shift=shift)
      key, cond = jax.random.fold_in(key, 1), self._cond(shape, {0: first})
    z = self._sample(text, shape, cond, key=key, steps=steps, sampler=sampler,
                     guidance=guidance, shift=shift)
    return self._finish(z)

  def text_to_image(self, prompts: Sequence[str] | str, *, height: int | None = None,
                    width: int | None = None, **kw) -> Generation:
    """Images from text: a one-frame video per prompt ([B, 1, H, W, 3])."""
    return self.text_to_video(prompts, frames=1, height=height, width=width, **kw)

  def image_to_video(self, prompts: Sequence[str] | str, image: np.ndarray, *,
                     position: str = "first", end_image: np.ndarray | None = None,
                     frames: int | None = None, height: int | None = None,
                     width: int | None = None, resize: bool = True, steps: int = 30,
                     sampler: str = "unipc", guidance: float = 5.0,
                     shift: float | None = None, seed: int = 0) -> Generation:
    """A video that starts at `image` ("first"), ends at it ("last"), or both ("both";
    `end_image`, if given, is the last frame instead)."""
    if position not in ("first", "last", "both"):
      raise VidgenError(f"position must be first, last or both, got {position!r}")
    text = self.encode_prompts(prompts)
    frames = self._frames(frames)
    if frames < 1 + self.c.temporal_factor and position != "first":
      raise VidgenError(f"position={position} needs at least {1 + self.c.temporal_factor} frames")
    height, width = self._size(height, width)
    image = self.fit_input(image, height, width, resize=resize, name="image")[:1]
    shape = self._latent_shape(text[0].shape[0], frames, height, width)
    given = {}
    if position in ("first", "both"):
      given[0] = self.encode(image)
    if position in ("last", "both"):
      last = image if end_image is None else self.fit_input(end_image, height, width,
                                                            resize=resize, name="end image")[:1]
      given[shape[1] - 1] = self.encode_continuation(np.repeat(last, self.c.temporal_factor, 0))
    z = self._sample(text, shape, self._cond(shape, given), key=jax.random.key(seed),
                     steps=steps, sampler=sampler, guidance=guidance, shift=shift)
    return self._finish(z)

  def extend(self, prompts: Sequence[str] | str, video: np.ndarray, *, frames: int,
             direction: str = "forward", window: int | None = None, overlap: int | None = None,
             resize: bool = True, steps: int = 30, sampler: str = "unipc",
             guidance: float = 5.0, shift: float | None = None, seed: int = 0) -> Generation:
    """Extends a clip to `frames` frames in all, forward (after it) or backward (before it).

    Generates windows of `window` frames (default: the training clip length); each window
    is given the `overlap` latent frames nearest the new part (default: half a window) and
    keeps only its new latents. Forward output begins with the clip; backward ends with it.
    """
    if direction not in ("forward", "backward"):
      raise VidgenError(f"direction must be forward or backward, got {direction!r}")
    tf = self.c.temporal_factor
    text = self.encode_prompts(prompts)
    batch = text[0].shape[0]
    video, height, width = self.input_video(video, resize=resize)
    frames = self._frames(frames)
    window_frames = self._frames(window if window is not None else self.c.frames)
    win = 1 + (window_frames - 1) // tf
    if win < 2:
      raise VidgenError("the extension window needs at least 2 latent frames "
                        f"({1 + tf} frames)")
    overlap = max(1, win // 2) if overlap is None else int(overlap)
    if not 1 <= overlap < win:
      raise VidgenError(f"overlap must be between 1 and {win - 1} latent frames, got {overlap}")
    total = 1 + (frames - 1) // tf
    if direction == "forward":
      z = self.encode(self._trim_clip(video, "video", keep="start"))
      z = jnp.broadcast_to(z, (batch,) + tuple(z.shape[1:]))
    else:
      n = tf * (len(video) // tf)
      if n == 0:
        raise VidgenError(f"video: backward extension needs at least {tf} frames")
      if n != len(video):
        self.notify(f"video: {len(video)} frames trimmed to its last {n} (a multiple of {tf})")
      z = self.encode_continuation(video[len(video) - n:])
      z = jnp.broadcast_to(z, (batch,) + tuple(z.shape[1:]))
    if total <= z.shape[1]:
      raise VidgenError(f"--frames={frames} is not longer than the given clip "
                        f"({z.shape[1]} latent frames); ask for more frames to extend it")
    key = jax.random.key(seed)
    index = 0
    while z.shape[1] < total:
      ctx = min(overlap, z.shape[1])
      new = min(win - ctx, total - z.shape[1])
      shape = (batch, ctx + new) + tuple(z.shape[2:])
      if direction == "forward":
        cond = self._cond(shape, {0: z[:, z.shape[1] - ctx:]})
      else:
        cond = self._cond(shape, {new: z[:, :ctx]})
      out = self._sample(text, shape, cond, key=jax.random.fold_in(key, index), steps=steps,
                         sampler=sampler, guidance=guidance, shift=shift)
      z = (jnp.concatenate([z, out[:, ctx:]], 1) if direction == "forward"
           else jnp.concatenate([out[:, :new], z], 1))
      index += 1
    return self._finish(z)

  def loop(self, prompts: Sequence[str] | str, *, frames: int | None = None,
           height: int | None = None, width: int | None = None, steps: int = 30,
           sampler: str = "unipc", guidance: float = 5.0, shift: float | None = None,
           seed: int = 0) -> Generation:
    """A seamless loop: the last latent frame follows the first through the whole
    trajectory, so the clip ends where it starts."""
    text = self.encode_prompts(prompts)
    frames = self._frames(frames)
    if frames < 1 + 2 * self.c.temporal_factor:
      raise VidgenError(f"a loop needs at least {1 + 2 * self.c.temporal_factor} frames")
    height, width = self._size(height, width)
    shape = self._latent_shape(text[0].shape[0], frames, height, width)
    cond = self._cond(shape, {}, tie=True)
    z = self._sample(text, shape, cond, key=jax.random.key(seed), steps=steps, sampler=sampler,
                     guidance=guidance, shift=shift)
    return self._finish(z)

  def connect(self, prompts: Sequence[str] | str, video: np.ndarray, video2: np.ndarray, *,
              frames: int | None = None, context: int = 1, resize: bool = True,
              steps: int = 30, sampler: str = "unipc", guidance: float = 5.0,
              shift: float | None = None, seed: int = 0) -> Generation:
    """The first video, a generated transition of about `frames` frames, then the second.

    The transition is sampled given the last `context` latent frames of the first video
    and the first `context` of the second.
    """
    tf = self.c.temporal_factor
    text = self.encode_prompts(prompts)
    batch = text[0].shape[0]
    video, height, width = self.input_video(video, resize=resize)
    a = self._trim_clip(video, "video", keep="end")
    b = self.fit_input(video2, height, width, resize=resize, name="video2")
    n_b = tf * (len(b) // tf)
    if n_b == 0:
      raise VidgenError(f"video2 needs at least {tf} frames")
    if n_b != len(b):
      self.notify(f"video2: {len(b)} frames trimmed to its first {n_b} (a multiple of {tf})")
    frames = self.c.frames if frames is None else int(frames)
    mid = max(1, int(math.floor(frames / tf + 0.5)))
    if mid * tf != frames:
      self.notify(f"a transition of {frames} frames does not fit the autoencoder "
                  f"(a multiple of {tf}); using {mid * tf}")
    z_a, z_b = self.encode(a), self.encode_continuation(b[:n_b])
    ca, cb = min(context, z_a.shape[1]), min(context, z_b.shape[1])
    shape = (batch, ca + mid + cb) + tuple(z_a.shape[2:])
    cond = self._cond(shape, {0: z_a[:, z_a.shape[1] - ca:], ca + mid: z_b[:, :cb]})
    out = self._sample(text, shape, cond, key=jax.random.key(seed), steps=steps,
                       sampler=sampler, guidance=guidance, shift=shift)
    z = jnp.concatenate([jnp.broadcast_to(z_a, (batch,) + z_a.shape[1:]), out[:, ca:ca + mid],
                         jnp.broadcast_to(z_b, (batch,) + z_b.shape[1:])], 1)
    return self._finish(z)

  def restyle(self, prompts: Sequence[str] | str, video: np.ndarray, *, strength: float = 0.6,
              resize: bool = True, steps: int = 30, sampler: str = "unipc",
              guidance: float = 5.0, shift: float | None = None, seed: int = 0) -> Generation:
    """SDEdit: noise the clip's latents to time `strength` and denoise under the prompt.

    0 returns the clip (through the autoencoder); 1 ignores it (plain text-to-video).
    """
    if not 0.0 <= strength <= 1.0:
      raise VidgenError(f"strength must be in [0, 1], got {strength}")
    text = self.encode_prompts(prompts)
    batch = text[0].shape[0]
    video, _, _ = self.input_video(video, resize=resize)
    clip = self._trim_clip(video, "video")
    z = self.encode(clip)
    z = jnp.broadcast_to(z, (batch,) + tuple(z.shape[1:]))
    if strength == 0.0:
      return self._finish(z)
    out = self._sample(text, z.shape, None, key=jax.random.key(seed), steps=steps,
                       sampler=sampler, guidance=guidance, shift=shift, start=float(strength),
                       z=z)
    return self._finish(out)

  MODES = ("text_to_video", "text_to_image", "image_to_video", "extend", "loop", "connect",
           "restyle")

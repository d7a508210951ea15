"""Wall time of `vidgen evaluate` for N heldout prompts with the tiny text-to-video model.

  .venv/bin/python benchmarks/evaluate.py [--num-prompts 100] [--seeds 1] [--steps 30] \
      [--fvd] [--out DIR]

The model is configs/t2v_tiny.py:tiny,pixel (the tiny DiT and T5 on 8 x 32 x 32 pixel clips)
with random weights: generation costs the same whatever the weights, and random weights are
all a benchmark needs. It is exported as a bundle (vidgen.export.write_bundle) with a caption
tokenizer trained on Shapes World captions, then `vidgen evaluate --bundle=... --split=heldout`
runs as a user would run it. Prints the report's timing breakdown (prompts, generation,
oracle, FVD, total) and the wall time of the whole command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402


def tiny_bundle(out_dir: str, seed: int = 0) -> str:
  """A random configs/t2v_tiny.py:tiny,pixel model exported as a bundle in out_dir."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from configs import t2v_tiny  # pylint: disable=g-import-not-at-top
  from vidgen import export, world  # pylint: disable=g-import-not-at-top
  from vidgen.data import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  from vidgen.train import t2v_task  # pylint: disable=g-import-not-at-top

  config = t2v_tiny.get_config("tiny,pixel")
  frames, height, width, _ = config.data.buckets[0]
  captions = [c for i in range(200)
              for c in world.generate_clip("train", i, seed=0, height=height, width=width,
                                           frames=frames, fps=8.0)["captions"]]
  tok_path = tok_lib.train(captions, os.path.join(out_dir, "tok", "tokenizer.model"), 256)
  tokenizer = tok_lib.Tokenizer(tok_path)
  config.data.tokenizer.vocab_size = tokenizer.vocab_size
  task = t2v_task.T2VTask(config)
  length = int(config.data.tokenizer.max_len)
  ids, mask = tokenizer.encode(captions[:2], length)
  batch = {"video": np.zeros((2, frames, height, width, 3), np.uint8), "tokens": ids,
           "text_mask": mask, "fps": np.full((2,), 8.0, np.float32)}
  params = jax.device_get(nn.meta.unbox(jax.jit(task.init)(jax.random.key(seed), batch)))
  configs = {"text": dataclasses.asdict(task.text_model.config),
             "dit": export._module_config(task.model)}  # pylint: disable=protected-access
  bundle = os.path.join(out_dir, "bundle")
  d = config.model.diffusion
  export.write_bundle(
      bundle, params=params, configs=configs, tokenizer_path=tok_path, latent_stats=None,
      pipeline={"latent": "pixel", "frames": frames, "height": height, "width": width,
                "fps": 8.0, "text_max_len": length, "shift": d.shift or None,
                "shift_base_tokens": d.shift_base_tokens, "shift_base": d.shift_base},
      dtype="f32")
  return bundle


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num-prompts", type=int, default=100)
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--fvd", action="store_true", help="include FVD/KVD (I3D)")
  p.add_argument("--bundle", default=None, help="reuse a bundle instead of exporting one")
  p.add_argument("--out", default=None, help="report folder (default: a temporary one)")
  args = p.parse_args()
  from vidgen.evaluate import commands  # pylint: disable=g-import-not-at-top

  tmp = tempfile.mkdtemp(prefix="vidgen_bench_eval_")
  t0 = time.perf_counter()
  bundle = args.bundle or tiny_bundle(tmp)
  export_s = time.perf_counter() - t0
  out = args.out or os.path.join(tmp, "eval")
  argv = [f"--bundle={bundle}", "--split=heldout", f"--num-prompts={args.num_prompts}",
          f"--seeds={args.seeds}", f"--steps={args.steps}", f"--out={out}"]
  if not args.fvd:
    argv.append("--no-fvd")
  t0 = time.perf_counter()
  commands.main(argv)
  wall = time.perf_counter() - t0
  with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
    doc = json.load(f)
  timing = doc.get("runs", [{}])[0].get("timing", {})
  result = {"device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "num_prompts": args.num_prompts, "seeds": args.seeds, "steps": args.steps,
            "fvd": args.fvd, "export_s": round(export_s, 2), "evaluate_wall_s": round(wall, 2),
            **{k: round(v, 2) for k, v in timing.items()}, "report": out}
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()

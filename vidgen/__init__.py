"""vidgen: Sora-style text-to-video diffusion models in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
  # `vidgen.Pipeline` without importing jax for every `import vidgen` (the CLI stays fast).
  if name == "Pipeline":
    from vidgen.pipeline import Pipeline
    return Pipeline
  raise AttributeError(f"module 'vidgen' has no attribute {name!r}")

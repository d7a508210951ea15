"""vidgen: Sora-style text-to-video diffusion models in JAX/Flax."""

__version__ = "0.1.0"

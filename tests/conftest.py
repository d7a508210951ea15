"""Tests run on 8 forced CPU devices; this must happen before jax is imported."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

# grain worker processes read absl flags; tests never parse argv.
flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

# Many tests compile the same small programs; a persistent cache shares them across files,
# subprocesses and runs.
jax.config.update("jax_compilation_cache_dir", "/tmp/vidgen_test_jax_cache")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

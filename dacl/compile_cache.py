"""JAX's persistent compilation cache, on by default for `dacl` commands.

Compiled executables are stored on disk keyed by their HLO and compile options, so a rerun, a
resumed run, or a second participant with the same architecture reuses them instead of
compiling again (within one process too: two jitted functions that lower to the same HLO share
one executable). Location: $DACL_COMPILATION_CACHE_DIR, default ~/.cache/dacl/xla; the value
"off" disables it.
"""
from __future__ import annotations

import os

DEFAULT = os.path.join(os.path.expanduser("~"), ".cache", "dacl", "xla")


def enable(path: str = "") -> str:
  """Turn the cache on (idempotent). Returns the directory, or "" when disabled."""
  import jax
  path = path or os.environ.get("DACL_COMPILATION_CACHE_DIR", DEFAULT)
  if path.lower() == "off":
    return ""
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path

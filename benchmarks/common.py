"""Shared helpers for benchmark scripts (JSON lines on stdout)."""
import json
import os
import platform
import resource
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def emit(**row):
  print(json.dumps(row), flush=True)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
  import jax
  return f"{platform.processor() or platform.machine()} x{os.cpu_count()} / {jax.devices()[0].device_kind}"


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
  """Measured f32 matmul GFLOP/s of this machine (best of reps)."""
  import time
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9

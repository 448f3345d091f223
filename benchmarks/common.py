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


def memory_bandwidth_gbs(mb: int = 256, reps: int = 10) -> float:
  """Measured memory bandwidth, GB/s: a jitted elementwise pass over an `mb` MB f32 array,
  counting the bytes read and written (best of reps)."""
  import time
  import jax
  import jax.numpy as jnp
  n = mb * (1 << 20) // 4
  f = jax.jit(lambda x: x * 1.0001, donate_argnums=0)   # in place: no fresh pages to fault in
  x = f(jnp.ones((n,), jnp.float32)).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    x = f(x).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n * 4 / best / 1e9


def matmul_params(cfg) -> int:
  """Parameters that take part in matmuls per token (every layer's projections and the LM head;
  not the embedding lookup or the norms)."""
  q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  return cfg.n_layers * (cfg.d_model * (2 * q + 2 * kv) + 3 * cfg.d_model * cfg.ffn_dim) \
      + cfg.d_model * cfg.vocab_size


def roofline(flops: float, nbytes: float, seconds: float, peak_gflops: float, bw_gbs: float) -> dict:
  """Achieved FLOP/s and bytes/s of a measured piece of work, which bound applies (the larger of
  flops/peak and bytes/bandwidth), and the fraction of that bound reached."""
  t_compute, t_memory = flops / (peak_gflops * 1e9), nbytes / (bw_gbs * 1e9)
  bound = "compute" if t_compute >= t_memory else "bandwidth"
  return {"gflops": round(flops / seconds / 1e9, 1), "gbytes_s": round(nbytes / seconds / 1e9, 1),
          "bound": bound, "fraction_of_bound": round(max(t_compute, t_memory) / seconds, 3)}

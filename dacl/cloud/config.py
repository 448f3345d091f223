"""Build the cloud back-end and its bridge from `config.cloud` (see configs/rl_base.py)."""
from __future__ import annotations

import os

from dacl.cloud.bridge import CloudBridge
from dacl.cloud.cache import ResponseCache
from dacl.cloud.protocol import CloudLLM, make_cloud

OPENAI_FIELDS = ("base_url", "model", "api_key_env", "mode", "system_prompt", "max_concurrency",
                 "connect_timeout_s", "read_timeout_s", "max_retries", "backoff_base_s",
                 "backoff_max_s", "retry_after_cap_s", "breaker_threshold", "breaker_cooldown_s",
                 "price_prompt_per_1k", "price_completion_per_1k", "stop")


def cloud_from_config(c) -> CloudLLM:
  """`simulated` (and any user-registered back-end) takes `cloud.kwargs`; `openai` takes the
  endpoint fields of `cloud` itself (base_url, model, api_key_env, retries, prices, ...)."""
  if c.backend == "openai":
    from dacl.cloud import openai  # noqa: F401  (registers "openai"; imports httpx)
    return make_cloud("openai", **{k: (tuple(c[k]) if k == "stop" else c[k]) for k in OPENAI_FIELDS})
  return make_cloud(c.backend, **dict(c.kwargs))


def cache_path(c, workdir: str) -> str:
  """"" = no persistent cache; "auto" = <workdir>/cloud_cache.sqlite; otherwise the path given."""
  if not c.cache or not c.cache_path:
    return ""
  return os.path.join(workdir, "cloud_cache.sqlite") if c.cache_path == "auto" else c.cache_path


def bridge_from_config(c, workdir: str) -> CloudBridge:
  path = cache_path(c, workdir)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  bridge = CloudBridge(cloud_from_config(c), cache=c.cache, timeout_s=c.timeout_s,
                       disk=ResponseCache(path) if path else None)
  import jax
  if jax.process_count() > 1:   # process 0 calls the cloud, the others receive its answers
    from dacl.cloud.multihost import BroadcastBridge
    return BroadcastBridge(bridge, jax.process_index() == 0)
  return bridge


def describe(c) -> str:
  """How results.json names the cloud (never includes a key; names the simulation as such)."""
  if c.backend == "simulated":
    return "simulated (a simulation, not a real LLM)"
  if c.backend == "openai":
    return f"openai-compatible endpoint {c.base_url} model={c.model or '(first listed)'}"
  return c.backend

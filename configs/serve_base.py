"""Shared defaults of `dacl serve` configs: the model, the server, and (for --collab) the offload
marker, the budget τ and the cloud (same fields as the training configs' `cloud`)."""
import ml_collections

from configs.base import get_base
from configs.rl_base import cloud_config


def get_serve_base() -> ml_collections.ConfigDict:
  c = get_base()
  c.algorithm = "serve"
  c.serve = ml_collections.ConfigDict(dict(
      host="127.0.0.1",       # loopback unless told otherwise
      port=8000,
      model_name="",          # the id /v1/models reports (default: model.weights or preset)
      api_key_env="",         # env var holding the bearer token clients must send ("" = none)
      # engine: "continuous" (requests join and leave a running decode; token streaming,
      # per-request seed) or "static" (a batch runs to its longest row). max_batch is the
      # continuous engine's slot count; batch_wait_ms applies to the static one.
      engine="continuous", warmup=True,   # warmup: compile every shape before serving
      max_batch=16, batch_wait_ms=5.0, default_max_tokens=256, max_n=8,
      max_body_bytes=1 << 20, collab=False, log_level="warning",
      # row_buckets: the continuous engine also steps over only the first 1 or 4 slots when
      # every active row lies there (compiled in the background after start); () = never
      row_buckets=(1, 4),
      # decode_chunk: while no request waits, the continuous engine runs this many decode steps
      # per call (one lax.scan), so per-step host work is paid once per chunk. 1 = off: on CPU
      # the step is device-bound and a chunk delays joining requests (BUILD_NOTES.md, F7)
      decode_chunk=1,
      checkpoint=""))         # a `dacl train` checkpoints/ dir: serve that policy's parameters
  # collab.mode (with --collab): "marker" = the local model offloads whole requests by emitting
  # the offload marker, under budget.tau; "adaswitch" = step-level switching (the local model
  # reflects on each step; steps with P("Yes") > collab.threshold are rewritten by the cloud).
  c.collab = ml_collections.ConfigDict(dict(mode="marker", threshold=0.5, max_steps=10,
                                            step_max_tokens=64, chat=False))
  c.offload = ml_collections.ConfigDict(dict(marker="<cloud>"))
  c.budget = ml_collections.ConfigDict(dict(tau=0.3))
  c.cloud = cloud_config()
  return c

"""The cloud bridge of a multi-process run (jax.distributed): process 0 calls the cloud and every
process receives its answers, so each prompt's request happens once globally, not once per
process.

Every process of a run executes the same host logic on the same data (rollout decisions, routes
and evaluation sets are deterministic functions of the seed and of replicated arrays), so all of
them call `collect` with the same keys in the same order. Process 0 collects through the real
`CloudBridge` (its cache, disk cache, retries and fault counting unchanged) and broadcasts the
answers as one JSON payload; the others wait for it. Requests start at collect time: the decode
loop's early start (an io_callback) would run in every process, so it is off (`early_start`).
"""
from __future__ import annotations

import dataclasses
import json

from dacl.cloud.protocol import CloudResponse
from dacl.parallel import broadcast_bytes


class BroadcastBridge:
  """A CloudBridge for multi-process runs (module docstring). Everything but `submit` and
  `collect` is the wrapped bridge's own (registration, counters, cache, checkpoint state: process
  0's is the one written to checkpoints and results)."""
  early_start = False

  def __init__(self, inner, is_primary: bool):
    self.inner, self.is_primary = inner, is_primary

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def submit(self, keys) -> None:
    if self.is_primary:
      self.inner.submit(keys)

  def collect(self, keys) -> dict:
    keys = list(dict.fromkeys(keys))
    payload = b""
    if self.is_primary:
      out = self.inner.collect(keys)
      payload = json.dumps([dataclasses.asdict(out[k]) for k in keys]).encode()
    got = json.loads(broadcast_bytes(payload, self.is_primary))
    if len(got) != len(keys) or any(r["key"] != k for r, k in zip(got, keys)):
      raise RuntimeError("multi-process cloud collect: the processes asked for different keys "
                         "(their host logic diverged)")
    return {k: CloudResponse(**r) for k, r in zip(keys, got)}

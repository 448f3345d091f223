"""Host-side asynchronous bridge to a CloudLLM.

An asyncio loop runs in a background thread. `submit` starts a request at once (it is called
from the decode loop's io_callback the moment a row emits the offload marker, or from a host hook)
and returns; `collect` waits for the answers after decoding, so cloud latency overlaps device work.
At most one call per key is in flight; answers are cached across steps when `cache=True`, and
in a persistent SQLite cache (`disk`) the moment they arrive, so a resumed run or a rerun does
not pay for them again. Faults never raise: they come back as responses with `error` set and are
counted.

Accounting: `calls`/`cost`/tokens count the answers this run *used* (first use of a key, from the
network or the disk cache); `billed_calls`/`billed_cost` count only answers paid for over the
network by this process.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Iterable, Optional

from dacl.cloud.cache import ResponseCache
from dacl.cloud.protocol import CloudLLM, CloudRequest, CloudResponse

log = logging.getLogger("dacl.cloud")


class CloudBridge:
  def __init__(self, cloud: CloudLLM, cache: bool = True, timeout_s: float = 60.0,
               disk: Optional[ResponseCache] = None):
    self.cloud, self.use_cache, self.timeout_s, self.disk = cloud, cache, timeout_s, disk
    self.cache: dict[str, CloudResponse] = {}
    self.inflight: dict[str, Future] = {}
    self.stats = {"calls": 0, "cache_hits": 0, "disk_hits": 0, "faults": 0, "prompt_tokens": 0,
                  "completion_tokens": 0, "cost": 0.0, "billed_calls": 0, "billed_cost": 0.0}
    self._lock = threading.Lock()
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name="dacl-cloud", daemon=True)
    self._thread.start()
    self._pending: dict[str, CloudRequest] = {}   # registered requests, by key
    self._refs: dict[str, int] = {}                # registered batches holding each key
    self._shared: set = set()                      # answered keys kept for a second batch

  # -- registration: the rollout registers the batch's requests before decoding --------------
  def register(self, requests: Iterable[CloudRequest]) -> None:
    """Add requests that may be started by key (several batches can be registered at once)."""
    with self._lock:
      for r in requests:
        self._pending[r.key] = r
        self._refs[r.key] = self._refs.get(r.key, 0) + 1

  def forget(self, keys: Iterable[str]) -> None:
    """Release one batch's registrations (after its collect); a key that another registered
    batch shares (a pipelined rollout) stays registered until that batch forgets it too."""
    with self._lock:
      for k in keys:
        n = self._refs.get(k, 0) - 1
        if n > 0:
          self._refs[k] = n
        else:
          self._refs.pop(k, None)
          self._pending.pop(k, None)
          if k in self._shared:
            self._shared.discard(k)
            self.inflight.pop(k, None)

  def submit(self, keys: Iterable[str]) -> None:
    """Start the registered requests for these keys now (idempotent per key)."""
    with self._lock:
      for k in keys:
        if k in self.inflight or (self.use_cache and k in self.cache):
          continue
        req = self._pending.get(k)
        if req is None:
          continue
        self.inflight[k] = asyncio.run_coroutine_threadsafe(self._call(req), self._loop)

  async def _call(self, req: CloudRequest) -> CloudResponse:
    ck = self.cloud.cache_key(req) if self.disk is not None else None
    if ck is not None:
      hit = self.disk.get(ck)
      if hit is not None:
        return CloudResponse(**{**hit.__dict__, "key": req.key, "cached": True})
    try:
      (resp,) = await asyncio.wait_for(self.cloud.complete([req]), self.timeout_s)
    except asyncio.TimeoutError:
      resp = CloudResponse(req.key, "", error=f"timeout after {self.timeout_s}s",
                           backend=self.cloud.name)
    except Exception as e:   # a back-end bug must not kill a long run: count it
      resp = CloudResponse(req.key, "", error=f"{type(e).__name__}: {e}"[:200],
                           backend=self.cloud.name)
    if ck is not None and resp.ok:
      try:
        self.disk.put(ck, self.cloud.name, resp)
      except Exception as e:   # a full disk must not lose the answer we already hold
        log.warning("cloud cache write failed: %s", e)
    return resp

  def collect(self, keys: Iterable[str]) -> dict[str, CloudResponse]:
    """Answers for keys (starting any not yet started). Blocks until all are in."""
    keys = list(dict.fromkeys(keys))
    self.submit(keys)
    out = {}
    for k in keys:
      if self.use_cache and k in self.cache:
        r = self.cache[k]
        out[k] = CloudResponse(**{**r.__dict__, "cached": True})
        self.stats["cache_hits"] += 1
        continue
      fut = self.inflight.get(k)
      if fut is None:
        raise KeyError(f"cloud request {k!r} was never registered")
      r = fut.result()
      if k in self._shared:   # the second registered batch (pipelining) reuses the one answer
        self._shared.discard(k)
        self.inflight.pop(k, None)
        out[k] = CloudResponse(**{**r.__dict__, "cached": True})
        self.stats["cache_hits"] += 1
        continue
      with self._lock:
        if self._refs.get(k, 0) > 1:
          self._shared.add(k)   # another batch registered this key: keep its future for it
        else:
          self.inflight.pop(k, None)
      self.stats["calls"] += 1
      if r.ok:
        self.stats["prompt_tokens"] += r.prompt_tokens
        self.stats["completion_tokens"] += r.completion_tokens
        self.stats["cost"] += r.cost
        if r.cached:
          self.stats["disk_hits"] += 1
        else:
          self.stats["billed_calls"] += 1
          self.stats["billed_cost"] += r.cost
        if self.use_cache:
          self.cache[k] = r
      else:
        self.stats["faults"] += 1
        log.warning("cloud fault on %s: %s (answered locally)", k, r.error)
      out[k] = r
    return out

  def summary(self) -> dict:
    """Bridge counters plus the back-end's own (retries, faults by kind): for metrics/results."""
    return {**self.stats, **{f"backend_{k}": v for k, v in getattr(self.cloud, "stats", {}).items()}}

  def export_state(self) -> dict:
    """JSON-able cache + counters, saved in checkpoints so a resumed run pays nothing twice."""
    return {"cache": {k: dict(r.__dict__) for k, r in self.cache.items()}, "stats": dict(self.stats),
            "backend_stats": dict(getattr(self.cloud, "stats", {}))}

  def import_state(self, state: dict) -> None:
    self.cache = {k: CloudResponse(**v) for k, v in state.get("cache", {}).items()}
    self.stats.update(state.get("stats", {}))
    if isinstance(getattr(self.cloud, "stats", None), dict):
      self.cloud.stats.update(state.get("backend_stats", {}))

  def close(self) -> None:
    async def _close():
      await self.cloud.aclose()
    try:
      asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
    except Exception:
      pass
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=5)
    if self.disk is not None:
      self.disk.close()


# The decode loop's io_callback reaches the bridge through this module-level slot (a jitted
# function cannot close over a Python object without recompiling for each one).
_ACTIVE: dict[str, Optional[object]] = {"bridge": None, "row_keys": None}


def activate(bridge: Optional[CloudBridge], row_keys: Optional[list]) -> None:
  _ACTIVE["bridge"], _ACTIVE["row_keys"] = bridge, row_keys


def on_marker_rows(hit) -> None:
  """io_callback target: rows that just emitted the offload marker -> start their requests."""
  import numpy as np
  bridge, keys = _ACTIVE["bridge"], _ACTIVE["row_keys"]
  if bridge is None or keys is None:
    return
  rows = np.nonzero(np.asarray(hit))[0]
  bridge.submit(keys[r] for r in rows if r < len(keys))

"""A batching engine: concurrent requests -> one jitted Sampler call per compatible group.

Requests arrive on any thread or event loop; one worker thread owns the device. It takes the
first waiting request, waits up to `batch_wait_ms` for more (at most `max_batch` prompts),
groups them by sampling settings (temperature, top-p, top-k, stop strings, n, marker handling,
max_tokens bucket), and runs each group as one batch. A row whose own `max_tokens` is below the
group's is cut back to it (finish_reason "length").
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Optional, Sequence

import jax
import numpy as np

from dacl.sampling import STOP_LENGTH, STOP_MARKER, PromptTooLongError, Sampler, SamplingParams, next_bucket

log = logging.getLogger("dacl.serve")


@dataclasses.dataclass(frozen=True)
class GenParams:
  max_tokens: int = 64
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  n: int = 1
  stop: tuple = ()
  marker_ids: tuple = ()        # collab: stop on the offload marker ...
  ban_marker: bool = False      # ... or forbid it (single-token markers)
  seed: Optional[int] = None    # the request's samples (continuous engine; static ignores it)

  def group_key(self):
    return (self.temperature, self.top_p, self.top_k, self.n, self.stop, self.marker_ids,
            self.ban_marker, next_bucket(self.max_tokens, 8))


@dataclasses.dataclass
class Completion:
  text: str
  tokens: int
  finish_reason: str            # "stop" | "length" | "marker"


@dataclasses.dataclass
class GenResult:
  prompt_tokens: int
  completions: list             # n Completions


@dataclasses.dataclass
class _Item:
  ids: list
  params: GenParams
  future: concurrent.futures.Future


class EngineBase:
  """What both engines share: prompt encoding and the context-length check (`sampler` and
  `max_cache_len` are set by the subclass)."""
  sampler: Sampler
  max_cache_len: int

  def encode(self, prompt: str) -> list:
    return self.sampler.encode_prompts([prompt])[0]

  def cancel(self, fut: concurrent.futures.Future) -> None:
    """Give up on a request (its client went away); a request already running completes."""
    fut.cancel()

  def check_fits(self, ids: Sequence[int], max_tokens: int) -> None:
    if len(ids) + max_tokens > self.max_cache_len:
      raise PromptTooLongError(
          f"prompt of {len(ids)} tokens + max_tokens={max_tokens} exceeds the context length "
          f"{self.max_cache_len}")


class BatchingEngine(EngineBase):
  def __init__(self, model, tokenizer, max_batch: int = 16, batch_wait_ms: float = 5.0,
               max_cache_len: Optional[int] = None, seed: int = 0):
    self.sampler = Sampler(model, tokenizer, max_cache_len=max_cache_len)
    self.tokenizer = tokenizer
    self.max_cache_len = self.sampler.max_cache_len
    self.max_batch, self.wait_s = max(1, int(max_batch)), batch_wait_ms / 1000.0
    self.seed = seed
    self.stats = {"requests": 0, "batches": 0, "rows": 0, "device_s": 0.0, "max_batch_seen": 0}
    self._q: "queue.Queue[Optional[_Item]]" = queue.Queue()
    self._n = 0
    self._thread = threading.Thread(target=self._worker, name="dacl-engine", daemon=True)
    self._thread.start()

  # -- public API ---------------------------------------------------------------------------
  def submit(self, ids: Sequence[int], params: GenParams) -> concurrent.futures.Future:
    """Queue one prompt (token ids); the future resolves to a GenResult or raises."""
    self.check_fits(ids, params.max_tokens)
    fut: concurrent.futures.Future = concurrent.futures.Future()
    self._q.put(_Item(list(ids), params, fut))
    return fut

  def generate(self, prompt: str, params: GenParams) -> GenResult:
    return self.submit(self.encode(prompt), params).result()

  def close(self) -> None:
    self._q.put(None)
    self._thread.join(timeout=10)

  # -- worker -------------------------------------------------------------------------------
  def _take_batch(self, first: _Item) -> list:
    batch, deadline = [first], time.perf_counter() + self.wait_s
    while len(batch) < self.max_batch:
      left = deadline - time.perf_counter()
      try:
        item = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
      except queue.Empty:
        break
      if item is None:
        self._q.put(None)
        break
      batch.append(item)
    return batch

  def _worker(self) -> None:
    while True:
      first = self._q.get()
      if first is None:
        return
      batch = [it for it in self._take_batch(first) if it.future.set_running_or_notify_cancel()]
      groups: dict = {}
      for it in batch:
        groups.setdefault(it.params.group_key(), []).append(it)
      for items in groups.values():
        for chunk in self._fit_chunks(items):
          try:
            self._run(chunk)
          except Exception as e:   # never kill the worker: fail these requests only
            log.exception("generation failed")
            for it in chunk:
              if not it.future.done():
                it.future.set_exception(e)

  def _fit_chunks(self, items: list) -> list:
    """Split so that longest prompt + largest max_tokens fits the cache in every chunk."""
    items = sorted(items, key=lambda it: len(it.ids))
    chunks, cur = [], []
    for it in items:
      trial = cur + [it]
      need = max(len(x.ids) for x in trial) + max(x.params.max_tokens for x in trial)
      if cur and need > self.max_cache_len:
        chunks.append(cur)
        trial = [it]
      cur = trial
    return chunks + ([cur] if cur else [])

  def _run(self, items: list) -> None:
    p0 = items[0].params
    max_new = max(it.params.max_tokens for it in items)
    self._n += 1
    key = jax.random.fold_in(jax.random.key(self.seed), self._n)
    t = time.perf_counter()
    out = self.sampler([it.ids for it in items], key, SamplingParams(
        max_new_tokens=max_new, temperature=p0.temperature, top_k=p0.top_k, top_p=p0.top_p,
        num_samples=p0.n, stop_strings=p0.stop, marker_ids=p0.marker_ids,
        ban_marker=p0.ban_marker))
    self.stats["device_s"] += time.perf_counter() - t
    self.stats["batches"] += 1
    self.stats["requests"] += len(items)
    self.stats["rows"] += len(items) * p0.n
    self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(items))
    G = p0.n
    for b, it in enumerate(items):
      comps = []
      for g in range(G):
        r = b * G + g
        L, reason, text = int(out.lengths[r]), int(out.stop_reason[r]), out.texts[r]
        mt = it.params.max_tokens
        if L > mt:   # batched with a longer request: cut back to this request's own limit
          L, reason = mt, STOP_LENGTH
          text = self.tokenizer.decode(np.asarray(out.tokens[r, :mt]))
        finish = ("length" if reason == STOP_LENGTH else "marker" if reason == STOP_MARKER
                  else "stop")
        comps.append(Completion(text, L, finish))
      it.future.set_result(GenResult(len(it.ids), comps))

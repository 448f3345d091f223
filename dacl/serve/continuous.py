"""Continuous batching: requests join and leave a running decode at step boundaries.

The engine owns `slots` rows of one KV cache ([slots, S] per layer, a write index per row). A
worker thread loops:
  admit   each waiting request (one row per sample, n rows for n > 1) is prefilled alone (prompt
          left-padded to a power-of-two bucket), its first token sampled from the prefill's
          logits, and its row cache written into a free slot;
  step    one jitted decode step over all slots: feed each slot's last token, write its K/V at
          the slot's own index, sample the next token with the slot's own temperature / top-k /
          top-p / banned token and its own PRNG key (fold_in(request key, token number));
  retire  on the host: a stop token, the collab marker sequence, a stop string or the row's
          max_tokens ends the row; its slot is free at the next step.
Tokens are streamed to listeners as text deltas (held back while they could still be the start
of a stop string, or end in a partial UTF-8 character). `submit` gives a Future of the whole
GenResult, with the same API as the static BatchingEngine, so `--collab` runs on either.

While no request waits to be admitted, `decode_chunk` steps run as one call (`slot_steps`, a
`lax.scan` of the step), so the host's per-step work is paid once per chunk.

Compiled shapes: the step per attention-length bucket, and the prefill per prompt bucket;
`warmup()` compiles them before the server accepts requests. Steps over fewer slots (row
buckets) and chunked steps compile on a background thread; until one is ready the single step
over all slots serves.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import queue
import threading
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl.models.decoder import KVCache, _write_cache, init_cache
from dacl.sampling import Sampler, next_bucket, sample_rows
from dacl.serve.engine import Completion, EngineBase, GenParams, GenResult

log = logging.getLogger("dacl.serve")


@functools.partial(jax.jit, static_argnames=("graphdef",))
def prefill_row(graphdef, state, tokens, n):
  """One prompt, right-padded: tokens [1, P], n real tokens -> (logits after the last real token
  [1, V], a one-row cache of P slots whose index is n, so decoding overwrites the padding).
  The cache is only P long: attention in the prefill costs P x P, not P x the engine's S."""
  model = nnx.merge(graphdef, state)
  P = tokens.shape[1]
  mask = jnp.arange(P)[None] < n
  h, cache = model(tokens, jnp.arange(P, dtype=jnp.int32)[None], mask,
                   init_cache(model.cfg, 1, P), return_hidden=True)
  last = jax.lax.dynamic_index_in_dim(h[0], n - 1, 0, keepdims=True)      # [1, d]
  logits = (last @ model.head_weight()).astype(jnp.float32)
  return logits, KVCache(cache.k, cache.v, cache.mask, jnp.asarray(n, jnp.int32))


def _decode_once(model, cache, tokens, positions, active, key_data, counts, temperature, top_k,
                 top_p, ban_id, kv_len: int, R: int):
  """The body of `slot_step` on a merged model (see there); also the body of `slot_steps`."""
  N = cache.mask.shape[0]
  keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(key_data[:R]), counts[:R])
  act = active[:R]
  if R == N:
    logits, new = model(tokens[:, None], positions[:, None], act[:, None], cache, kv_len=kv_len)
    k, v, mask = new.k, new.v, new.mask
  else:
    corner = KVCache(tuple(c[:R, :, :, :kv_len] for c in cache.k),
                     tuple(c[:R, :, :kv_len] for c in cache.v),
                     cache.mask[:R, :kv_len], cache.index[:R])
    logits, new = model(tokens[:R, None], positions[:R, None], act[:, None], corner)
    i, pad = cache.index, N - R
    col = lambda c, axis: jnp.pad(jax.vmap(lambda x, j: jax.lax.dynamic_slice_in_dim(
        x, j, 1, axis - 1))(c, i[:R]), [(0, pad)] + [(0, 0)] * (c.ndim - 1))
    # Slots past R are inactive: the zeros written at their index are overwritten before use.
    k = tuple(_write_cache(c, col(n, 3), i, axis=3) for c, n in zip(cache.k, new.k))
    v = tuple(_write_cache(c, col(n, 2), i, axis=2) for c, n in zip(cache.v, new.v))
    mask = jax.lax.dynamic_update_slice(cache.mask, new.mask, (0, 0))
  logits = logits[:, 0]
  logits = jnp.where(jnp.arange(logits.shape[-1])[None] == ban_id[:R, None], -jnp.inf, logits)
  tok, lp = sample_rows(logits, keys, temperature[:R], top_k[:R], top_p[:R])
  index = jnp.where(active, jnp.pad(new.index, (0, N - R)), cache.index)
  pad = lambda x: jnp.pad(x, (0, N - R))
  return pad(tok), pad(lp), KVCache(k, v, mask, index)


@functools.partial(jax.jit, static_argnames=("graphdef", "kv_len", "rows"),
                   donate_argnames=("cache",))
def slot_step(graphdef, state, cache, tokens, positions, active, key_data, counts, temperature,
              top_k, top_p, ban_id, *, kv_len: int, rows: Optional[int] = None):
  """One decode step over the first `rows` slots (static; None: all N). tokens / positions /
  active / counts / temperature / top_k / top_p / ban_id [N]; key_data [N, 2] uint32 (each row's
  key) -> (next token [N] (0 past `rows`), its logp [N], cache). Row n samples with
  fold_in(key n, counts n). An inactive slot's write is masked out and its index does not move.
  Attention reads the first kv_len positions (static: a bucket above every active slot's index).

  With rows < N every active slot must lie below `rows`. The step then runs on a copy of the
  filled corner of the cache ([rows, ..., kv_len]: the part attention reads anyway) and writes
  back only the new token's column, so its GEMMs have `rows` rows, not N: XLA CPU's small-M
  GEMMs cost roughly in proportion to M (BUILD_NOTES.md, F7)."""
  N = cache.mask.shape[0]
  R = N if rows is None else min(int(rows), N)
  return _decode_once(nnx.merge(graphdef, state), cache, tokens, positions, active, key_data,
                      counts, temperature, top_k, top_p, ban_id, kv_len, R)


@functools.partial(jax.jit, static_argnames=("graphdef", "kv_len", "rows", "chunk"),
                   donate_argnames=("cache",))
def slot_steps(graphdef, state, cache, tokens, positions, active, key_data, counts, temperature,
               top_k, top_p, ban_id, *, kv_len: int, rows: Optional[int] = None, chunk: int = 8):
  """`chunk` decode steps in one call (a `lax.scan` of `slot_step`'s body): the same arguments
  -> (tokens [N, chunk], logps [N, chunk], cache). Step j feeds step j-1's token at position
  + j and samples with fold_in(key n, counts n + j), so the tokens equal `chunk` single steps'.
  Rows keep decoding past a stop token (the host drops what follows it); kv_len must cover
  every active slot's index + chunk."""
  model = nnx.merge(graphdef, state)
  N = cache.mask.shape[0]
  R = N if rows is None else min(int(rows), N)

  def body(carry, j):
    cache, tok = carry
    nxt, lp, cache = _decode_once(model, cache, tok, positions + j, active, key_data,
                                  counts + j.astype(counts.dtype), temperature, top_k, top_p,
                                  ban_id, kv_len, R)
    return (cache, jnp.where(active, nxt, tok)), (nxt, lp)

  (cache, _), (toks, lps) = jax.lax.scan(body, (cache, tokens), jnp.arange(chunk, dtype=jnp.int32))
  return toks.T, lps.T, cache


@functools.partial(jax.jit, donate_argnames=("cache",))
def insert_row(cache, row: KVCache, slot):
  """Write a one-row cache of P slots (from prefill) into the first P positions of slot `slot`
  of the engine's cache; the slot's later positions are marked empty (their stale keys are
  never attended)."""
  put = lambda c, r: jax.lax.dynamic_update_slice(c, r.astype(c.dtype), (slot,) + (0,) * (c.ndim - 1))
  S, P = cache.mask.shape[1], row.mask.shape[1]
  mask = jnp.concatenate([row.mask, jnp.zeros((1, S - P), bool)], axis=1)
  return KVCache(tuple(put(c, r) for c, r in zip(cache.k, row.k)),
                 tuple(put(c, r) for c, r in zip(cache.v, row.v)),
                 put(cache.mask, mask), cache.index.at[slot].set(row.index))


@jax.jit
def _first_token(logits, keys, temperature, top_k, top_p, ban_id):
  logits = jnp.where(jnp.arange(logits.shape[-1])[None] == ban_id[:, None], -jnp.inf, logits)
  return sample_rows(logits, keys, temperature, top_k, top_p)


@dataclasses.dataclass
class _Row:
  """One sample of one request, while it occupies a slot."""
  req: "_Request"
  g: int                  # sample index within the request
  key: np.ndarray         # [2] uint32: the sample's key data (fold_in(request key, g))
  toks: list = dataclasses.field(default_factory=list)
  sent: int = 0           # characters of text already streamed
  pos: int = 0            # RoPE position of the next token fed
  finish: Optional[str] = None
  text: str = ""


@dataclasses.dataclass
class _Request:
  ids: list
  params: GenParams
  future: concurrent.futures.Future
  listener: Optional[Callable]
  seed: int
  t_submit: float
  rows: list = dataclasses.field(default_factory=list)
  done: int = 0
  cancelled: bool = False


class ContinuousEngine(EngineBase):
  """Same public API as BatchingEngine (encode, check_fits, submit, generate, close, stats,
  tokenizer, max_cache_len, sampler), plus `listener` streaming and per-request seeds."""

  streams = True   # submit(listener=...) delivers text as it decodes

  def __init__(self, model, tokenizer, slots: int = 16, max_cache_len: Optional[int] = None,
               seed: int = 0, min_prompt_bucket: int = 16, min_kv_bucket: int = 64,
               row_buckets: Sequence[int] = (1, 4), decode_chunk: int = 1):
    self.sampler = Sampler(model, tokenizer, max_cache_len=max_cache_len)   # adaswitch serving
    self.graphdef, self.state = nnx.split(model)
    self.tokenizer = tokenizer
    self.max_cache_len = S = self.sampler.max_cache_len
    self.slots, self.seed, self.min_bucket = max(1, int(slots)), int(seed), int(min_prompt_bucket)
    self.min_kv = int(min_kv_bucket)
    # A step spans the smallest bucket holding every active slot (rows are admitted lowest slot
    # first): one client decodes with 1-row GEMMs, not `slots`-row ones.
    self.row_buckets = sorted({min(max(1, int(b)), self.slots) for b in row_buckets} | {self.slots})
    # While no request waits, `decode_chunk` steps run in one call (`slot_steps`): the host's
    # per-step work (dispatch, bookkeeping) is paid once per chunk, not once per token.
    self.chunk = max(1, int(decode_chunk))
    c = init_cache(model.cfg, self.slots, S)
    # Committed to the device, as the background-compiled steps return it: the jitted steps' cache
    # keys on it, and a mix would compile each step shape twice.
    self.cache = jax.device_put(KVCache(c.k, c.v, c.mask, jnp.zeros((self.slots,), jnp.int32)),
                                next(iter(jax.tree.leaves(self.state)[0].devices())))
    N = self.slots
    self._tok = np.zeros(N, np.int32)
    self._pos = np.zeros(N, np.int32)
    self._active = np.zeros(N, bool)
    self._temp = np.zeros(N, np.float32)
    self._topk = np.zeros(N, np.int32)
    self._topp = np.ones(N, np.float32)
    self._ban = np.full(N, -1, np.int32)
    self._keys = np.zeros((N, *jax.random.key_data(jax.random.key(0)).shape), np.uint32)
    self._rows: list = [None] * N
    self._stop_ids = set(int(t) for t in tokenizer.stop_ids)
    self.stats = {"requests": 0, "steps": 0, "rows": 0, "device_s": 0.0, "prefills": 0,
                  "max_active": 0, "active_row_steps": 0, "cancelled_rows": 0, "row_steps": {},
                  "small_steps_queued": 0, "small_steps_compiled": 0, "small_steps_failed": 0,
                  "chunk_steps": 0}
    self._q: "queue.Queue" = queue.Queue()
    self._waiting: list = []
    self._n = 0
    self._closed = False
    # Steps over fewer rows than `slots`, and chunked steps, are compiled ahead of time on a
    # second thread (queued by warmup(), or the first time a step could use one); until one is
    # ready the step is a single one over all slots, so no request waits for a compile.
    self._small_steps: dict = {}
    self._compile_q: "queue.Queue" = queue.Queue()
    self._queued: set = set()
    self._compiler = threading.Thread(target=self._compile_small_steps, name="dacl-compile",
                                      daemon=True)
    self._compiler.start()
    self._thread = threading.Thread(target=self._worker, name="dacl-continuous", daemon=True)
    self._thread.start()

  # -- public API ---------------------------------------------------------------------------
  def submit(self, ids: Sequence[int], params: GenParams, listener: Optional[Callable] = None,
             seed: Optional[int] = None) -> concurrent.futures.Future:
    """Queue one prompt (token ids); the future resolves to a GenResult (or raises).
    listener(g, delta_text, finish_reason_or_None) is called from the engine thread as sample g
    produces text; seed fixes the request's samples (default: drawn from the engine's stream)."""
    self.check_fits(ids, params.max_tokens)
    if params.n > self.slots:
      raise ValueError(f"n={params.n} is more than the engine's {self.slots} slots")
    fut: concurrent.futures.Future = concurrent.futures.Future()
    seed = params.seed if seed is None else seed
    req = _Request(list(ids), params, fut, listener, seed, time.perf_counter())
    fut.dacl_request = req      # for cancel()
    self._q.put(req)
    return fut

  def cancel(self, fut: concurrent.futures.Future) -> None:
    """Stop a request (e.g. its client disconnected): its slots are freed at the next step and
    its future is cancelled."""
    req = getattr(fut, "dacl_request", None)
    if req is not None:
      req.cancelled = True
    fut.cancel()

  def generate(self, prompt: str, params: GenParams, seed: Optional[int] = None) -> GenResult:
    return self.submit(self.encode(prompt), params, seed=seed).result()

  def shapes(self) -> tuple[list, list]:
    """The compiled shapes this engine can need: prompt buckets and attention-length buckets
    (each step shape once over all slots, and once per smaller row bucket, in the background)."""
    b, out = self.min_bucket, []
    while b < self.max_cache_len:
      out.append(b)
      b *= 2
    out.append(self.max_cache_len)
    return out, [x for x in out if x >= self.min_kv] or [self.max_cache_len]

  def warmup(self) -> float:
    """Compile every prefill bucket and every step shape before serving, so no request pays a
    compile. Runs in the caller's thread before requests arrive. Returns the seconds taken."""
    t = time.perf_counter()
    prompts, kvs = self.shapes()
    for P in prompts:
      logits, row = prefill_row(self.graphdef, self.state, jnp.zeros((1, P), jnp.int32), jnp.int32(1))
      _first_token(logits, jax.random.key(0)[None], jnp.zeros(1), jnp.zeros(1, jnp.int32),
                   jnp.ones(1), jnp.full(1, -1, jnp.int32))
      self.cache = insert_row(self.cache, row, jnp.int32(0))   # slot 0 is free: overwritten later
    N = self.slots
    for kv in kvs:
      _, _, self.cache = slot_step(
          self.graphdef, self.state, self.cache, *self._step_args(np.zeros(N, np.uint32)),
          kv_len=kv)
    self.cache.mask.block_until_ready()
    for kv in kvs:
      for rows in self.row_buckets:
        for k in {1, self.chunk}:
          if rows < self.slots or k > 1:
            self._want_small_step(rows, kv, k)
    return time.perf_counter() - t

  def wait_small_steps(self, timeout: Optional[float] = None) -> bool:
    """Block until every queued smaller-row step is compiled (benchmarks, tests). True if done."""
    end = None if timeout is None else time.perf_counter() + timeout
    st = self.stats
    while st["small_steps_compiled"] + st["small_steps_failed"] < st["small_steps_queued"]:
      if self._closed or (end is not None and time.perf_counter() > end):
        return False
      time.sleep(0.05)
    return True

  def _step_args(self, counts) -> list:
    return [jnp.asarray(x) for x in (self._tok, self._pos, self._active, self._keys, counts,
                                     self._temp, self._topk, self._topp, self._ban)]

  def _want_small_step(self, rows: int, kv: int, k: int = 1) -> None:
    if (rows, kv, k) not in self._queued:
      self._queued.add((rows, kv, k))
      self.stats["small_steps_queued"] += 1
      self._compile_q.put((rows, kv, k))

  def _compile_small_steps(self) -> None:
    spec = lambda tree: jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)
    state, cache = spec(self.state), spec(self.cache)
    args = spec(self._step_args(np.zeros(self.slots, np.uint32)))
    while True:
      item = self._compile_q.get()
      if item is None or self._closed:
        return
      rows, kv, k = item
      try:
        if k == 1:
          fn = slot_step.lower(self.graphdef, state, cache, *args, kv_len=kv, rows=rows)
        else:
          fn = slot_steps.lower(self.graphdef, state, cache, *args, kv_len=kv, rows=rows, chunk=k)
        self._small_steps[item] = fn.compile()
        self.stats["small_steps_compiled"] += 1
      except Exception:   # the single all-slots step still serves
        self.stats["small_steps_failed"] += 1
        log.exception("compiling the %d-row step (kv %d, chunk %d) failed", rows, kv, k)

  def close(self) -> None:
    self._closed = True
    self._q.put(None)
    self._compile_q.put(None)
    self._thread.join(timeout=10)
    self._compiler.join(timeout=60)   # an XLA compile in flight at interpreter exit can crash

  # -- worker -------------------------------------------------------------------------------
  def _bucket(self, n: int) -> int:
    return min(next_bucket(n, self.min_bucket), self.max_cache_len)

  def _worker(self) -> None:
    while True:
      block = not self._active.any() and not self._waiting
      try:
        while True:
          item = self._q.get(block=block)
          block = False
          if item is None:
            self._fail_all(RuntimeError("engine closed"))
            return
          if item.future.set_running_or_notify_cancel():
            self._waiting.append(item)
      except queue.Empty:
        pass
      try:
        self._admit()
        if self._active.any():
          self._step()
      except Exception as e:   # never kill the worker: fail the requests in flight only
        log.exception("generation failed")
        self._fail_all(e)

  def _fail_all(self, e: Exception) -> None:
    reqs = {id(r.req): r.req for r in self._rows if r is not None}
    reqs.update({id(r): r for r in self._waiting})
    for r in reqs.values():
      if not r.future.done():
        r.future.set_exception(e)
    self._rows = [None] * self.slots
    self._active[:] = False
    self._waiting = []

  def _admit(self) -> None:
    while self._waiting:
      req = self._waiting[0]
      free = [i for i in range(self.slots) if self._rows[i] is None]
      if len(free) < req.params.n:
        return
      self._waiting.pop(0)
      if req.cancelled:
        continue
      self._n += 1
      seed = req.seed if req.seed is not None else int(np.random.default_rng(
          [self.seed, self._n]).integers(2 ** 31))
      seed = int(seed) % (1 << 64)
      base = jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), seed >> 32)
      p = req.params
      P = self._bucket(len(req.ids))
      tokens = np.full((1, P), self.tokenizer.pad_id, np.int32)
      tokens[0, :len(req.ids)] = req.ids
      logits, row = prefill_row(self.graphdef, self.state, jnp.asarray(tokens),
                                jnp.int32(len(req.ids)))
      self.stats["prefills"] += 1
      self.stats["requests"] += 1
      G = p.n
      keys = [jax.random.fold_in(jax.random.fold_in(base, g), 0) for g in range(G)]
      ban = p.marker_ids[0] if (len(p.marker_ids) == 1 and p.ban_marker) else -1
      first, _ = _first_token(jnp.repeat(logits, G, 0), jnp.stack(keys),
                              jnp.full((G,), p.temperature, jnp.float32),
                              jnp.full((G,), p.top_k, jnp.int32), jnp.full((G,), p.top_p, jnp.float32),
                              jnp.full((G,), ban, jnp.int32))
      first = np.asarray(first)
      for g in range(G):
        s = free[g]
        self.cache = insert_row(self.cache, row, jnp.int32(s))
        r = _Row(req, g, np.asarray(jax.random.key_data(jax.random.fold_in(base, g))),
                 pos=len(req.ids))
        req.rows.append(r)
        self._rows[s] = r
        self._keys[s] = r.key
        self._temp[s], self._topk[s], self._topp[s], self._ban[s] = (p.temperature, p.top_k,
                                                                      p.top_p, ban)
        self._active[s] = True
        self.stats["rows"] += 1
        self._accept(s, int(first[g]))

  def _step(self) -> None:
    t = time.perf_counter()
    live = np.flatnonzero(self._active)
    counts = np.asarray([len(r.toks) if r is not None else 0 for r in self._rows], np.uint32)
    top = max(self._pos[s] for s in live) + 1       # every active row's keys lie below this
    rows = next(b for b in self.row_buckets if b > live[-1])
    # A chunk only while nobody waits to be admitted (admission happens between calls) and the
    # chunk fits the cache; a row that stops mid-chunk drops the chunk's later tokens.
    k = self.chunk if (self.chunk > 1 and not self._waiting and self._q.empty()
                       and top - 1 + self.chunk <= self.max_cache_len) else 1
    kv = min(next_bucket(top + k - 1, self.min_kv), self.max_cache_len)
    fn = self._small_steps.get((rows, kv, k)) if (rows < self.slots or k > 1) else None
    if fn is None and k > 1:          # the chunked step is still compiling: one step
      self._want_small_step(rows, kv, k)
      k = 1
      kv = min(next_bucket(top, self.min_kv), self.max_cache_len)
      fn = self._small_steps.get((rows, kv, 1)) if rows < self.slots else None
    if fn is not None:
      tok, _, self.cache = fn(self.state, self.cache, *self._step_args(counts))
    else:
      if rows < self.slots:
        self._want_small_step(rows, kv)
      tok, _, self.cache = slot_step(self.graphdef, self.state, self.cache,
                                     *self._step_args(counts), kv_len=kv)
      rows = self.slots
    self.stats["row_steps"][str(rows)] = self.stats["row_steps"].get(str(rows), 0) + k
    tok = np.asarray(tok).reshape(self.slots, k)
    self.stats["device_s"] += time.perf_counter() - t
    self.stats["steps"] += k
    self.stats["chunk_steps"] += int(k > 1)
    self.stats["active_row_steps"] += len(live) * k
    self.stats["max_active"] = max(self.stats["max_active"], len(live))
    for s in live:
      r = self._rows[s]
      for j in range(k):
        if self._rows[s] is not r:   # the row stopped at an earlier token of the chunk
          break
        self._accept(int(s), int(tok[s, j]))

  def _accept(self, s: int, t: int) -> None:
    """Record slot s's new token t; retire the row when it stops."""
    r, p = self._rows[s], self._rows[s].req.params
    r.toks.append(t)
    finish = None
    if r.req.cancelled:
      self._rows[s], self._active[s] = None, False
      self.stats["cancelled_rows"] += 1
      r.req.done += 1
      if r.req.done == p.n and not r.req.future.done():
        r.req.future.set_exception(concurrent.futures.CancelledError())
      return
    if t in self._stop_ids:
      finish = "stop"
    elif p.marker_ids and tuple(r.toks[-len(p.marker_ids):]) == tuple(p.marker_ids):
      finish = "marker"
    if finish is None and len(r.toks) < p.max_tokens and not p.stop and r.req.listener is None:
      self._tok[s], self._pos[s] = t, r.pos    # nothing needs the text before the row ends
      r.pos += 1
      return
    text = self.tokenizer.decode(np.asarray(r.toks, np.int32))
    cut = min([i for i in (text.find(x) for x in p.stop) if i >= 0], default=-1)
    if cut >= 0 and finish is None:
      text, finish = text[:cut], "stop"
    if finish is None and len(r.toks) >= p.max_tokens:
      finish = "length"
    r.text = text
    if finish is None:
      self._tok[s], self._pos[s] = t, r.pos
      r.pos += 1
      ready = len(text) - _holdback(text, p.stop)
    else:
      ready = len(text)
    if r.req.listener is not None and (ready > r.sent or finish):
      r.req.listener(r.g, text[r.sent:ready], finish)
    r.sent = max(r.sent, ready)
    if finish is not None:
      r.finish = finish
      self._rows[s] = None
      self._active[s] = False
      req = r.req
      req.done += 1
      if req.done == req.params.n:
        comps = [Completion(x.text, len(x.toks), x.finish) for x in sorted(req.rows, key=lambda x: x.g)]
        req.future.set_result(GenResult(len(req.ids), comps))


def _holdback(text: str, stops: Sequence[str]) -> int:
  """Characters at the end of text not to stream yet: a partial UTF-8 character, or the longest
  suffix that is a proper prefix of a stop string."""
  if text.endswith("\ufffd"):
    return 1
  hold = 0
  for s in stops:
    for k in range(min(len(s) - 1, len(text)), 0, -1):
      if text.endswith(s[:k]):
        hold = max(hold, k)
        break
  return hold

"""Jitted sampler: prefill + one `lax.while_loop` decode over a static, donated KV cache.

Prompts are left-padded into power-of-two length buckets (and the row count into power-of-two
buckets) so repeated calls reuse compiled code. Per row: stop tokens and stop strings (matched
on token sequences inside the loop, and re-checked on the decoded text on the host), temperature,
top-k, top-p or greedy. N = rows * num_samples; M = new-token buffer (a bucket >= max_new_tokens).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl.models.decoder import KVCache, init_cache

STOP_LENGTH, STOP_TOKEN, STOP_STRING, STOP_MARKER = 0, 1, 2, 3


class PromptTooLongError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_new_tokens: int = 64
  temperature: float = 1.0      # <= 0 means greedy
  top_k: int = 0                # 0 disables
  top_p: float = 1.0            # 1 disables
  num_samples: int = 1          # G samples per prompt
  stop_strings: tuple = ()
  stop_token_ids: Optional[tuple] = None  # default: the tokenizer's stop ids
  # Offload marker (token ids; one special token or a text tag's tokens). A row that emits it
  # stops with STOP_MARKER. ban_marker forbids its first token (single-token markers: the
  # policy cannot offload); notify_marker starts cloud requests from inside the decode loop.
  marker_ids: tuple = ()
  ban_marker: bool = False
  notify_marker: bool = False


class SampleOutput(NamedTuple):
  """tokens/logprobs/sample_logprobs/mask: [N, M]; lengths/stop_reason: [N]; texts: N strings.

  Row n is sample n % G of prompt n // G. logprobs are log pi(token) at temperature 1 (the
  policy); sample_logprobs are under the distribution actually sampled (after temperature,
  top-k, top-p; 0 for greedy). mask is True on generated tokens, the stop token included.
  """
  tokens: np.ndarray
  logprobs: np.ndarray
  sample_logprobs: np.ndarray
  mask: np.ndarray
  lengths: np.ndarray
  stop_reason: np.ndarray
  texts: list
  prompt_lengths: np.ndarray


def next_bucket(n: int, minimum: int = 16) -> int:
  b = minimum
  while b < n:
    b *= 2
  return b


CANDIDATES = 256   # top-k / top-p are computed on the 256 largest logits when that is exact


def filter_logits(logits, top_k, top_p, iters: int = 32):
  """Mask logits [N, V] outside the top-k set and the top-p nucleus (traced k and p).

  Hugging Face / vLLM semantics: top-k first, then the nucleus of the distribution renormalised
  over the top-k set. The kept set is {x >= max(t_k, t_p)}: t_k the k-th largest logit, t_p the
  largest threshold whose renormalised mass reaches top_p. Both are found by bisection on the
  value (32 halvings of [min, max]: float32-exact in practice; t_k first, since t_p depends on
  it); a full sort of a 49k vocabulary was 30x slower on CPU.
  """
  V = logits.shape[-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V).astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  lo = jnp.min(logits, -1, keepdims=True)
  hi = jnp.max(logits, -1, keepdims=True)

  def body_k(_, c):
    lo_k, hi_k = c
    mk = (lo_k + hi_k) / 2
    ok_k = jnp.sum(logits >= mk, -1, keepdims=True) >= k        # still >= k tokens kept
    return jnp.where(ok_k, mk, lo_k), jnp.where(ok_k, hi_k, mk)

  t_k, _ = jax.lax.fori_loop(0, iters, body_k, (lo, hi))
  in_k = logits >= t_k
  mass_k = jnp.sum(jnp.where(in_k, probs, 0.0), -1, keepdims=True)

  def body_p(_, c):
    lo_p, hi_p = c
    mp = (lo_p + hi_p) / 2
    ok_p = jnp.sum(jnp.where(in_k & (logits >= mp), probs, 0.0), -1, keepdims=True) >= top_p * mass_k
    return jnp.where(ok_p, mp, lo_p), jnp.where(ok_p, hi_p, mp)

  t_p, _ = jax.lax.fori_loop(0, iters, body_p, (lo, hi))
  return jnp.where(logits >= jnp.minimum(jnp.maximum(t_k, t_p), hi), logits, -jnp.inf)


def _inverse_cdf(logits, key, u=None):
  """One categorical draw per row from logits [N, C] with a single uniform per row (drawn from
  key, or given as u [N, 1] in [0, 1))."""
  p = jax.nn.softmax(logits, axis=-1)
  c = jnp.cumsum(p, axis=-1)
  if u is None:
    u = jax.random.uniform(key, (logits.shape[0], 1), jnp.float32)
  u = u * c[:, -1:]
  idx = jnp.sum(c <= u, axis=-1).astype(jnp.int32)
  # Never land on a zero-probability slot (u at the very top of the CDF, round-off).
  idx = jnp.minimum(idx, jnp.argmax(jnp.where(p > 0, jnp.arange(p.shape[-1]), -1), -1))
  return idx, jnp.take_along_axis(jax.nn.log_softmax(logits, -1), idx[:, None], -1)[:, 0]


def _sample_filtered(scaled, key, top_k, top_p):
  """Top-k/top-p sampling on the CANDIDATES largest logits when they hold the whole kept set for
  every row (exact), else on the bisection filter over the full vocabulary. The nucleus is taken
  over the top-k set's renormalised distribution (see filter_logits)."""
  N, V = scaled.shape
  K = min(CANDIDATES, V)
  vals, idx = jax.lax.top_k(scaled, K)                               # [N, K] descending
  k_eff = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
  in_k = jnp.arange(K)[None] < k_eff
  # Renormalised over the top-k set when it lies within the candidates, else over the whole
  # vocabulary (k = V); a k between K and V takes the full path below.
  lse = jnp.where(k_eff <= K, jax.nn.logsumexp(jnp.where(in_k, vals, -jnp.inf), axis=-1),
                  jax.nn.logsumexp(scaled, axis=-1))[:, None]
  p = jnp.where(in_k, jnp.exp(vals - lse), 0.0)
  cum = jnp.cumsum(p, axis=-1)
  enough = (k_eff <= K) | ((k_eff >= V) & (cum[:, -1] >= top_p))

  def candidates(_):
    keep = in_k & ((cum - p) < top_p)
    j, slp = _inverse_cdf(jnp.where(keep, vals, -jnp.inf), key)
    return jnp.take_along_axis(idx, j[:, None], -1)[:, 0], slp

  def full(_):
    return _inverse_cdf(filter_logits(scaled, top_k, top_p), key)

  return jax.lax.cond(jnp.all(enough), candidates, full, None)


def sample_logits(logits, key, temperature, top_k, top_p):
  """logits [N, V] float32 -> (token [N], logp under the policy [N], logp under the sampler [N]).

  temperature <= 0 is greedy (sampler logp 0). The policy logp is at temperature 1.
  """
  def greedy(_):
    return jnp.argmax(logits, -1).astype(jnp.int32), jnp.zeros(logits.shape[:1], jnp.float32)

  def sample(_):
    scaled = logits / temperature
    need = (top_k > 0) | (top_p < 1.0)
    return jax.lax.cond(need, lambda s: _sample_filtered(s, key, top_k, top_p),
                        lambda s: _inverse_cdf(s, key), scaled)

  tok, slp = jax.lax.cond(temperature <= 0, greedy, sample, None)
  lp = jnp.take_along_axis(logits, tok[:, None], -1)[:, 0] - jax.nn.logsumexp(logits, axis=-1)
  return tok, lp, slp


def sample_rows(logits, keys, temperature, top_k, top_p):
  """Per-row sampling settings (the serving engine's slots): logits [N, V], keys [N] (typed
  PRNG keys, one per row), temperature / top_k / top_p [N] -> (token [N], logp under the policy
  at temperature 1 [N]). Row n's draw depends only on keys[n] and its own logits, so a request
  with a seed gets the same tokens whatever it is batched with. Same semantics as sample_logits
  (temperature <= 0 greedy; top-k, then the nucleus over the renormalised top-k set)."""
  N, V = logits.shape
  greedy = jnp.argmax(logits, -1).astype(jnp.int32)
  scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
  u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)[:, None]
  plain = jax.lax.cond(jnp.any(temperature > 0), lambda _: _inverse_cdf(scaled, None, u)[0],
                       lambda _: greedy, None)      # all greedy: skip the [N, V] softmax
  need = (temperature > 0) & ((top_k > 0) | (top_p < 1.0))
  K = min(CANDIDATES, V)
  k_eff = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)[:, None]
  tp = top_p[:, None]

  def filtered(_):
    vals, idx = jax.lax.top_k(scaled, K)
    in_k = jnp.arange(K)[None] < k_eff
    lse = jnp.where(k_eff <= K, jax.nn.logsumexp(jnp.where(in_k, vals, -jnp.inf), -1, keepdims=True),
                    jax.nn.logsumexp(scaled, -1, keepdims=True))
    p = jnp.where(in_k, jnp.exp(vals - lse), 0.0)
    cum = jnp.cumsum(p, axis=-1)
    enough = (k_eff <= K) | ((k_eff >= V) & (cum[:, -1:] >= tp))

    def candidates(_):
      j, _ = _inverse_cdf(jnp.where(in_k & ((cum - p) < tp), vals, -jnp.inf), None, u)
      return jnp.take_along_axis(idx, j[:, None], -1)[:, 0]

    def full(_):
      return _inverse_cdf(filter_logits(scaled, k_eff, tp), None, u)[0]

    return jax.lax.cond(jnp.all(enough | ~need[:, None]), candidates, full, None)

  filt = jax.lax.cond(jnp.any(need), filtered, lambda _: plain, None)
  tok = jnp.where(temperature > 0, jnp.where(need, filt, plain), greedy)
  lp = jnp.take_along_axis(logits, tok[:, None], -1)[:, 0] - jax.nn.logsumexp(logits, axis=-1)
  return tok, lp


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_size", "num_samples",
                                             "cache_shardings"))
def prefill(graphdef, state, tokens, mask, *, cache_size: int, num_samples: int,
            cache_shardings=None):
  """tokens/mask [B, P] left-padded -> (last logits [B*G, V], cache for B*G rows, prompt_len [B*G]).
  cache_shardings: (k/v, mask) NamedShardings the cache is constrained to (`parallel.cache_shardings`;
  the decode loop keeps the layout it receives), or None to leave it to XLA; on their mesh the
  prompt's activations are constrained as in training (`parallel.activation_mesh`)."""
  from dacl import parallel
  model = nnx.merge(graphdef, state)
  B, P = tokens.shape
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
  cache = init_cache(model.cfg, B, cache_size)
  with parallel.activation_mesh(None if cache_shardings is None else cache_shardings[0].mesh):
    logits, cache = model(tokens, positions, mask, cache, last_only=True)
  rep = lambda x, ax: jnp.repeat(x, num_samples, axis=ax)
  cache = KVCache(tuple(rep(k, 0) for k in cache.k), tuple(rep(v, 0) for v in cache.v),
                  rep(cache.mask, 0), cache.index)
  if cache_shardings is not None:
    kv, m = cache_shardings
    c = jax.lax.with_sharding_constraint
    cache = KVCache(tuple(c(k, kv) for k in cache.k), tuple(c(v, kv) for v in cache.v),
                    c(cache.mask, m), cache.index)
  return rep(logits[:, -1], 0), cache, rep(mask.sum(1).astype(jnp.int32), 0)


def _seq_hits(toks, i, seqs):
  """[N, Q] whether each right-aligned sequence in seqs [Q, W] (-1 = wildcard) ends at step i."""
  W = seqs.shape[1]
  idx = i - W + 1 + jnp.arange(W)
  window = jnp.where(idx[None] >= 0, toks[:, jnp.clip(idx, 0)], -2)      # [N, W]
  match = (window[:, None, :] == seqs[None]) | (seqs[None] < 0)
  return jnp.all(match, -1)


@functools.partial(jax.jit, static_argnames=("graphdef", "buffer", "notify"),
                   donate_argnames=("cache",))
def decode(graphdef, state, cache, logits, prompt_len, key, max_new, temperature, top_k, top_p,
           stop_ids, stop_seqs, marker_seq, ban_id, *, buffer: int, notify: bool = False):
  """One lax.while_loop over at most `max_new` (<= buffer) steps.

  stop_ids [N, S1] (-1 padded); stop_seqs [Q, W] right-aligned token sequences, -1 = wildcard
  on the left (Q may be 0); marker_seq [1, Wm] likewise (all -1 for none); ban_id: a token id
  whose logit is -inf (-1 for none). With notify, rows that emit the marker are reported to the
  host (dacl.cloud.bridge.on_marker_rows) through io_callback on the step they emit it.
  """
  model = nnx.merge(graphdef, state)
  N = logits.shape[0]
  pad = jnp.int32(0)
  has_marker = jnp.any(marker_seq >= 0)

  def cond(c):
    i, done = c[0], c[4]
    return (i < max_new) & ~jnp.all(done)

  def body(c):
    i, toks, lps, slps, done, reason, lengths, cache, logits, key = c
    key, sub = jax.random.split(key)
    logits = jnp.where(jnp.arange(logits.shape[-1])[None] == ban_id, -jnp.inf, logits)
    tok, lp, slp = sample_logits(logits, sub, temperature, top_k, top_p)
    live = ~done
    tok = jnp.where(live, tok, pad)
    toks = toks.at[:, i].set(tok)
    lps = lps.at[:, i].set(jnp.where(live, lp, 0.0))
    slps = slps.at[:, i].set(jnp.where(live, slp, 0.0))
    hit_tok = live & jnp.any(tok[:, None] == stop_ids, axis=-1)
    hit_mark = live & has_marker & _seq_hits(toks, i, marker_seq)[:, 0]
    hit_tok = hit_tok & ~hit_mark
    if stop_seqs.shape[0]:
      hit_seq = live & ~hit_tok & ~hit_mark & jnp.any(_seq_hits(toks, i, stop_seqs), -1)
    else:
      hit_seq = jnp.zeros_like(hit_tok)
    if notify:
      from jax.experimental import io_callback
      from dacl.cloud.bridge import on_marker_rows
      jax.lax.cond(jnp.any(hit_mark),
                   lambda h: io_callback(on_marker_rows, None, h, ordered=False),
                   lambda h: None, hit_mark)
    reason = jnp.where(hit_tok, STOP_TOKEN, jnp.where(hit_seq, STOP_STRING,
                                                      jnp.where(hit_mark, STOP_MARKER, reason)))
    lengths = lengths + live.astype(jnp.int32)
    done = done | hit_tok | hit_seq | hit_mark
    logits, cache = model(tok[:, None], (prompt_len + i)[:, None], live[:, None], cache)
    return i + 1, toks, lps, slps, done, reason, lengths, cache, logits[:, 0], key

  init = (jnp.int32(0), jnp.zeros((N, buffer), jnp.int32), jnp.zeros((N, buffer), jnp.float32),
          jnp.zeros((N, buffer), jnp.float32), jnp.zeros((N,), bool),
          jnp.full((N,), STOP_LENGTH, jnp.int32), jnp.zeros((N,), jnp.int32), cache, logits, key)
  _, toks, lps, slps, _, reason, lengths, cache, _, _ = jax.lax.while_loop(cond, body, init)
  # The cache is returned so its donated buffers alias an output (no second copy).
  return toks, lps, slps, reason, lengths, cache


@functools.partial(jax.jit, static_argnames=("graphdef",))
def next_token_logprobs(graphdef, state, tokens, mask, ids):
  """log p(ids | prompt) at the position after each left-padded prompt: tokens/mask [B, P],
  ids [C] -> [B, C] (one forward, no cache)."""
  model = nnx.merge(graphdef, state)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
  logits, _ = model(tokens, positions, mask, last_only=True)
  return jax.nn.log_softmax(logits[:, -1], axis=-1)[:, ids]


class Sampler:
  """Generates from a Decoder with a tokenizer. Compiles once per (row bucket, prompt bucket,
  buffer bucket, stop-set shape). min_bucket / min_rows: the smallest prompt-length and row
  buckets (raise them when row counts and lengths vary call to call, to compile fewer shapes).

  mesh: rows are split over its ('data', 'fsdp') axes (the row bucket becomes a multiple of
  that size) and the KV cache is laid out by `parallel.cache_shardings`; the parameters keep the
  layout they come with. Outputs are gathered to every process. None: one device's layout."""

  def __init__(self, model, tokenizer, max_cache_len: Optional[int] = None, min_bucket: int = 16,
               min_rows: int = 1, mesh=None):
    self.graphdef, self.state = nnx.split(model)
    self.cfg = model.cfg
    self.tokenizer = tokenizer
    self.max_cache_len = max_cache_len or self.cfg.max_seq_len
    self.min_bucket = min_bucket
    self.mesh = mesh
    self.cache_shardings = None
    if mesh is not None:
      from dacl import parallel
      dp = parallel.data_parallel_size(mesh)
      min_rows = dp * -(-max(1, min_rows) // dp)   # row buckets min_rows * 2^k: multiples of dp
      self.cache_shardings = parallel.cache_shardings(self.cfg.n_kv_heads, mesh)
    self.min_rows = min_rows

  def _put(self, x: np.ndarray):
    """A host array [rows, ...] on the mesh, rows split over ('data', 'fsdp')."""
    if self.mesh is None:
      return jnp.asarray(x)
    from dacl import parallel
    return jax.device_put(x, parallel.batch_sharding(self.mesh, x.ndim))

  @staticmethod
  def _host(x) -> np.ndarray:
    from dacl.parallel import to_host
    return to_host(x)

  def update_state(self, state):
    """Swap in new parameters (same structure) without recompiling."""
    self.state = state

  def encode_prompts(self, prompts: Sequence[Union[str, Sequence[int]]]) -> list[list[int]]:
    out = []
    for p in prompts:
      # Strings: the tokenizer's default BOS, exactly as SFT batches encode prompts.
      ids = list(self.tokenizer.encode(p)) if isinstance(p, str) else [int(t) for t in p]
      if not ids:
        raise ValueError("empty prompt: encode at least one token (e.g. a BOS token)")
      out.append(ids)
    return out

  def _pad(self, ids, P: int):
    """Left-padded [Bp, P] tokens and mask; Bp is the row bucket (power of two >= min_rows)."""
    return _pad_rows(ids, P, next_bucket(len(ids), max(1, self.min_rows)), self.tokenizer.pad_id)

  def score_next(self, prompts, token_ids) -> np.ndarray:
    """log p(t | prompt) for each t in token_ids at the next position after each prompt:
    [len(prompts), len(token_ids)] float32. One batched forward (bucketed like sampling)."""
    ids = self.encode_prompts(prompts)
    longest = max(len(x) for x in ids)
    if longest > self.max_cache_len:
      raise PromptTooLongError(f"prompt of {longest} tokens exceeds the context length "
                               f"{self.max_cache_len}")
    P = max(min(next_bucket(longest, self.min_bucket), self.max_cache_len), longest)
    tokens, mask = self._pad(ids, P)
    out = next_token_logprobs(self.graphdef, self.state, self._put(tokens), self._put(mask),
                              jnp.asarray(list(token_ids), jnp.int32))
    return self._host(out)[:len(ids)]

  def __call__(self, prompts, key, params: SamplingParams = SamplingParams()) -> SampleOutput:
    ids = self.encode_prompts(prompts)
    B, G = len(ids), params.num_samples
    M = next_bucket(params.max_new_tokens, 8)
    longest = max(len(x) for x in ids)
    if longest + params.max_new_tokens > self.max_cache_len:
      raise PromptTooLongError(
          f"prompt of {longest} tokens + max_new_tokens={params.max_new_tokens} exceeds the "
          f"KV cache length {self.max_cache_len}; shorten the prompt or raise max_cache_len")
    P = min(next_bucket(longest, self.min_bucket), self.max_cache_len - M)
    P = max(P, longest)
    tokens, mask = self._pad(ids, P)
    Bp = tokens.shape[0]
    stop_ids = params.stop_token_ids if params.stop_token_ids is not None else self.tokenizer.stop_ids
    stop_arr = np.full((Bp * G, max(1, len(stop_ids))), -1, np.int32)
    stop_arr[:, :len(stop_ids)] = list(stop_ids)
    seqs = [self.tokenizer.encode(s, add_bos=False) for s in params.stop_strings]
    seqs = [s for s in seqs if s]
    W = max([len(s) for s in seqs], default=1)
    stop_seqs = np.full((len(seqs), W), -1, np.int32)
    for q, s in enumerate(seqs):
      stop_seqs[q, W - len(s):] = s
    mk = list(params.marker_ids)
    marker_seq = np.full((1, max(1, len(mk))), -1, np.int32)
    if mk:
      marker_seq[0, marker_seq.shape[1] - len(mk):] = mk
    ban_id = mk[0] if (len(mk) == 1 and params.ban_marker) else -1   # text tags cannot be banned
    logits, cache, plen = prefill(self.graphdef, self.state, self._put(tokens), self._put(mask),
                                  cache_size=P + M, num_samples=G,
                                  cache_shardings=self.cache_shardings)
    toks, lps, slps, reason, lengths, _ = decode(
        self.graphdef, self.state, cache, logits, plen, key, jnp.int32(params.max_new_tokens),
        jnp.float32(params.temperature), jnp.int32(params.top_k), jnp.float32(params.top_p),
        self._put(stop_arr), jnp.asarray(stop_seqs), jnp.asarray(marker_seq), jnp.int32(ban_id),
        buffer=M, notify=bool(params.notify_marker and mk))
    N = B * G
    toks, lps, slps = (self._host(a)[:N, :params.max_new_tokens] for a in (toks, lps, slps))
    reason, lengths = self._host(reason)[:N].copy(), self._host(lengths)[:N].copy()
    texts = []
    for n in range(N):
      L = lengths[n]
      text = self.tokenizer.decode(toks[n, :L])
      # Host re-check: a stop string produced through a non-canonical tokenisation.
      cut, hit = _find_stop(text, params.stop_strings)
      if hit and reason[n] != STOP_STRING:
        L = _shortest_prefix_containing(self.tokenizer, toks[n, :L], text[:cut + len(hit)])
        lengths[n], reason[n] = L, STOP_STRING
        text = self.tokenizer.decode(toks[n, :L])   # decode again only when the row was cut
      texts.append(_strip_stop(text, params.stop_strings))
    mask = np.arange(toks.shape[1])[None] < lengths[:, None]
    return SampleOutput(np.where(mask, toks, self.tokenizer.pad_id), np.where(mask, lps, 0.0),
                        np.where(mask, slps, 0.0), mask, lengths, reason, texts,
                        np.repeat([len(x) for x in ids], G))


def _pad_rows(ids, P: int, Bp: int, pad_id: int):
  tokens = np.full((Bp, P), pad_id, np.int32)
  mask = np.zeros((Bp, P), bool)
  for b, x in enumerate(ids):
    tokens[b, P - len(x):] = x
    mask[b, P - len(x):] = True
  tokens[len(ids):, -1], mask[len(ids):, -1] = pad_id, True   # dummy rows: one token
  return tokens, mask


def _find_stop(text: str, stops) -> tuple[int, Optional[str]]:
  best, hit = len(text), None
  for s in stops:
    j = text.find(s)
    if 0 <= j < best:
      best, hit = j, s
  return best, hit


def _strip_stop(text: str, stops) -> str:
  cut, hit = _find_stop(text, stops)
  return text[:cut] if hit else text


def _shortest_prefix_containing(tokenizer, toks, target: str) -> int:
  for k in range(1, len(toks) + 1):
    if tokenizer.decode(toks[:k]).startswith(target):
      return k
  return len(toks)

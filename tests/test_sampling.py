"""Sampler: cached decode vs recomputation, padding invariance, top-k/top-p frequencies,
stop handling, determinism, prompt-too-long error, no recompiles across buckets."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl import sampling
from dacl.sampling import Sampler, SamplingParams, filter_logits, sample_logits
from dacl.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def tiny():
  cfg = get_preset("tiny", n_layers=2, init_std=0.3)   # large init: peaky, varied predictions
  return create_model(cfg, seed=1), ByteTokenizer()


def _greedy_full_recompute(model, ids, n, width=32):
  """Greedy by full forwards without a cache: one right-padded shape (attention is causal, so
  the padding after position len(ids)-1 cannot change it), compiled once."""
  fwd = jax.jit(lambda t, m: model(t, None, m)[0])
  ids = list(ids)
  out = []
  for _ in range(n):
    toks = np.zeros((1, width), np.int32)
    toks[0, :len(ids)] = ids
    logits = fwd(jnp.asarray(toks), jnp.asarray(np.arange(width)[None] < len(ids)))
    t = int(jnp.argmax(logits[0, len(ids) - 1]))
    out.append(t)
    ids.append(t)
  return out


def test_cached_greedy_equals_full_recomputation(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=128)
  prompt = "12+34="
  out = s([prompt], jax.random.key(0), SamplingParams(max_new_tokens=12, temperature=0,
                                                      stop_token_ids=()))
  ref = _greedy_full_recompute(model, tok.encode(prompt), 12)
  assert out.tokens[0].tolist() == ref
  assert out.lengths[0] == 12 and out.stop_reason[0] == sampling.STOP_LENGTH
  # Policy log-probs are those of the full forward.
  logits, _ = model(jnp.asarray([tok.encode(prompt) + ref[:-1]], jnp.int32))
  lp = jax.nn.log_softmax(logits[0, -12:], -1)[jnp.arange(12), jnp.asarray(ref)]
  np.testing.assert_allclose(out.logprobs[0], np.asarray(lp), atol=2e-5)


def test_padding_invariance(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=128)
  p = SamplingParams(max_new_tokens=10, temperature=0, stop_token_ids=())
  short = "7*8="
  alone = s([short], jax.random.key(0), p)
  batched = s(["a much longer prompt that forces padding: " * 2, short], jax.random.key(0), p)
  assert alone.tokens[0].tolist() == batched.tokens[1].tolist()
  np.testing.assert_allclose(alone.logprobs[0], batched.logprobs[1], atol=2e-5)


def test_top_k_top_p_empirical_frequencies():
  logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]], jnp.float32))
  logits = jnp.repeat(logits, 20000, 0)
  keys = jax.random.key(0)
  for top_k, top_p, expect in [(2, 1.0, [5 / 7, 2 / 7, 0, 0, 0]),
                               (0, 0.8, [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0]),
                               (0, 1.0, [0.5, 0.2, 0.15, 0.1, 0.05])]:
    tok, lp, slp = sample_logits(logits, keys, jnp.float32(1.0), jnp.int32(top_k), jnp.float32(top_p))
    freq = np.bincount(np.asarray(tok), minlength=5) / tok.shape[0]
    np.testing.assert_allclose(freq, expect, atol=0.015)
    # sample_logprobs are under the filtered distribution, logprobs under the policy.
    np.testing.assert_allclose(np.exp(np.asarray(slp)), np.asarray(expect)[np.asarray(tok)], atol=1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(lp)), np.asarray([0.5, 0.2, 0.15, 0.1, 0.05])[np.asarray(tok)], atol=1e-5)


def test_temperature_sharpens():
  logits = jnp.log(jnp.asarray([[0.6, 0.4]], jnp.float32)).repeat(20000, 0)
  tok, _, _ = sample_logits(logits, jax.random.key(1), jnp.float32(0.5), jnp.int32(0), jnp.float32(1.0))
  p0 = 0.36 / (0.36 + 0.16)
  assert abs(float(np.mean(np.asarray(tok) == 0)) - p0) < 0.015


def test_filter_logits_keeps_top1():
  logits = jnp.asarray([[3.0, 1.0, 0.0]])
  out = filter_logits(logits, jnp.int32(0), jnp.float32(0.01))
  assert np.isfinite(np.asarray(out)).tolist() == [[True, False, False]]


def test_stop_token_and_stop_string(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=128)
  base = s(["5+5="], jax.random.key(0), SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=()))
  gen = base.tokens[0].tolist()
  # Stop token: use the 4th generated token as the stop id.
  stop_id = gen[3]
  first = gen.index(stop_id)
  out = s(["5+5="], jax.random.key(0), SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=(stop_id,)))
  assert out.lengths[0] == first + 1 and out.stop_reason[0] == sampling.STOP_TOKEN
  assert out.mask[0].sum() == first + 1 and (out.tokens[0, first + 1:] == tok.pad_id).all()
  # Stop string: generated text piece from tokens 5..6.
  text = tok.decode(gen)
  stop_str = tok.decode(gen[5:7])
  cut = text.find(stop_str)
  out = s(["5+5="], jax.random.key(0), SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=(),
                                                      stop_strings=(stop_str,)))
  assert out.stop_reason[0] == sampling.STOP_STRING
  assert out.texts[0] == text[:cut]
  # Per-row: a batch where only one row hits its stop keeps the other running.
  out2 = s(["5+5=", "9-1="], jax.random.key(0),
           SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=(stop_id,)))
  assert out2.lengths[0] == first + 1
  assert out2.tokens[0, :first + 1].tolist() == gen[:first + 1]


def test_determinism_given_key(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=128)
  p = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, num_samples=4)
  a = s(["1+1=", "2+2="], jax.random.key(7), p)
  b = s(["1+1=", "2+2="], jax.random.key(7), p)
  c = s(["1+1=", "2+2="], jax.random.key(8), p)
  assert a.tokens.shape[0] == 8
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  assert len(set(map(tuple, a.tokens[:4].tolist()))) > 1   # G samples differ


def test_prompt_longer_than_cache(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=64)
  with pytest.raises(sampling.PromptTooLongError, match="exceeds the KV cache length 64"):
    s(["x" * 60], jax.random.key(0), SamplingParams(max_new_tokens=8))
  with pytest.raises(ValueError, match="empty prompt"):
    s([[]], jax.random.key(0), SamplingParams(max_new_tokens=8))   # no tokens at all
  assert s([""], jax.random.key(0), SamplingParams(max_new_tokens=2)).prompt_lengths[0] == 1  # <bos>


def test_buckets_prevent_recompiles(tiny):
  model, tok = tiny
  s = Sampler(model, tok, max_cache_len=256)
  p = SamplingParams(max_new_tokens=8, temperature=0.8)
  s(["ab"], jax.random.key(0), p)
  before = (sampling.prefill._cache_size(), sampling.decode._cache_size())
  for i, prompt in enumerate(["abc", "abcdefgh", "a" * 15, "z"]):  # all in the 16-token bucket
    s([prompt], jax.random.key(i), SamplingParams(max_new_tokens=5 + i, temperature=0.5 + i / 10))
  assert (sampling.prefill._cache_size(), sampling.decode._cache_size()) == before
  s(["a" * 20], jax.random.key(0), p)   # next bucket compiles once more
  assert sampling.prefill._cache_size() == before[0] + 1


def test_candidate_path_and_full_sort_path_agree():
  """top-k/top-p on the 256 largest logits equals the full-sort filter (and the fallback runs
  when 256 candidates do not cover the nucleus)."""
  V = 4096
  for scale, top_p in ((4.0, 0.9), (0.01, 0.95)):    # peaked: candidates suffice; flat: fallback
    logits = scale * jax.random.normal(jax.random.key(3), (8, V))
    n_keep = int(np.isfinite(np.asarray(filter_logits(logits, jnp.int32(0), jnp.float32(top_p)))).sum(-1).max())
    assert (n_keep < sampling.CANDIDATES) == (scale > 1)
    keys = jax.random.split(jax.random.key(0), 4000)
    toks = jax.vmap(lambda k: sample_logits(logits, k, jnp.float32(1.0), jnp.int32(0), jnp.float32(top_p))[0])(keys)
    allowed = np.isfinite(np.asarray(filter_logits(logits, jnp.int32(0), jnp.float32(top_p))))
    assert allowed[np.arange(8)[None], np.asarray(toks)].all()
    if scale > 1:   # frequencies follow the renormalised nucleus
      p = np.asarray(jax.nn.softmax(filter_logits(logits, jnp.int32(0), jnp.float32(top_p)), -1))
      emp = np.bincount(np.asarray(toks)[:, 0], minlength=V) / 4000
      assert np.abs(emp - p[0]).max() < 0.03


def _full_sort_reference(logits, top_k, top_p):
  """Independent numpy reference (Hugging Face / vLLM semantics): sort descending, keep the top
  k, renormalise, keep the smallest prefix whose mass reaches top_p. -> kept mask, probabilities."""
  logits = np.asarray(logits, np.float64)
  N, V = logits.shape
  keep = np.zeros((N, V), bool)
  probs = np.zeros((N, V))
  for n in range(N):
    order = np.argsort(-logits[n], kind="stable")
    k = V if top_k <= 0 else min(top_k, V)
    top = order[:k]
    p = np.exp(logits[n, top] - logits[n, top].max())
    p /= p.sum()
    before = np.cumsum(p) - p               # mass strictly before each token
    kept = top[before < top_p]
    keep[n, kept] = True
    q = np.exp(logits[n, kept] - logits[n, kept].max())
    probs[n, kept] = q / q.sum()
  return keep, probs


@pytest.mark.parametrize("scale", [4.0, 0.01])      # peaked (candidate path) and flat (fallback)
def test_top_k_top_p_match_a_full_sort_reference(scale):
  V, N = 1024, 6
  logits = scale * jax.random.normal(jax.random.key(5), (N, V))
  draw = jax.jit(jax.vmap(lambda k, tk, tp: sample_logits(logits, k, jnp.float32(1.0), tk, tp),
                          in_axes=(0, None, None)))   # k and p traced: one compile for all
  for top_k, top_p in ((0, 0.9), (5, 1.0), (40, 0.9), (3, 0.5), (600, 0.95), (0, 0.3), (1, 0.99)):
    ref_keep, ref_p = _full_sort_reference(logits, top_k, top_p)
    got = np.isfinite(np.asarray(filter_logits(logits, jnp.int32(top_k), jnp.float32(top_p))))
    np.testing.assert_array_equal(got, ref_keep, err_msg=f"filter_logits k={top_k} p={top_p}")
    keys = jax.random.split(jax.random.key(top_k * 7 + int(top_p * 100)), 3000)
    toks, _, slp = draw(keys, jnp.int32(top_k), jnp.float32(top_p))
    toks, slp = np.asarray(toks), np.asarray(slp)
    rows = np.arange(N)[None]
    assert ref_keep[rows, toks].all(), (top_k, top_p)       # never outside the kept set
    np.testing.assert_allclose(np.exp(slp), ref_p[rows, toks], rtol=1e-4, atol=1e-6)
    emp = np.bincount(toks[:, 0], minlength=V) / len(toks)
    assert np.abs(emp - ref_p[0]).max() < 0.035, (top_k, top_p)

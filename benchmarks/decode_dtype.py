"""Decoding in f32, bf16 and weight-only int8 (`--config.model.decode_dtype`): quality and speed.

The embedded SmolLM2-135M-Instruct (real weights), in one run:
- quality against f32: greedy agreement on the GSM8K fixture's questions (32 new tokens; the
  share of rows whose tokens are identical, and the mean share of tokens before the first
  difference), and the held-out mean log-likelihood per token of question + reference answer;
- speed: new tokens/s of greedy decoding at each batch (prompt 64, 64 new tokens, best of reps).
  python benchmarks/decode_dtype.py [--batches 1,16,32] [--reps 3] [--rows 32]
"""
import argparse
import json
import os
import time

from common import emit, machine, peak_rss_mb

import jax
import jax.numpy as jnp
import numpy as np

from dacl.models.quant import DECODE_DTYPES, for_decode
from dacl.sampling import Sampler, SamplingParams

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dacl",
                       "data", "fixtures", "gsm8k_mini.jsonl")


def mean_loglik(model, tok, texts, seq=192):
  """Mean log p per token of each text (teacher-forced, BOS first), over all texts' tokens."""
  ids = [tok.encode(t)[:seq + 1] for t in texts]
  T = max(len(x) for x in ids) - 1
  tokens = np.full((len(ids), T), tok.pad_id, np.int32)
  targets = np.zeros_like(tokens)
  mask = np.zeros((len(ids), T), bool)
  for i, x in enumerate(ids):
    tokens[i, :len(x) - 1], targets[i, :len(x) - 1], mask[i, :len(x) - 1] = x[:-1], x[1:], True
  logits, _ = jax.jit(lambda m, t, k: m(t, None, k))(model, tokens, mask)
  lp = jax.nn.log_softmax(logits, -1)
  tl = np.asarray(jnp.take_along_axis(lp, targets[..., None], -1)[..., 0])
  return float(tl[mask].mean())


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="1,16,32")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--rows", type=int, default=32)
  a = ap.parse_args()
  from dacl.api import load
  base, tok = load("smollm2-135m-instruct")
  rows = [json.loads(l) for l in open(FIXTURE)][:a.rows]
  questions = [r["question"] for r in rows]
  texts = [r["question"] + "\n" + r["answer"] for r in rows]
  emit(machine=machine(), model="smollm2-135m-instruct", rows=len(rows))
  greedy = SamplingParams(max_new_tokens=32, temperature=0.0, stop_token_ids=())
  ref_tokens = None
  for dt in DECODE_DTYPES:
    model = for_decode(base, dt)
    wbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.tree.map(
        lambda v: v, __import__("flax").nnx.state(model))))
    s = Sampler(model, tok, max_cache_len=256)
    out = np.asarray(s(questions, jax.random.key(0), greedy).tokens)
    if ref_tokens is None:
      ref_tokens = out
    same = out == ref_tokens
    first_diff = np.where(same.all(1), same.shape[1], np.argmin(same, axis=1))
    row = {"decode_dtype": dt, "weight_mb": round(wbytes / 2**20, 1),
           "greedy_rows_identical": float(same.all(1).mean()),
           "greedy_tokens_before_first_difference": float(first_diff.mean() / same.shape[1]),
           "heldout_loglik_per_token": round(mean_loglik(model, tok, texts), 4)}
    # speed: random prompts of 64 tokens, 64 new tokens, no stop
    p = SamplingParams(max_new_tokens=64, temperature=0.0, stop_token_ids=())
    for b in [int(x) for x in a.batches.split(",")]:
      prompts = np.random.default_rng(b).integers(100, 40000, (b, 64)).tolist()
      s(prompts, jax.random.key(0), p)   # compile
      best = float("inf")
      for r in range(a.reps):
        t = time.perf_counter()
        s(prompts, jax.random.key(r), p)
        best = min(best, time.perf_counter() - t)
      row[f"tokens_per_s_b{b}"] = round(b * 64 / best, 1)
    row["peak_rss_mb"] = round(peak_rss_mb())
    emit(**row)


if __name__ == "__main__":
  main()

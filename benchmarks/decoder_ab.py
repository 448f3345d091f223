"""Interleaved A/B of the decoder against another checkout's `dacl/models/decoder.py`, in one
process: on a shared, noisy machine, back-to-back calls of the two compiled programs see the
same load, where two separate runs do not (they differed by 20-40 % here).

SmolLM2-135M shape, random f32 weights (the same seed for both, so the logits must agree).
Three kinds of work, each jitted once per decoder and timed call by call in alternating order:
- `step`: one decode step of B rows over an S-slot cache, the cache donated (the sampler's loop);
- `slots`: the serving engine's step, a per-row write index and attention over kv_len slots;
- `prefill`: a B x P prompt into a fresh S-slot cache, last-position logits.

  git worktree add /tmp/dacl_ref <commit>
  python benchmarks/decoder_ab.py --ref /tmp/dacl_ref/dacl/models/decoder.py [--reps 15]

Prints one JSON line per shape: median and min ms of each, the ratio ref / current (> 1: the
current decoder is faster) and the largest logit difference.
"""
import argparse
import time
import types

from common import emit, machine

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import dacl.models.decoder as current
from dacl.models.config import get_preset

STEP = ((1, 128), (16, 128), (32, 128), (1, 512), (16, 512), (32, 512))
SLOTS = ((16, 1024, 64), (16, 1024, 256), (16, 1024, 1024))
PREFILL = ((1, 64, 128), (32, 64, 128), (1, 512, 1024), (8, 256, 512))


def load_ref(path: str):
  mod = types.ModuleType("ref_decoder")
  with open(path) as f:
    exec(compile(f.read(), path, "exec"), mod.__dict__)
  return mod


def step_fn(D, cfg, B, S, kv_len=None, per_row=False):
  gd, st = nnx.split(D.create_model(cfg, seed=0))
  step = jax.jit(lambda st, tok, pos, c: nnx.merge(gd, st)(tok, pos, jnp.ones_like(tok, bool), c,
                                                           kv_len=kv_len), donate_argnums=3)
  at = np.arange(B, dtype=np.int32) % ((kv_len or S) - 8) if per_row else np.int32(S - 32)
  index = lambda: jnp.asarray(at)       # a fresh array each call: the cache (index too) is donated
  box = {"c": D.init_cache(cfg, B, S)._replace(mask=jnp.ones((B, S), bool), index=index())}
  tok, pos = jnp.ones((B, 1), jnp.int32), jnp.broadcast_to(jnp.asarray(at), (B,))[:, None]

  def call():
    logits, c = step(st, tok, pos, box["c"])
    box["c"] = c._replace(index=index())
    return logits
  return call


def prefill_fn(D, cfg, B, P, S):
  gd, st = nnx.split(D.create_model(cfg, seed=0))
  f = jax.jit(lambda st, tok: nnx.merge(gd, st)(tok, None, None, D.init_cache(cfg, B, S),
                                                last_only=True)[0])
  tok = jnp.ones((B, P), jnp.int32)
  return lambda: f(st, tok)


def compare(kind, shape, ref_call, cur_call, reps):
  diff = float(np.abs(np.asarray(ref_call()) - np.asarray(cur_call())).max())   # also compiles
  t = {"ref": [], "cur": []}
  for r in range(reps):
    order = (("ref", ref_call), ("cur", cur_call)) if r % 2 == 0 else (("cur", cur_call), ("ref", ref_call))
    for name, f in order:
      t0 = time.perf_counter()
      jax.block_until_ready(f())
      t[name].append(1e3 * (time.perf_counter() - t0))
  med = {k: float(np.median(v)) for k, v in t.items()}
  emit(bench="decoder_ab", kind=kind, **shape, ref_ms_median=round(med["ref"], 1),
       cur_ms_median=round(med["cur"], 1), ref_ms_min=round(min(t["ref"]), 1),
       cur_ms_min=round(min(t["cur"]), 1), ratio_median=round(med["ref"] / med["cur"], 2),
       max_logit_diff=diff, machine=machine())


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--ref", required=True, help="path of the reference decoder.py")
  ap.add_argument("--reps", type=int, default=15)
  ap.add_argument("--only", default="step,slots,prefill")
  a = ap.parse_args()
  ref = load_ref(a.ref)
  cfg = get_preset("smollm2_135m", max_seq_len=1024)
  only = a.only.split(",")
  if "step" in only:
    for B, S in STEP:
      compare("step", dict(batch=B, slots=S), step_fn(ref, cfg, B, S), step_fn(current, cfg, B, S),
              a.reps)
  if "slots" in only:
    for B, S, kv in SLOTS:
      compare("slots", dict(batch=B, slots=S, kv_len=kv), step_fn(ref, cfg, B, S, kv, True),
              step_fn(current, cfg, B, S, kv, True), a.reps)
  if "prefill" in only:
    for B, P, S in PREFILL:
      compare("prefill", dict(batch=B, prompt=P, slots=S), prefill_fn(ref, cfg, B, P, S),
              prefill_fn(current, cfg, B, P, S), max(4, a.reps // 3))


if __name__ == "__main__":
  main()

"""Where a decode step's time goes, op by op: a jax.profiler trace of the sampler (SmolLM2-135M
shape, random weights, greedy, prompt 64, 64 new tokens), its XLA CPU thunks grouped by fusion
kind (the name without its number), as a share of the traced op time and ms per step.

  python benchmarks/profile_decode.py [--batch 32] [--trace_dir /tmp/dacl_decode_trace]

Kinds on XLA CPU: `ynn_fusion` are the matmuls (XNNPACK) with the elementwise ops fused into
them; `transpose_copy_fusion` are layout changes (here: the KV cache read into the attention
einsum's layout); `iota_reduce_fusion` is the argmax over the vocabulary.
"""
import argparse
import collections
import glob
import gzip
import json
import re
import time

from common import emit, machine

import jax
import numpy as np

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.sampling import Sampler, SamplingParams
from dacl.tokenizers import ByteTokenizer


class _IdTok(ByteTokenizer):
  pad_id, stop_ids = 0, ()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--new", type=int, default=64)
  ap.add_argument("--trace_dir", default="/tmp/dacl_decode_trace")
  a = ap.parse_args()
  model = create_model(get_preset("smollm2_135m", max_seq_len=256), seed=0)
  s = Sampler(model, _IdTok(), max_cache_len=256)
  prompts = np.random.default_rng(0).integers(100, 40000, (a.batch, 64)).tolist()
  p = SamplingParams(max_new_tokens=a.new, temperature=0.0, stop_token_ids=())
  s(prompts, jax.random.key(0), p)   # compile
  t = time.perf_counter()
  s(prompts, jax.random.key(1), p)
  wall = time.perf_counter() - t
  with jax.profiler.trace(a.trace_dir):
    s(prompts, jax.random.key(2), p)
  path = sorted(glob.glob(a.trace_dir + "/**/*.trace.json.gz", recursive=True))[-1]
  kinds, count = collections.Counter(), collections.Counter()
  for e in json.load(gzip.open(path))["traceEvents"]:
    name = e.get("name", "")
    if e.get("ph") != "X" or "dur" not in e or "Execute" in name or \
        name.startswith(("ThunkExecutor", "$", "Pjit", "while", "call")):
      continue
    k = re.sub(r"[.\d]+$", "", name)
    kinds[k] += e["dur"]
    count[k] += 1
  total = sum(kinds.values())
  emit(machine=machine(), batch=a.batch, new_tokens=a.new, wall_ms_per_step=round(wall / a.new * 1e3, 2),
       traced_op_ms_per_step=round(total / 1e3 / a.new, 2), trace=path)
  for k, v in kinds.most_common(12):
    emit(kind=k, share=round(v / total, 3), ms_per_step=round(v / 1e3 / a.new, 2),
         per_step=round(count[k] / a.new, 1))


if __name__ == "__main__":
  main()

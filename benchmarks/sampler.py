"""New tokens/s of dacl's jitted sampler vs Hugging Face transformers `generate` (PyTorch, CPU).

Same weights (SmolLM2-135M shape, random), greedy, prompt 64, 64 new tokens, no early stop.
Roofline, measured in the same run: the machine's f32 matmul peak and memory bandwidth; for
prefill and for the mean decode step, the achieved GFLOP/s and GB/s, the bound that applies
(compute or bandwidth) and the fraction of it reached (`prefill_roofline`, `decode_roofline`).
Decode step bytes: every weight once, plus the KV cache read (mean filled length).
  python benchmarks/sampler.py [--batches 1,16,32] [--reps 3] [--no-torch]
"""
import argparse
import time

from common import emit, machine, matmul_params, matmul_peak_gflops, memory_bandwidth_gbs, \
    peak_rss_mb, roofline

import jax
import numpy as np

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.sampling import Sampler, SamplingParams
from dacl.tokenizers import ByteTokenizer


class _IdTok(ByteTokenizer):
  pad_id, stop_ids = 0, ()


def bench_dacl(model, prompts, new, reps):
  s = Sampler(model, _IdTok(), max_cache_len=256)
  p = SamplingParams(max_new_tokens=new, temperature=0.0, stop_token_ids=())
  t = time.perf_counter()
  out = s(prompts, jax.random.key(0), p)
  compile_s = time.perf_counter() - t
  assert (out.lengths == new).all()
  best = float("inf")
  for r in range(reps):
    t = time.perf_counter()
    s(prompts, jax.random.key(r), p)
    best = min(best, time.perf_counter() - t)
  # Prefill alone (same jitted function the sampler calls), to split prefill from decode.
  from dacl.sampling import prefill
  ids = jax.numpy.asarray(np.asarray(prompts, np.int32))
  msk = jax.numpy.ones(ids.shape, bool)
  pre = lambda: jax.block_until_ready(prefill(s.graphdef, s.state, ids, msk,
                                              cache_size=ids.shape[1] + 64, num_samples=1))
  pre()
  t = time.perf_counter()
  pre()
  return best, compile_s, out.tokens, time.perf_counter() - t


def bench_hf(model, prompts, new, reps):
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  from dacl.models.weights import config_to_hf, hf_tensors
  hf = LlamaForCausalLM(LlamaConfig(**config_to_hf(model.cfg, "llama"))).eval()
  sd = {k: torch.from_numpy(v) for k, v in hf_tensors(model).items()}
  hf.load_state_dict(sd, strict=False)
  hf.tie_weights()
  ids = torch.tensor(np.asarray(prompts))
  kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
            eos_token_id=None, attention_mask=torch.ones_like(ids))
  best = float("inf")
  with torch.no_grad():
    out = hf.generate(ids, **kw)   # warm-up
    for _ in range(reps):
      t = time.perf_counter()
      hf.generate(ids, **kw)
      best = min(best, time.perf_counter() - t)
  return best, out[:, ids.shape[1]:].numpy()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="1,16,32")
  ap.add_argument("--prompt", type=int, default=64)
  ap.add_argument("--new", type=int, default=64)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--no-torch", action="store_true")
  a = ap.parse_args()
  cfg = get_preset("smollm2_135m", max_seq_len=256)
  model = create_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  peak, bw = matmul_peak_gflops(), memory_bandwidth_gbs()
  emit(bench="machine", peak_gflops=round(peak, 1), bandwidth_gbs=round(bw, 1), machine=machine())
  n_mm, n_all = matmul_params(cfg), cfg.num_params()
  q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  for b in map(int, a.batches.split(",")):
    prompts = rng.integers(10, cfg.vocab_size, size=(b, a.prompt)).tolist()
    dt, comp, toks, pre_s = bench_dacl(model, prompts, a.new, a.reps)
    d_tps = b * a.new / dt
    step_s = (dt - pre_s) / a.new
    ctx = a.prompt + a.new / 2                       # mean filled cache length while decoding
    attn = lambda n_q, n_k: 2 * 2 * cfg.n_layers * n_q * n_k * q
    pre_flops = 2 * b * a.prompt * (n_mm - cfg.d_model * cfg.vocab_size) + 2 * b * cfg.d_model \
        * cfg.vocab_size + b * attn(a.prompt, a.prompt) / 2
    pre_bytes = 4 * n_all + 4 * b * a.prompt * 2 * cfg.n_layers * kv   # weights + cache written
    dec_flops = 2 * b * n_mm + b * attn(1, ctx)
    dec_bytes = 4 * n_all + 4 * b * ctx * 2 * cfg.n_layers * kv         # weights + cache read
    emit(bench="sampler", impl="dacl", batch=b, prompt=a.prompt, new_tokens=a.new,
         new_tokens_per_s=round(d_tps, 1), seconds=round(dt, 3), prefill_s=round(pre_s, 3),
         decode_ms_per_step=round(1000 * step_s, 1), compile_s=round(comp, 2),
         prefill_roofline=roofline(pre_flops, pre_bytes, pre_s, peak, bw),
         decode_roofline=roofline(dec_flops, dec_bytes, step_s, peak, bw),
         peak_rss_mb=round(peak_rss_mb()), machine=machine())
    if a.no_torch:
      continue
    import torch
    dt_hf, hf_toks = bench_hf(model, prompts, a.new, a.reps)
    agree = float((hf_toks[:, :16] == toks[:, :16]).mean())
    emit(bench="sampler", impl="hf_torch", batch=b, prompt=a.prompt, new_tokens=a.new,
         new_tokens_per_s=round(b * a.new / dt_hf, 1), seconds=round(dt_hf, 3),
         torch_threads=torch.get_num_threads(), first16_token_agreement=round(agree, 3),
         speedup_dacl_over_hf=round(d_tps / (b * a.new / dt_hf), 2))


if __name__ == "__main__":
  main()

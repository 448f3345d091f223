"""SFT train-step throughput (tokens/s) and achieved GFLOP/s vs the measured f32 matmul peak.

SmolLM2-135M shape, batch 8 x 256 tokens, AdamW, f32.
  python benchmarks/train_step.py [--batch 8] [--seq 256] [--steps 5] [--torch] [--loss_chunk N]
      [--remat none|block] [--torch_only]

--loss_chunk N: cross-entropy N positions at a time (never the [B, T, V] f32 logits); --remat:
the decoder's rematerialisation policy (ModelConfig.remat). Peak RSS is per process: compare
settings in separate processes, and torch's with --torch_only (its own process, same shapes).
"""
import argparse
import functools
import time

from common import emit, machine, matmul_peak_gflops, memory_bandwidth_gbs, peak_rss_mb, roofline

import jax
import jax.numpy as jnp
import numpy as np

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.train.sft import init_train_state, make_optimizer, make_train_step, sft_loss


def train_flops_per_token(cfg, seq: int) -> float:
  """6 * matmul params (LM head included, embedding lookup not) + attention scores and mixing."""
  q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  per_layer = cfg.d_model * (2 * q + 2 * kv) + 3 * cfg.d_model * cfg.ffn_dim
  n = cfg.n_layers * per_layer + cfg.d_model * cfg.vocab_size
  attn = 2 * 2 * cfg.n_layers * seq * q      # QK^T and AV, forward, full (unmasked) square
  return 6 * n + 3 * attn


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--torch", action="store_true", help="also time a transformers train step")
  ap.add_argument("--loss_chunk", type=int, default=0, help="chunked cross-entropy (0 = off)")
  ap.add_argument("--remat", default="none", help="none | block")
  ap.add_argument("--torch_only", action="store_true",
                  help="only the transformers step, in this process (for its peak RSS)")
  a = ap.parse_args()
  cfg = get_preset("smollm2_135m", max_seq_len=a.seq, remat=a.remat)
  if a.torch_only:
    return torch_step(cfg, a, np.random.default_rng(0).integers(
        0, cfg.vocab_size, size=(1, a.batch, a.seq + 1)).astype(np.int32))
  tx = make_optimizer(1e-4, 100, 0)
  graphdef, state = init_train_state(create_model(cfg, seed=0), tx, 0)
  step = make_train_step(graphdef, tx, functools.partial(sft_loss, loss_chunk=a.loss_chunk))
  rng = np.random.default_rng(0)
  toks = rng.integers(0, cfg.vocab_size, size=(1, a.batch, a.seq + 1)).astype(np.int32)
  batch = {"tokens": jnp.asarray(toks[..., :-1]), "targets": jnp.asarray(toks[..., 1:]),
           "loss_mask": jnp.ones((1, a.batch, a.seq), bool), "mask": jnp.ones((1, a.batch, a.seq), bool)}
  t = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(a.steps):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  dt = float(np.median(times))
  tokens = a.batch * a.seq
  gflops = train_flops_per_token(cfg, a.seq) * tokens / dt / 1e9
  peak, bw = matmul_peak_gflops(), memory_bandwidth_gbs()
  # bytes, a floor: parameters read 3x (forward, two backward matmuls), gradients written,
  # AdamW reads/writes parameters and two moments; activations not counted
  nbytes = 4 * cfg.num_params() * (3 + 1 + 6)
  emit(bench="train_step", impl="dacl", batch=a.batch, seq=a.seq, loss_chunk=a.loss_chunk,
       remat=a.remat,
       tokens_per_s=round(tokens / dt, 1),
       step_s=round(dt, 3), gflops=round(gflops, 1), peak_gflops=round(peak, 1),
       fraction_of_peak=round(gflops / peak, 3), compile_s=round(compile_s, 1),
       bandwidth_gbs=round(bw, 1),
       roofline=roofline(train_flops_per_token(cfg, a.seq) * tokens, nbytes, dt, peak, bw),
       peak_rss_mb=round(peak_rss_mb()), machine=machine())
  if a.torch:
    torch_step(cfg, a, toks, peak)


def torch_step(cfg, a, toks, peak=None):
  """The same step in transformers (LlamaForCausalLM, AdamW, f32): tokens/s and, when it runs in
  its own process (--torch_only), its peak RSS."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  from dacl.models.weights import config_to_hf
  hf = LlamaForCausalLM(LlamaConfig(**config_to_hf(cfg, "llama")))
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)
  ids = torch.from_numpy(toks[0].astype(np.int64))
  ts = []
  for i in range(3):
    t = time.perf_counter()
    loss = hf(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    ts.append(time.perf_counter() - t)
  dt_hf = float(np.median(ts[1:]))
  tokens = a.batch * a.seq
  peak = peak or matmul_peak_gflops()
  emit(bench="train_step", impl="hf_torch", batch=a.batch, seq=a.seq,
       tokens_per_s=round(tokens / dt_hf, 1), step_s=round(dt_hf, 3),
       gflops=round(train_flops_per_token(cfg, a.seq) * tokens / dt_hf / 1e9, 1),
       peak_gflops=round(peak, 1),
       peak_rss_mb=round(peak_rss_mb()) if a.torch_only else None)


if __name__ == "__main__":
  main()

"""Memory per device for SFT / GRPO under FSDP (and LoRA), estimated, and checked against XLA.

  python benchmarks/memory_per_device.py                      # the estimate table (JSON lines)
  python benchmarks/memory_per_device.py --check qwen2p5_0p5b --devices 8 --batch 8 --seq 256
  python benchmarks/memory_per_device.py --check qwen2p5_0p5b --lora 16 --base-dtype int8
  python benchmarks/memory_per_device.py --check qwen2p5_0p5b --remat block

The estimate (`estimate`) counts, per device with the parameters FSDP-sharded over `devices`:
parameters, gradients and the two AdamW moments (full fine-tuning), or a frozen base plus
low-rank adapters with their gradients and moments (LoRA); the KV cache of a GRPO rollout
(B prompts x G samples, rows split over the devices); and the activations the backward pass
keeps (rows split over the devices; the f32 logits separately, since chunked cross-entropy
removes them): every block's activations, or with `remat="block"` (ModelConfig.remat) each
block's input plus one block's activations, recomputed in the backward pass. --check compiles the real SFT step on emulated CPU devices
(`jax.jit(...).lower(...).compile().memory_analysis()`, nothing allocated) and prints XLA's
per-device argument and temporary sizes next to the estimate of the same setting.
"""
import argparse
import os
import sys

GB = 1e9


def lora_params(cfg, rank: int) -> int:
  """Adapter parameters for rank r on q, k, v, o, gate, up and down of every layer."""
  d, f = cfg.d_model, cfg.ffn_dim
  q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, f), (d, f), (f, d)]
  return cfg.n_layers * rank * sum(a + b for a, b in shapes)


def estimate(cfg, devices: int, *, batch: int, seq: int, micro: int = 0, rollout_len: int = 0,
             param_bytes: int = 4, act_bytes: int = 4, lora_rank: int = 0,
             base_bytes: float = 2.0, chunked_logits: bool = False, remat: str = "none") -> dict:
  """GB per device. batch: sequences per step (GRPO: prompts x group), all decoded at once into
  the KV cache; micro: sequences per gradient micro-batch (rl.grad_accum splits the update; 0 =
  the whole batch at once); seq: tokens per row; rollout_len: the KV cache's slots per rollout
  row (0 = no rollout cache)."""
  n = cfg.num_params()
  if lora_rank:
    a = lora_params(cfg, lora_rank)
    weights = n * base_bytes / devices
    train = a * 4 * 4 / devices          # adapters f32: value, gradient, two moments
  else:
    weights = n * param_bytes / devices
    train = n * (param_bytes + 4 + 4) / devices   # gradient (param dtype) + f32 moments
  d, f, L = cfg.d_model, cfg.ffn_dim, cfg.n_layers
  q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
  rows = (micro or batch) / devices
  # saved for the backward pass per token and layer: the block input and two norm outputs (3d),
  # q, k, v, the attention output and o-proj input (2q + 2kv + d), gate, up, their product and
  # the SiLU (4f); plus the attention probabilities (heads x seq, f32)
  per_tok_layer = (4 * d + 2 * q + 2 * kv + 4 * f) * act_bytes + cfg.n_heads * seq * 4
  acts = rows * seq * L * per_tok_layer
  if remat == "block":     # the block inputs, and one block's activations while it is recomputed
    acts = rows * seq * (L * d * act_bytes + per_tok_layer)
  logits = 0.0 if chunked_logits else rows * seq * cfg.vocab_size * 4 * 2   # logits + softmax grad
  kv_cache = (batch / devices) * rollout_len * L * 2 * kv * act_bytes if rollout_len else 0.0
  out = {"weights": weights, "grads_and_optimizer": train, "activations": acts,
         "logits": logits, "kv_cache": kv_cache}
  out = {k: round(v / GB, 3) for k, v in out.items()}
  out["total"] = round(sum(out.values()), 3)
  return out


SETTINGS = [
    # (label, preset, devices, kwargs)
    ("Qwen2.5-1.5B full SFT, TPU v5e-16 (16 GB HBM), bf16, 16 x 1024, chunked CE", "qwen2p5_1p5b", 16,
     dict(batch=16, seq=1024, param_bytes=2, act_bytes=2, chunked_logits=True)),
    ("Qwen2.5-1.5B GRPO, v5e-16, bf16, 32 prompts x 8 samples, 1024 tokens, micro-batch 32", "qwen2p5_1p5b", 16,
     dict(batch=256, micro=32, seq=1024, rollout_len=1024, param_bytes=2, act_bytes=2,
          chunked_logits=True)),
    ("Qwen2.5-7B full SFT, v5e-16, bf16, 16 x 1024, chunked CE", "qwen2p5_7b", 16,
     dict(batch=16, seq=1024, param_bytes=2, act_bytes=2, chunked_logits=True)),
    ("Qwen2.5-7B LoRA r16 GRPO, v5e-16, bf16 base, 32 x 8 x 1024, micro-batch 16", "qwen2p5_7b", 16,
     dict(batch=256, micro=16, seq=1024, rollout_len=1024, lora_rank=16, base_bytes=2,
          act_bytes=2, chunked_logits=True)),
    ("Qwen2.5-7B full SFT, 8 x H100 (80 GB), bf16, 16 x 2048, chunked CE", "qwen2p5_7b", 8,
     dict(batch=16, seq=2048, param_bytes=2, act_bytes=2, chunked_logits=True)),
    ("Qwen2.5-7B GRPO, 8 x H100, bf16, 32 x 8 x 1024, micro-batch 16", "qwen2p5_7b", 8,
     dict(batch=256, micro=16, seq=1024, rollout_len=1024, param_bytes=2, act_bytes=2,
          chunked_logits=True)),
    ("Qwen2.5-7B LoRA r16 GRPO, 8 x H100, int8 base, 32 x 8 x 1024, micro-batch 16", "qwen2p5_7b", 8,
     dict(batch=256, micro=16, seq=1024, rollout_len=1024, lora_rank=16, base_bytes=1.0,
          act_bytes=2, chunked_logits=True)),
    ("Qwen2.5-7B full SFT, 8 x H100, bf16, 16 x 2048, chunked CE, remat=block", "qwen2p5_7b", 8,
     dict(batch=16, seq=2048, param_bytes=2, act_bytes=2, chunked_logits=True, remat="block")),
    ("Qwen2.5-7B full SFT, v5e-16, bf16, 16 x 1024, chunked CE, remat=block", "qwen2p5_7b", 16,
     dict(batch=16, seq=1024, param_bytes=2, act_bytes=2, chunked_logits=True, remat="block")),
]


def check(preset: str, devices: int, batch: int, seq: int, lora_rank: int = 0,
          base_dtype: str = "float32", remat: str = "none") -> dict:
  """XLA's memory analysis of the compiled SFT step (f32) on `devices` emulated CPU devices,
  FSDP over all of them; lora_rank > 0: adapters on all seven projections, the frozen base in
  base_dtype."""
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from dacl import parallel
  from dacl.models.config import get_preset
  from dacl.models.decoder import create_model
  from dacl.models.lora import add_lora
  from dacl.train.sft import init_train_state, make_optimizer, make_train_step
  cfg = get_preset(preset, max_seq_len=seq, remat=remat)
  tx = make_optimizer(1e-5, 10)

  def model():
    m = create_model(cfg, seed=0)
    return add_lora(m, lora_rank, base_dtype=base_dtype) if lora_rank else m

  def init():
    return init_train_state(model(), tx, 0)[1]
  graphdef = nnx.split(nnx.eval_shape(model), nnx.Param)[0]
  abstract = jax.eval_shape(init)
  mesh = parallel.make_mesh((1, devices, 1))
  sh = parallel.state_shardings(abstract, mesh)
  # the shardings tree is a prefix (one NamedSharding per nnx.Variable): map inside each Variable
  state = jax.tree.map(lambda s, sub: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub), sh, abstract)
  bs = parallel.batch_sharding(mesh, 3, 1)
  spec = lambda dt: jax.ShapeDtypeStruct((1, batch, seq), dt, sharding=bs)
  b = {"tokens": spec(jnp.int32), "targets": spec(jnp.int32), "loss_mask": spec(jnp.bool_),
       "mask": spec(jnp.bool_)}
  step = make_train_step(graphdef, tx, state_shardings=sh)
  m = step.lower(state, b).compile().memory_analysis()
  return {"argument_gb": round(m.argument_size_in_bytes / GB, 3),
          "output_gb": round(m.output_size_in_bytes / GB, 3),
          "temp_gb": round(m.temp_size_in_bytes / GB, 3),
          "alias_gb": round(m.alias_size_in_bytes / GB, 3)}


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from common import emit
  from dacl.models.config import get_preset
  ap = argparse.ArgumentParser()
  ap.add_argument("--check", default="", help="a preset to compile on emulated devices")
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=256)
  ap.add_argument("--lora", type=int, default=0, help="--check with LoRA adapters of this rank")
  ap.add_argument("--base-dtype", default="float32", help="--check --lora: the frozen base's dtype")
  ap.add_argument("--remat", default="none", help="--check: the decoder's remat policy (none | block)")
  a = ap.parse_args()
  if a.check:
    est = estimate(get_preset(a.check), a.devices, batch=a.batch, seq=a.seq, lora_rank=a.lora,
                   base_bytes={"float32": 4, "bfloat16": 2, "int8": 1}[a.base_dtype],
                   remat=a.remat)
    cfg = get_preset(a.check)
    # FSDP gathers each weight whole for its matmul and makes its whole gradient before the
    # reduce-scatter: the estimate above counts neither; this is their size if every layer's
    # copies are alive at once (an upper bound for a schedule that frees them per layer)
    gathered = round(cfg.num_params() * (4 + 4) / GB, 3)
    emit(check=a.check, devices=a.devices, batch=a.batch, seq=a.seq, lora=a.lora, remat=a.remat,
         base_dtype=a.base_dtype if a.lora else "float32",
         estimate_gb=est,
         fsdp_gathered_weights_and_grads_gb=gathered,
         xla=check(a.check, a.devices, a.batch, a.seq, a.lora, a.base_dtype, a.remat))
  else:
    for label, preset, n, kw in SETTINGS:
      emit(setting=label, preset=preset, params_b=round(get_preset(preset).num_params() / 1e9, 3),
           devices=n, gb_per_device=estimate(get_preset(preset), n, **kw))

"""Model configuration and named presets for the Llama-family decoder.

The config says *what* the network is (shapes, RoPE, norms); sharding rules live in
`dacl/parallel.py` and never here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "f32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


def as_dtype(name_or_dtype: Any):
  if isinstance(name_or_dtype, str):
    if name_or_dtype not in _DTYPES:
      raise ValueError(f"unknown dtype {name_or_dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name_or_dtype]
  return name_or_dtype


REMAT_POLICIES = ("none", "block")   # ModelConfig.remat
# the matmul weights a LoRA adapter can attach to (names of dacl.models.decoder.Block's weights)
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and options of a Llama / Qwen2 / Qwen3 style decoder."""
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  ffn_dim: int
  rope_theta: float = 10000.0
  # Llama-3 style scaling: {"rope_type": "llama3", "factor", "low_freq_factor",
  # "high_freq_factor", "original_max_position_embeddings"}; None for plain RoPE.
  rope_scaling: Optional[tuple] = None  # stored as a sorted tuple of items (hashable)
  norm_eps: float = 1e-6
  qkv_bias: bool = False       # Qwen2
  qk_norm: bool = False        # Qwen3
  tie_embeddings: bool = True
  param_dtype: str = "float32"
  dtype: str = "float32"       # compute dtype; logits are always float32
  max_seq_len: int = 2048
  init_std: float = 0.02
  # "int8": weight-only int8 matmul weights and embedding, one f32 scale per output channel
  # (per vocabulary row for the embedding / LM head); made by dacl.models.quant.for_decode.
  weight_quant: str = ""
  # LoRA adapters (dacl.models.lora.add_lora): each target matmul W gets A [in, r] and B [r, out]
  # (nnx.LoRAParam) and computes x @ W + (x @ A) @ B * lora_alpha / lora_rank. 0 = none.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple = ()
  # Training memory (no KV cache): "none" keeps every block's activations for the backward pass;
  # "block" keeps only each block's input and recomputes the block in the backward pass (about
  # one extra forward). Decoding is unaffected.
  remat: str = "none"

  def __post_init__(self):
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    as_dtype(self.param_dtype), as_dtype(self.dtype)
    if self.weight_quant not in ("", "int8"):
      raise ValueError(f"weight_quant must be '' or 'int8', got {self.weight_quant!r}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
    if self.lora_rank < 0 or bad or (self.lora_rank and not self.lora_targets):
      raise ValueError(f"LoRA: rank must be >= 0 and targets a non-empty subset of "
                       f"{LORA_TARGETS} (got rank {self.lora_rank}, targets {self.lora_targets})")
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))

  @property
  def rope_scaling_dict(self) -> Optional[dict]:
    return dict(self.rope_scaling) if self.rope_scaling else None

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def num_params(self) -> int:
    d, f, l = self.d_model, self.ffn_dim, self.n_layers
    q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
    if self.qkv_bias:
      per_layer += q + 2 * kv
    if self.qk_norm:
      per_layer += 2 * self.head_dim
    emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return l * per_layer + emb + d


# Byte tokenizer vocabulary: 256 bytes + specials (see dacl/tokenizers.py). Rounded up to 272.
TINY_VOCAB = 272

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=TINY_VOCAB, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                        head_dim=32, ffn_dim=384, rope_theta=10000.0, norm_eps=1e-6,
                        tie_embeddings=True, max_seq_len=512),
    # Co-PLMs participants: different depths, widths, heads, qkv bias / q-k norm (vocab_size is
    # set from each participant's tokenizer).
    "micro": ModelConfig(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         head_dim=16, ffn_dim=192, tie_embeddings=True, max_seq_len=512),
    "micro_qwen2": ModelConfig(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4,
                               n_kv_heads=4, head_dim=16, ffn_dim=160, qkv_bias=True,
                               rope_theta=1000000.0, tie_embeddings=True, max_seq_len=512),
    "micro_qwen3": ModelConfig(vocab_size=TINY_VOCAB, d_model=64, n_layers=3, n_heads=4,
                               n_kv_heads=2, head_dim=16, ffn_dim=128, qk_norm=True,
                               rope_theta=1000000.0, tie_embeddings=True, max_seq_len=512),
    # the Co-PLMs proxy: smaller than every edge model
    "nano": ModelConfig(vocab_size=TINY_VOCAB, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                        head_dim=16, ffn_dim=96, tie_embeddings=True, max_seq_len=512),
    "tiny_qwen2": ModelConfig(vocab_size=TINY_VOCAB, d_model=128, n_layers=3, n_heads=4,
                              n_kv_heads=4, head_dim=32, ffn_dim=320, qkv_bias=True,
                              rope_theta=1000000.0, tie_embeddings=True, max_seq_len=512),
    "tiny_qwen3": ModelConfig(vocab_size=TINY_VOCAB, d_model=96, n_layers=4, n_heads=4,
                              n_kv_heads=2, head_dim=24, ffn_dim=256, qk_norm=True,
                              rope_theta=1000000.0, tie_embeddings=True, max_seq_len=512),
    "small": ModelConfig(vocab_size=TINY_VOCAB, d_model=192, n_layers=6, n_heads=6, n_kv_heads=2,
                         head_dim=32, ffn_dim=512, tie_embeddings=True, max_seq_len=512),
    "smollm2_135m": ModelConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
                                head_dim=64, ffn_dim=1536, rope_theta=100000.0, norm_eps=1e-5,
                                tie_embeddings=True, max_seq_len=8192),
    "qwen2p5_0p5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2,
                                head_dim=64, ffn_dim=4864, rope_theta=1000000.0, norm_eps=1e-6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    "qwen2p5_1p5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2,
                                head_dim=128, ffn_dim=8960, rope_theta=1000000.0, norm_eps=1e-6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    "qwen2p5_7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
                              head_dim=128, ffn_dim=18944, rope_theta=1000000.0, norm_eps=1e-6,
                              qkv_bias=True, tie_embeddings=False, max_seq_len=32768),
    "qwen3_0p6b": ModelConfig(vocab_size=151936, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8,
                              head_dim=128, ffn_dim=3072, rope_theta=1000000.0, norm_eps=1e-6,
                              qk_norm=True, tie_embeddings=True, max_seq_len=40960),
    "llama3p2_1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                               head_dim=64, ffn_dim=8192, rope_theta=500000.0, norm_eps=1e-5,
                               rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192},
                               tie_embeddings=True, max_seq_len=131072),
}


def get_preset(name: str, **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]

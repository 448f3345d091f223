"""LoRA: low-rank adapters on a frozen base (`--config.lora.rank=R`; F4).

  model = add_lora(model, rank=8, alpha=16, targets=("wq", "wv"), base_dtype="int8")
  graphdef, state = init_train_state(model, tx, seed)   # state.params: the adapters only
  merged = merge_lora(model)                            # plain f32 Decoder, e.g. to export

Each target matmul weight W [in, out] gets A [in, r] ~ N(0, 1/in) and B [r, out] = 0 as
`nnx.LoRAParam` variables, and the decoder computes x @ W + (x @ A) @ B * alpha / r
(`dacl.models.decoder._matmul`), so a fresh adapter leaves the model exactly as it was. The
train state (`dacl.train.sft.init_train_state`) puts only the LoRAParams in the optimizer and
the checkpoints; the base travels beside them as `TrainState.frozen`. The sampler runs the
adapted model as it is: no merge per step. The frozen base can be f32, bf16 or weight-only int8
(`dacl.models.quant`): QLoRA-style training, with the adapters kept in f32.
"""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl.models.config import LORA_TARGETS
from dacl.models.decoder import model_from_values

BASE_DTYPES = ("float32", "bfloat16", "int8")


def _flat(model) -> dict:
  return {path: v[...] for path, v in nnx.to_flat_state(nnx.state(model))}


def add_lora(model, rank: int, alpha: float = 16.0, targets=LORA_TARGETS, seed: int = 0,
             base_dtype: str = "float32"):
  """`model` with LoRA adapters of `rank` on `targets` and its base in `base_dtype`."""
  from dacl.models.quant import _SCALE_AXIS, quantize_int8
  cfg = model.cfg
  if cfg.lora_rank:
    raise ValueError("the model already has LoRA adapters")
  if base_dtype not in BASE_DTYPES:
    raise ValueError(f"lora.base_dtype must be one of {BASE_DTYPES}, got {base_dtype!r}")
  if rank <= 0:
    raise ValueError(f"lora.rank must be > 0, got {rank}")
  if cfg.weight_quant:
    raise ValueError("add LoRA to the float model; lora.base_dtype='int8' quantises its base")
  new_cfg = cfg.replace(lora_rank=int(rank), lora_alpha=float(alpha),
                        lora_targets=tuple(str(t) for t in targets))
  values = {}
  for path, w in _flat(model).items():
    name = path[-1]
    if base_dtype == "int8" and name in _SCALE_AXIS:
      values[path], values[path[:-1] + (name + "_scale",)] = quantize_int8(w, _SCALE_AXIS[name])
    elif base_dtype == "bfloat16" and jnp.issubdtype(w.dtype, jnp.floating):
      values[path] = w.astype(jnp.bfloat16)
    else:
      values[path] = w
  if base_dtype == "int8":
    new_cfg = new_cfg.replace(weight_quant="int8")
  # the adapters' initial values: the decoder's own initialiser, run abstractly per layer
  from dacl.models.decoder import create_model
  fresh = nnx.eval_shape(lambda: create_model(new_cfg, seed))
  key = jax.random.key(seed)
  for path, var in nnx.to_flat_state(nnx.state(fresh)):
    name = path[-1]
    if isinstance(var, nnx.LoRAParam):
      if name.endswith("_lora_b"):
        values[path] = jnp.zeros(var.shape, jnp.float32)
      else:
        k = jax.random.fold_in(key, zlib.crc32("/".join(map(str, path)).encode()) % (2 ** 31))
        values[path] = jax.random.normal(k, var.shape, jnp.float32) / np.sqrt(var.shape[0])
  return model_from_values(new_cfg, values, "LoRA model")


def merge_lora(model):
  """A plain float32 Decoder equal to `model`: W + A @ B * alpha / r for every adapter, an int8
  base dequantised first. Used for export (`save_hf_dir`) and parity checks."""
  cfg = model.cfg
  if not cfg.lora_rank and not cfg.weight_quant:
    return model
  vals = _flat(model)
  scale = cfg.lora_alpha / cfg.lora_rank if cfg.lora_rank else 0.0
  out = {}
  for path, w in vals.items():
    name = path[-1]
    if name.endswith(("_lora_a", "_lora_b", "_scale")):
      continue
    w = w.astype(jnp.float32)
    if cfg.weight_quant == "int8" and path[:-1] + (name + "_scale",) in vals:
      from dacl.models.quant import _SCALE_AXIS
      s = vals[path[:-1] + (name + "_scale",)]
      shape = [1] * w.ndim
      shape[_SCALE_AXIS[name]] = -1
      w = w * s.reshape(shape)
    a = vals.get(path[:-1] + (name + "_lora_a",))
    if a is not None:
      w = w + (a @ vals[path[:-1] + (name + "_lora_b",)]) * scale
    out[path] = w
  return model_from_values(cfg.replace(lora_rank=0, lora_targets=(), weight_quant="",
                                       param_dtype="float32"), out, "merged model")


def from_config(model, lora_cfg, seed: int = 0):
  """Apply `config.lora` (rank 0 or absent: the model unchanged)."""
  if lora_cfg is None or not int(lora_cfg.get("rank", 0)):
    return model
  return add_lora(model, int(lora_cfg.rank), float(lora_cfg.alpha), tuple(lora_cfg.targets),
                  seed, str(lora_cfg.base_dtype))


def count(model) -> dict:
  """{"adapter": n, "base": n} parameter counts."""
  n = {"adapter": 0, "base": 0}
  for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    n["adapter" if isinstance(v, nnx.LoRAParam) else "base"] += int(np.prod(v.shape))
  return n

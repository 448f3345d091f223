"""Lower-precision copies of a decoder for decoding (`--config.model.decode_dtype`).

  "float32"  the model as trained
  "bfloat16" every parameter and the compute dtype in bf16 (softmax and logits stay f32)
  "int8"     weight-only int8: every matmul weight and the embedding / LM head as int8 with one
             f32 scale per output channel (per vocabulary row for the embedding), symmetric,
             round-to-nearest; norms and biases keep their dtype, activations the compute dtype

Decoding reads every weight once per step, so at small batch its time is the weights' bytes over
the memory bandwidth: bf16 halves them and int8 quarters them. Training never uses these copies
(its gradients need the f32 weights); the serving engines, `dacl eval` and `dacl.api.generate`
do when asked. Quality against f32: benchmarks/decode_dtype.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

DECODE_DTYPES = ("float32", "bfloat16", "int8")

# parameter name -> the axis its int8 scales run along (the output channel)
_SCALE_AXIS = {"wq": 1, "wk": 1, "wv": 1, "wo": 1, "w_gate": 1, "w_up": 1, "w_down": 1,
               "lm_head": 1, "embed": 0}


def quantize_int8(w: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """Symmetric per-channel int8: w [..] -> (q int8 like w, scale f32 [w.shape[axis]]), with
  w ≈ q * scale broadcast along `axis`. An all-zero channel gets scale 1."""
  w = w.astype(jnp.float32)
  reduce = tuple(i for i in range(w.ndim) if i != axis)
  amax = jnp.max(jnp.abs(w), axis=reduce)
  scale = jnp.where(amax > 0, amax / 127.0, 1.0)
  shape = [1] * w.ndim
  shape[axis] = -1
  q = jnp.clip(jnp.round(w / scale.reshape(shape)), -127, 127).astype(jnp.int8)
  return q, scale


def for_decode(model, decode_dtype: str):
  """A Decoder equal to `model` in the requested precision (the same object for float32)."""
  from dacl.models.decoder import model_from_values
  decode_dtype = decode_dtype or "float32"
  if decode_dtype not in DECODE_DTYPES:
    raise ValueError(f"model.decode_dtype must be one of {DECODE_DTYPES}, got {decode_dtype!r}")
  cfg = model.cfg
  if decode_dtype == "float32":
    return model
  if cfg.lora_rank:   # a LoRA model decodes in lower precision as its merged weights
    from dacl.models.lora import merge_lora
    if cfg.weight_quant:
      raise ValueError("a LoRA model on an int8 base decodes as it is: use decode_dtype float32")
    model = merge_lora(model)
    cfg = model.cfg
  if cfg.weight_quant:
    raise ValueError("the model is already quantized")
  src = dict(nnx.to_flat_state(nnx.state(model)))
  if decode_dtype == "bfloat16":
    new_cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16")
    values = {path: v[...].astype(jnp.bfloat16) if jnp.issubdtype(v[...].dtype, jnp.floating)
              else v[...] for path, v in src.items()}
  else:
    new_cfg = cfg.replace(weight_quant="int8")
    values = {}
    for path, v in src.items():
      name = path[-1]
      if name in _SCALE_AXIS:
        q, scale = quantize_int8(v[...], _SCALE_AXIS[name])
        values[path] = q
        values[path[:-1] + (name + "_scale",)] = scale
      else:
        values[path] = v[...]
  return model_from_values(new_cfg, values, f"{decode_dtype} copy")

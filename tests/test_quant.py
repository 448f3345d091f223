"""Lower-precision decoding copies (dacl/models/quant.py): int8 per-channel quantisation and the
bf16 / int8 decoders against the f32 model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.models.quant import for_decode, quantize_int8


def test_quantize_int8_per_channel():
  w = jax.random.normal(jax.random.key(0), (16, 8)) * jnp.arange(1, 9)   # columns of rising scale
  q, scale = quantize_int8(w, axis=1)
  assert q.dtype == jnp.int8 and scale.shape == (8,)
  assert int(jnp.max(jnp.abs(q))) == 127                       # each channel uses the full range
  err = jnp.abs(q * scale[None] - w)
  assert bool(jnp.all(err <= scale[None] / 2 + 1e-6))          # round to nearest
  q0, s0 = quantize_int8(jnp.zeros((4, 3)), axis=0)             # an all-zero channel
  assert bool(jnp.all(q0 == 0)) and bool(jnp.all(s0 == 1.0))


@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen2"])
def test_decode_copies_match_f32(preset):
  m = create_model(get_preset(preset), seed=0)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 200)
  ref, _ = m(tokens)
  assert for_decode(m, "float32") is m
  for dt, tol, dtypes in (("bfloat16", 0.02, {"bfloat16"}), ("int8", 0.03, {"int8", "float32"})):
    q = for_decode(m, dt)
    out, _ = q(tokens)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    assert float(jnp.max(jnp.abs(out - ref))) < tol, dt
    assert {str(x.dtype) for x in jax.tree.leaves(nnx.state(q))} == dtypes
    assert float((out.argmax(-1) == ref.argmax(-1)).mean()) >= 0.9
  q8 = for_decode(m, "int8")
  assert q8.layers[0].wq[...].dtype == jnp.int8 and q8.layers[0].wq_scale[...].shape == (128,)
  assert q8.embed_scale[...].shape == (272,)                  # one scale per vocabulary row
  w_bytes = lambda mod: sum(x.nbytes for x in jax.tree.leaves(nnx.state(mod)))
  assert w_bytes(q8) < 0.3 * w_bytes(m)


def test_decode_dtype_errors():
  m = create_model(get_preset("nano"), seed=0)
  with pytest.raises(ValueError, match="decode_dtype"):
    for_decode(m, "int4")
  with pytest.raises(ValueError, match="already quantized"):
    for_decode(for_decode(m, "int8"), "int8")

"""Model details: dtypes, presets, RoPE scaling, attention masking, sharding on 8 emulated devices."""
import os
import subprocess
import sys

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from dacl.models.config import PRESETS, get_preset
from dacl.models.decoder import abstract_model, create_model, init_cache, rope_inv_freq


def test_bf16_params_and_compute_close_to_f32():
  cfg = get_preset("tiny", n_layers=2)
  m32 = create_model(cfg, seed=0)
  m16 = create_model(cfg.replace(param_dtype="bfloat16", dtype="bfloat16"), seed=0)
  assert m16.layers[0].wq[...].dtype == jnp.bfloat16
  toks = jnp.asarray([[5, 6, 7, 8, 9]], jnp.int32)
  a, b = m32(toks)[0], m16(toks)[0]
  assert b.dtype == jnp.float32   # logits are always float32
  assert float(jnp.max(jnp.abs(a - b))) < 0.05 * float(jnp.max(jnp.abs(a)))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_abstractly_with_expected_sizes(name):
  cfg = PRESETS[name]
  m = abstract_model(cfg)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(m)))
  assert n == cfg.num_params()
  expected = {"smollm2_135m": 134.5e6, "qwen2p5_0p5b": 494e6, "qwen2p5_1p5b": 1.54e9,
              "qwen3_0p6b": 596e6, "llama3p2_1b": 1.236e9}
  if name in expected:
    assert abs(n - expected[name]) / expected[name] < 0.01, (name, n)


def test_llama3_rope_scaling_changes_only_low_frequencies():
  base = get_preset("llama3p2_1b")
  plain = rope_inv_freq(base.replace(rope_scaling=None))
  scaled = rope_inv_freq(base)
  assert jnp.allclose(scaled[:8], plain[:8])                     # high frequencies unchanged
  assert jnp.allclose(scaled[-4:], plain[-4:] / 32.0, rtol=1e-5)   # lowest divided by factor


def test_padding_tokens_do_not_change_real_logits():
  m = create_model(get_preset("tiny", n_layers=2, init_std=0.2), seed=0)
  toks = jnp.asarray([[9, 10, 11, 12]], jnp.int32)
  ref = m(toks)[0]
  padded = jnp.asarray([[0, 0, 9, 10, 11, 12]], jnp.int32)
  mask = jnp.asarray([[0, 0, 1, 1, 1, 1]], bool)
  pos = jnp.asarray([[0, 0, 0, 1, 2, 3]], jnp.int32)
  got = m(padded, pos, mask)[0][:, 2:]
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
  # chunked prefill through the cache equals one pass
  c = init_cache(m.cfg, 1, 16)
  l1, c = m(toks[:, :2], None, None, c)
  l2, c = m(toks[:, 2:], jnp.asarray([[2, 3]]), None, c)
  np.testing.assert_allclose(np.asarray(jnp.concatenate([l1, l2], 1)), np.asarray(ref), atol=1e-5)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 0.02)])
def test_token_by_token_through_the_cache_equals_one_pass(dtype, atol):
  """The cached attention (keys [B,K,D,S], values [B,K,S,D]; product-sums at one row, dots
  otherwise) against the uncached forward: one row and three rows, a shared write index and a
  per-row one (the serving engine's, with attention over the first kv_len slots)."""
  m = create_model(get_preset("tiny", n_layers=2, init_std=0.3, dtype=dtype), seed=0)
  toks = jnp.asarray(np.random.default_rng(0).integers(3, 200, (3, 6)), jnp.int32)
  step = jax.jit(lambda t, p, c, kv_len=None: m(t, p, None, c, kv_len=kv_len),
                 static_argnames="kv_len")
  for rows in (1, 3):
    ref = np.asarray(m(toks[:rows])[0], np.float32)
    for per_row in (False, True):
      c = init_cache(m.cfg, rows, 16)
      if per_row:
        c = c._replace(index=jnp.zeros((rows,), jnp.int32))
      got = []
      for i in range(6):
        lg, c = step(toks[:rows, i:i + 1], jnp.full((rows, 1), i, jnp.int32), c,
                     kv_len=8 if per_row else None)
        got.append(np.asarray(lg, np.float32))
      np.testing.assert_allclose(np.concatenate(got, 1), ref, atol=atol * max(1.0, np.abs(ref).max()),
                                 err_msg=f"{rows} rows, per-row index {per_row}")


SHARD_SCRIPT = r"""
import os, sys, json
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from dacl import parallel
from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.train.sft import init_train_state, make_optimizer, make_train_step
shape = tuple(json.loads(sys.argv[1]))
mesh = parallel.make_mesh(shape)
cfg = get_preset("tiny", n_layers=2)
tx = make_optimizer(1e-3, 10, 0)
gd, st = init_train_state(create_model(cfg, seed=0), tx, 0)
psh = parallel.param_shardings(st.params, mesh)
st = st._replace(params=jax.device_put(st.params, psh))
step = make_train_step(gd, tx)
rng = np.random.default_rng(0)
t = rng.integers(16, 272, size=(1, 8, 17)).astype(np.int32)
b = parallel.shard_batch({"tokens": t[..., :-1], "targets": t[..., 1:],
                          "loss_mask": np.ones((1, 8, 16), bool), "mask": np.ones((1, 8, 16), bool)},
                         mesh, batch_axis=1)
for _ in range(2):
  st, m = step(st, b)
print(json.dumps({"loss": float(m["loss"]), "devices": jax.device_count(),
                  "wq_spec": str(st.params["layers"][0]["wq"][...].sharding.spec)}))
"""


@pytest.mark.parametrize("shape", [[8, 1, 1], [2, 2, 2]])
def test_train_step_on_8_emulated_devices_matches_1(shape):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  def run(n, sh):
    e = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    r = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, str(sh)], capture_output=True,
                       text=True, env=e)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])
  one = run(1, [1, 1, 1])
  many = run(8, shape)
  assert many["devices"] == 8
  assert abs(one["loss"] - many["loss"]) < 1e-4
  if shape == [2, 2, 2]:
    assert "fsdp" in many["wq_spec"] and "tensor" in many["wq_spec"]

"""dacl logits equal torch transformers' within 1e-4 (f32) on a left-padded batch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from dacl.models import weights  # noqa: E402

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6)


def _build(kind):
  torch.manual_seed(0)
  if kind == "llama":
    cfg = transformers.LlamaConfig(**COMMON, tie_word_embeddings=False, rope_theta=5e5,
                                   rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 16})
    return transformers.LlamaForCausalLM(cfg)
  if kind == "qwen2":
    cfg = transformers.Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1e6)
    m = transformers.Qwen2ForCausalLM(cfg)
  else:
    cfg = transformers.Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=False, rope_theta=1e6)
    m = transformers.Qwen3ForCausalLM(cfg)
  # Random (non-zero, non-unit) biases and norms so they are really tested.
  with torch.no_grad():
    for n, p in m.named_parameters():
      if n.endswith("bias") or "norm" in n:
        p.add_(0.1 * torch.randn_like(p))
  return m


def _padded_batch():
  rng = np.random.default_rng(0)
  toks = rng.integers(3, 96, size=(3, 11)).astype(np.int64)
  mask = np.ones_like(toks)
  mask[1, :4] = 0   # left padding
  mask[2, :9] = 0
  toks[mask == 0] = 0
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  return toks, mask, pos


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_logits_match_transformers(kind, tmp_path):
  hf = _build(kind).eval()
  hf.save_pretrained(tmp_path, safe_serialization=True)
  model, cfg = weights.load_hf_dir(str(tmp_path))
  assert cfg.qkv_bias == (kind == "qwen2") and cfg.qk_norm == (kind == "qwen3")
  toks, mask, pos = _padded_batch()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks), attention_mask=torch.tensor(mask),
             position_ids=torch.tensor(pos)).logits.numpy()
  got, _ = model(jnp.asarray(toks, jnp.int32), jnp.asarray(pos, jnp.int32), jnp.asarray(mask, bool))
  got = np.asarray(got)
  assert got.dtype == np.float32
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], ref[valid], atol=1e-4, rtol=1e-4)


def test_save_roundtrip_loads_in_transformers(tmp_path):
  """dacl -> safetensors -> transformers gives the same logits (sharded writer path too)."""
  from dacl.models.config import get_preset
  from dacl.models.decoder import create_model
  m = create_model(get_preset("tiny", n_layers=2, qkv_bias=True), seed=3)
  weights.save_hf_dir(m, str(tmp_path), model_type="qwen2", max_shard_bytes=200_000)
  assert (tmp_path / "model.safetensors.index.json").exists()
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  toks = np.arange(1, 17, dtype=np.int64)[None]
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks)).logits.numpy()
  got = np.asarray(m(jnp.asarray(toks, jnp.int32))[0])
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
  m2, _ = weights.load_hf_dir(str(tmp_path))
  np.testing.assert_allclose(np.asarray(m2(jnp.asarray(toks, jnp.int32))[0]), got, atol=1e-6)


def test_missing_dir_and_unsupported(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    weights.load_hf_dir(str(tmp_path))
  with pytest.raises(ValueError, match="unsupported model_type"):
    weights.config_from_hf({"model_type": "gpt2"})


def test_rope_parameters_v5_and_legacy_keys():
  base = dict(model_type="llama", vocab_size=10, hidden_size=8, num_hidden_layers=1,
              num_attention_heads=2, intermediate_size=8)
  a = weights.config_from_hf({**base, "rope_parameters": {"rope_theta": 1234.0, "rope_type": "default"}})
  b = weights.config_from_hf({**base, "rope_theta": 1234.0})
  assert a.rope_theta == b.rope_theta == 1234.0 and a.rope_scaling is None

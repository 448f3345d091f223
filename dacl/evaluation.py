"""Accuracy of a model on task examples with the jitted sampler."""
from __future__ import annotations

import jax
import numpy as np

from dacl.sampling import Sampler, SamplingParams


def format_prompt(tokenizer, prompt: str, chat: bool) -> str:
  if chat:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
  return prompt


def evaluate(sampler: Sampler, task, examples, *, batch_size: int = 64, max_new_tokens: int = 16,
             chat: bool = False, add_bos=None, seed: int = 0, temperature: float = 0.0,
             stop_strings: tuple = ()) -> dict:
  """{"accuracy", "n", "mean_length", "samples": [(prompt, completion, gold, score)...]}."""
  tok = sampler.tokenizer
  scores, lengths, samples = [], [], []
  for i in range(0, len(examples), batch_size):
    chunk = examples[i:i + batch_size]
    prompts = [tok.encode(format_prompt(tok, e.prompt, chat), add_bos=False if chat else add_bos)
               for e in chunk]
    out = sampler(prompts, jax.random.key(seed + i), SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, stop_strings=stop_strings))
    for e, text, n in zip(chunk, out.texts, out.lengths):
      s = task.score(text, e)
      scores.append(s)
      lengths.append(int(n))
      samples.append((e.prompt, text, e.answer, s))
  return {"accuracy": float(np.mean(scores)) if scores else 0.0, "n": len(scores),
          "mean_length": float(np.mean(lengths)) if lengths else 0.0, "samples": samples}

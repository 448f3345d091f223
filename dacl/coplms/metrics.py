"""Exact match and Rouge-L of generated answers (Co-PLMs' metrics).

EM: the answer equals the gold after whitespace normalisation (case kept: word_sorting's
order depends on case). Rouge-L: F-measure of the longest common subsequence over words, by
the `rouge-score` package (Google's port of ROUGE-1.5.5: lower-cased, non-alphanumerics split),
so single-word answers score like EM and "-12" vs "12" counts as a match there.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from dacl.sampling import SamplingParams


def normalise(text: str) -> str:
  return " ".join(str(text).split())


def exact_match(pred: str, gold: str) -> float:
  return float(normalise(pred) == normalise(gold))


@functools.lru_cache(maxsize=1)
def _scorer():
  from rouge_score import rouge_scorer
  return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(pred: str, gold: str) -> float:
  return float(_scorer().score(normalise(gold), normalise(pred))["rougeL"].fmeasure)


def answer_of(completion: str) -> str:
  """The answer part of a completion: the first line."""
  return completion.strip().split("\n")[0]


def evaluate_qa(sampler, examples, max_new_tokens: int, batch_size: int = 64, seed: int = 0) -> dict:
  """Greedy answers for examples -> {"em", "rouge_l", "n", "samples"}."""
  em, rl, samples = [], [], []
  for i in range(0, len(examples), batch_size):
    chunk = examples[i:i + batch_size]
    out = sampler([e.prompt for e in chunk], jax.random.key(seed + i),
                  SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    for e, text in zip(chunk, out.texts):
      a = answer_of(text)
      em.append(exact_match(a, e.answer))
      rl.append(rouge_l(a, e.answer))
      if len(samples) < 4:
        samples.append({"prompt": e.prompt, "answer": a, "gold": e.answer})
  return {"em": float(np.mean(em)) if em else 0.0, "rouge_l": float(np.mean(rl)) if rl else 0.0,
          "n": len(em), "samples": samples}

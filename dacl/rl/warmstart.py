"""The DA-GRPO warm start: SFT on the stream tasks' demonstrations before any RL, and its optional
second phase, self-knowledge SFT, which teaches the offload marker where the model is wrong.

Phase 1 (`warm_start`): demonstrations of every warm-start task, a fraction `offload_fraction`
replaced by the offload marker on random problems (so the policy knows the marker exists, but its
marker probability says nothing about the problem).

Phase 2 (`warmstart.marker_on = "failures"` or `"budget"`, `self_knowledge`): `calib_examples`
fresh train-split problems per task, each labelled by phase 1's own greedy answer (marker banned);
SFT for `calib_steps` on the marker where that answer was wrong ("failures"; "budget": the
failures, at most ⌊τ·n⌋ of them, the least probable greedy answers first) and the demonstration
elsewhere. The policy's probability of starting with the marker then estimates its own
probability of failing, the signal a budget needs to spend its offloads well; with "budget" its
marker rate also starts at or below τ on a task it mostly fails. The `router` baseline learns the
same labels in a separate classifier.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np
from flax import nnx

from dacl.continual import stream as sd
from dacl.evaluation import format_prompt
from dacl.metrics import write_json_atomic
from dacl.sampling import Sampler, SamplingParams
from dacl.train.sft import (BatchStream, fit, full_params, init_train_state, make_optimizer,
                            make_sft_batch)

log = logging.getLogger("dacl")
MARKER_ON = ("random", "failures", "budget")
SELF_KNOWLEDGE = ("failures", "budget")   # the marker_on values that run phase 2


def uses_self_knowledge(config) -> bool:
  return str(config.warmstart.get("marker_on", "random")) in SELF_KNOWLEDGE


def marker_text(config, tok) -> str:
  return config.offload.marker


def marker_ids(config, tok) -> tuple:
  return tuple(tok.encode(config.offload.marker, add_bos=False))


def _fit(config, ckpt_dir, model, tok, rows_fn, seed, steps, lr, warmup, desc, phase, mesh):
  """SFT of `model` for `steps` on the Examples `rows_fn()` returns, resumable from ckpt_dir.
  rows_fn is called only if steps remain: a finished phase is restored without rebuilding its
  data (for self-knowledge SFT, without decoding its labels again)."""
  wc = config.warmstart
  tx = make_optimizer(lr, steps, warmup, config.optim.weight_decay, config.optim.b1,
                      config.optim.b2, config.optim.clip_norm, 0.1)
  graphdef, state = init_train_state(model, tx, seed)
  stream = []

  def batch_fn(i):
    if not stream:
      stream.append(BatchStream(rows_fn(), wc.batch_size, seed))
    return make_sft_batch(stream[0].batch(i), tok, wc.seq_len, chat=config.task_chat)

  state = fit(graphdef, state, tx, batch_fn, steps, ckpt_dir, desc=f"{desc} (seed {seed})",
              record={"phase": phase, "seed": seed}, mesh=mesh)
  return graphdef, full_params(state.params, state.frozen)


def warm_start(config, workdir, model, tok, pools, seed, mesh=None, tasks=None):
  """Phase 1 on every task's demonstrations (`pools`: one train-split pool per warm-start task,
  `tasks` the matching Task objects, needed by phase 2). Resumable; returns (graphdef, params)."""
  wc = config.warmstart
  marker_on = str(wc.get("marker_on", "random"))
  if marker_on not in MARKER_ON:
    raise ValueError(f"warmstart.marker_on must be one of {MARKER_ON}, got {marker_on!r}")
  def rows():
    rng = np.random.default_rng(seed)
    pool = []
    for task_pool in pools:
      for e in task_pool:
        if rng.random() < wc.offload_fraction:
          e = dataclasses.replace(e, solution=marker_text(config, tok))
        pool.append(e)
    return pool

  graphdef, params = _fit(config, os.path.join(workdir, "checkpoints"), model, tok, rows, seed,
                          wc.steps, wc.lr, wc.warmup_steps, "warm-start SFT", "warmstart", mesh)
  if marker_on in SELF_KNOWLEDGE:
    graphdef, params = self_knowledge(config, workdir, nnx.merge(graphdef, params), tok, tasks,
                                      seed, mesh)
  return graphdef, params


def label_failures(config, model, tok, task, examples, seed, chunk: int = 256, mesh=None):
  """Per example, [n] each: 1.0 where the model's greedy local answer (marker banned) is wrong,
  and that answer's log-probability under the model (sum over its tokens, the stop included)."""
  sampler = Sampler(model, tok, max_cache_len=config.model.max_seq_len, mesh=mesh)
  sp = SamplingParams(max_new_tokens=config.rl.max_new_tokens, temperature=0.0,
                      marker_ids=marker_ids(config, tok), ban_marker=True)
  texts, logp = [], []
  for i in range(0, len(examples), chunk):
    part = examples[i:i + chunk]
    out = sampler([format_prompt(tok, e.prompt, config.task_chat) for e in part],
                  jax.random.key(seed), sp)
    texts += out.texts
    logp.append(np.where(out.mask, out.logprobs, 0.0).sum(-1))
  failed = 1.0 - np.asarray(task.score_many(texts, examples), np.float64)
  return failed, np.concatenate(logp).astype(np.float64)


def budget_marks(failed: np.ndarray, logp: np.ndarray, tau: float) -> np.ndarray:
  """The failures, at most ⌊τ·n⌋ of them, [n] bool: where more than τ·n failed, those whose
  greedy answer was least probable. Right answers are never marked (filling the budget with the
  least confident right answers was measured and lowered local accuracy; BUILD_NOTES.md F8)."""
  failed = np.asarray(failed) > 0
  idx = np.flatnonzero(failed)
  idx = idx[np.argsort(np.asarray(logp)[idx], kind="stable")][:int(np.floor(tau * len(failed)))]
  marks = np.zeros(len(failed), bool)
  marks[idx] = True
  return marks


def self_knowledge(config, workdir, model, tok, tasks, seed, mesh=None):
  """Phase 2 (module docstring). Resumable: an unfinished phase labels again (greedy,
  deterministic) and continues from its own checkpoints; a finished one is only restored."""
  wc = config.warmstart
  if not tasks:
    raise ValueError(f"warmstart.marker_on={wc.marker_on!r} needs the warm-start tasks to label")
  out = os.path.join(workdir, "self_knowledge")

  def rows():
    rows, labels = [], {}
    for k, t in enumerate(tasks):
      ex = sd.self_knowledge_pool(config, t, k, seed)
      failed, logp = label_failures(config, model, tok, t, ex, seed, mesh=mesh)
      marks = (budget_marks(failed, logp, float(config.budget.tau)) if wc.marker_on == "budget"
               else failed > 0)
      labels[t.name] = {"n": len(ex), "failed": float(failed.mean()),
                        "marked": float(marks.mean()),
                        "failed_among_marked": float(failed[marks].mean()) if marks.any() else 0.0}
      log.info("self-knowledge labels, %s: the warm start fails %.1f%% of %d train-split problems;"
               " the marker on %.1f%%", t.name, 100 * failed.mean(), len(ex), 100 * marks.mean())
      rows += [dataclasses.replace(e, solution=marker_text(config, tok)) if m else e
               for e, m in zip(ex, marks)]
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, "labels.json"), labels)
    return rows

  steps = int(wc.calib_steps)
  return _fit(config, os.path.join(out, "checkpoints"), model, tok, rows, seed, steps,
              float(wc.calib_lr), min(int(wc.warmup_steps), steps // 10), "self-knowledge SFT",
              "self_knowledge", mesh)

"""Collaborative rollouts: G local samples per prompt; rows that end with the offload marker take
the cloud's answer (one cloud call per prompt, started from inside the decode loop).

Shapes: B prompts, G samples each, N = B*G rows, M generated tokens, P prompt bucket.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Sequence

import jax
import numpy as np

from dacl.cloud import bridge as bridge_mod
from dacl.cloud.protocol import CloudRequest
from dacl.sampling import STOP_MARKER, Sampler, SamplingParams


def cloud_key(ex, split: str = "train") -> str:
  h = hashlib.sha1(ex.prompt.encode()).hexdigest()[:16]
  return f"{ex.task}:{split}:{h}"


@dataclasses.dataclass
class Rollout:
  prompt_ids: list             # B lists of prompt token ids
  tokens: np.ndarray           # [N, M] generated tokens (local; the marker included)
  old_logp: np.ndarray         # [N, M] log π_old of those tokens
  mask: np.ndarray             # [N, M] tokens that carry gradient
  reward: np.ndarray           # [N]
  cost: np.ndarray             # [N] 1 where the row went to the cloud (answered or faulted)
  offload: np.ndarray          # [N] the policy (or the route) chose the cloud
  cloud_ok: np.ndarray         # [N] offloaded and answered (a fault leaves it 0)
  local_correct: np.ndarray    # [N] local answer was right (0 for marker rows)
  faults: int
  texts: list


@dataclasses.dataclass
class PendingRollout:
  """A decoded batch whose cloud answers may still be in flight (see `start_rollout`)."""
  examples: list
  keys: list
  prompts: list
  out: object                  # SampleOutput
  offload: np.ndarray
  grad_rows: np.ndarray
  policy_routes: bool


def start_rollout(sampler: Sampler, examples: Sequence, *, group: int, max_new_tokens: int,
                  temperature: float, marker_ids: tuple, route: str, tau: float, bridge, key,
                  rng: np.random.Generator, router=None, format_prompt=lambda p: p,
                  split: str = "train", cloud_max_tokens: int = 256,
                  marker_text: str = "") -> PendingRollout:
  """Decode G samples per prompt; cloud requests start inside the decode loop as rows emit the
  marker (or here, for routes decided outside the policy). Returns without waiting for them."""
  G = group
  keys = [cloud_key(e, split) for e in examples]
  requests = [CloudRequest(k, e.prompt, cloud_max_tokens, task=e.task, gold=e.answer)
              for k, e in zip(keys, examples)]
  policy_routes = route == "policy"
  if bridge is not None:
    bridge.register(requests)
    bridge_mod.activate(bridge, [keys[n // G] for n in range(len(examples) * G)])
  prompts = [format_prompt(e.prompt) for e in examples]
  try:
    out = sampler(prompts, key, SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, num_samples=G,
        marker_ids=tuple(marker_ids), ban_marker=not policy_routes,
        notify_marker=policy_routes and getattr(bridge, "early_start", bridge is not None)))
  finally:
    bridge_mod.activate(None, None)
  N = len(examples) * G
  offload = out.stop_reason == STOP_MARKER if policy_routes else np.zeros(N, bool)
  if policy_routes and marker_text:   # a text tag reached through a non-canonical tokenisation
    offload |= np.array([marker_text in t for t in out.texts])
  grad_rows = np.ones(N, bool)
  if route == "random":
    offload = rng.random(N) < tau
    grad_rows = ~offload            # the policy did not choose these: no gradient
  elif route == "router":
    p_fail = router.predict_proba(sampler, [e.prompt for e in examples], format_prompt)
    offload = np.repeat(p_fail > router.threshold, G)
    grad_rows = ~offload
  elif route == "always":
    offload = np.ones(N, bool)
  if bridge is not None:             # routes decided outside the decode loop start now
    bridge.submit(sorted({keys[n // G] for n in range(N) if offload[n]}))
  prompt_ids = sampler.encode_prompts(prompts)
  return PendingRollout(list(examples), keys, prompt_ids, out, offload, grad_rows, policy_routes)


def score_rows(task_of, texts, examples, method: str = "score_many") -> np.ndarray:
  """Scores of (text, example) rows, each task scoring its rows as one batch (`score_many`, or
  `partial_credit_many` for partial credit)."""
  out = np.zeros(len(texts))
  groups: dict = {}
  for i, ex in enumerate(examples):
    groups.setdefault(id(task_of(ex)), (task_of(ex), []))[1].append(i)
  for task, idx in groups.values():
    out[idx] = getattr(task, method)([texts[i] for i in idx], [examples[i] for i in idx])
  return out


def finish_rollout(p: PendingRollout, task_of, group: int, bridge,
                   partial_credit: float = 0.0) -> Rollout:
  """Wait for the batch's cloud answers and compute rewards. task_of(example) -> Task.

  partial_credit = w > 0: a wrong local answer earns w x its task's partial credit (for
  integers, the share of digit places right) instead of 0; `local_correct` stays exact."""
  G, out, offload = group, p.out, p.offload
  N = len(p.examples) * G
  local_correct = np.zeros(N)
  reward = np.zeros(N)
  rows = [n for n in range(N) if not (p.policy_routes and offload[n])]
  local_correct[rows] = score_rows(task_of, [out.texts[n] for n in rows],
                                   [p.examples[n // G] for n in rows])
  cost = offload.astype(np.float64)   # budget use counts every attempt, faulted or not
  cloud_ok = np.zeros(N, bool)
  faults = 0
  need = sorted({p.keys[n // G] for n in range(N) if offload[n]})
  answers = bridge.collect(need) if (need and bridge is not None) else {}
  if bridge is not None:
    bridge.forget(p.keys)
  reward[:] = local_correct   # also a faulted offload's fallback (none for a marker row)
  wrong = [n for n in rows if local_correct[n] == 0.0] if partial_credit > 0.0 else []
  if wrong:
    reward[wrong] = partial_credit * score_rows(task_of, [out.texts[n] for n in wrong],
                                                [p.examples[n // G] for n in wrong],
                                                "partial_credit_many")
  for n in range(N):
    r = answers.get(p.keys[n // G]) if offload[n] else None
    cloud_ok[n] = r is not None and r.ok
    faults += int(offload[n] and not cloud_ok[n])
  rows = np.flatnonzero(cloud_ok)   # scored as one batch per task (one sandbox child for code)
  reward[rows] = score_rows(task_of, [answers[p.keys[n // G]].text for n in rows],
                            [p.examples[n // G] for n in rows])
  mask = out.mask & p.grad_rows[:, None]
  return Rollout(p.prompts, out.tokens, out.logprobs, mask, reward, cost, offload.astype(bool),
                 cloud_ok, local_correct, faults, out.texts)


def collaborative_rollout(sampler: Sampler, examples: Sequence, task_of, *, group: int,
                          bridge, **kw) -> Rollout:
  """One rollout batch, start to finish (see start_rollout for the arguments)."""
  return finish_rollout(start_rollout(sampler, examples, group=group, bridge=bridge, **kw),
                        task_of, group, bridge)


def training_batch(ro: Rollout, group: int, pad_id: int, prompt_bucket: int) -> dict:
  """Sequences [N, P+M] = left-padded prompt | completion, for the policy forward.

  targets[t] = tokens[t+1]; loss positions are those whose *target* is a gradient-carrying
  completion token; old_logp aligned to the same positions.
  """
  N, M = ro.tokens.shape
  P = prompt_bucket
  L = P + M
  tokens = np.full((N, L), pad_id, np.int32)
  mask = np.zeros((N, L), bool)
  for n in range(N):
    p = ro.prompt_ids[n // group]
    tokens[n, P - len(p):P] = p
    mask[n, P - len(p):P] = True
  tokens[:, P:] = ro.tokens
  mask[:, P:] = ro.mask
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)
  targets = np.concatenate([tokens[:, 1:], np.full((N, 1), pad_id, np.int32)], 1)
  loss_mask = np.zeros((N, L), bool)
  loss_mask[:, P - 1:L - 1] = ro.mask
  old = np.zeros((N, L), np.float32)
  old[:, P - 1:L - 1] = ro.old_logp
  return {"tokens": tokens, "targets": targets, "mask": mask, "positions": positions,
          "loss_mask": loss_mask, "old_logp": old}

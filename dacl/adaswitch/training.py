"""Training data of AdaSwitch's stages: loss masks over trajectory segments, SFT batches, and the
(de)serialisation of collaborative-examination trajectories.

Loss weights by segment role (dacl.adaswitch.steps):
  stage 1, self-practice (gold trajectories): steps and reflections ("No") trained; the question,
    every Observation and the host-written reflection prompt masked.
  stage 3, reflective learning (examination trajectories): every Observation masked; a *wrong*
    local step (flagged by the rule check) masked, its Reflection "Yes" trained; the corrected
    (cloud) step and the local model's right steps trained, with their Reflections "No".
"""
from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np

from dacl.adaswitch import steps as st
from dacl.data.calculator import CalcError
from dacl.adaswitch.engine import encode_segments
from dacl.train.sft import pack_sequences

STAGES = ("self_practice", "reflective")


def segment_weight(role: str, rec, stage: str) -> float:
  if role in ("question", "observation", "reflect_q"):
    return 0.0
  if role == "reflect_a":
    return 1.0
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}")
  # role == "step": the wrong step the local model wrote is never a target
  return 0.0 if (rec is not None and rec.wrong and rec.author == "local") else 1.0


def trajectory_tokens(tok, qtext: str, records: list, stage: str, chat: bool = False):
  """(token ids, per-token loss weight) of one trajectory; weight[i] applies to token i as a
  *target* (it is predicted from tokens[:i])."""
  ids, w = [], []
  for role, text, i in st.segments(qtext, records):
    seg = encode_segments(tok, [(role, text, i)], chat)
    ids += seg
    w += [segment_weight(role, records[i] if i >= 0 else None, stage)] * len(seg)
  return ids, w


def make_trajectory_batch(items, tok, seq_len: int, bucket: int = 64, pack: bool = False,
                          row_multiple: int = 1) -> dict:
  """Right-padded next-token batch from (ids, weights) pairs: tokens/targets/loss_mask/mask
  [B, T] and `truncated` (rows longer than seq_len + 1 that lost their end). T is the longest
  row rounded up to a multiple of `bucket`, at most seq_len: short batches cost less, and there
  are at most seq_len / bucket compiled shapes. pack: the same trajectories packed into rows of
  seq_len (`dacl.train.sft.pack_sequences`; same loss and gradient). Stage 1 at 32 x ~165
  tokens: 6,144 slots a batch instead of 9,257, 0.81 s a step instead of 1.12 (BUILD_NOTES.md).
  row_multiple: rows are padded (no loss, no mask) to a multiple of it, the data-parallel size of
  a mesh; padding rows change neither the loss nor its gradient."""
  if pack:
    return pack_sequences(items, tok.pad_id, seq_len, bucket=seq_len,
                          row_multiple=math.lcm(2, row_multiple))
  B = -(-len(items) // row_multiple) * row_multiple
  longest = max(len(ids) for ids, _ in items) - 1
  seq_len = min(seq_len, -(-longest // bucket) * bucket)
  tokens = np.full((B, seq_len), tok.pad_id, np.int32)
  targets = np.full((B, seq_len), tok.pad_id, np.int32)
  loss_mask = np.zeros((B, seq_len), bool)
  mask = np.zeros((B, seq_len), bool)
  truncated = 0
  for b, (ids, w) in enumerate(items):
    truncated += len(ids) > seq_len + 1
    ids, w = ids[:seq_len + 1], w[:seq_len + 1]
    n = len(ids) - 1
    tokens[b, :n], targets[b, :n] = ids[:-1], ids[1:]
    mask[b, :n] = True
    loss_mask[b, :n] = np.asarray(w[1:], float) > 0
  return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "mask": mask,
          "truncated": truncated}


# ----------------------------------------------------------------------------- (de)serialisation

def record_to_json(r: st.StepRecord) -> dict:
  v = st.value_of(r.value)
  return {"kind": r.step.kind, "thought": r.step.thought, "expr": r.step.expr,
          "register": r.step.register, "text": r.step.text, "error": r.step.error,
          "observation": r.observation, "value": None if v is None else str(v),
          "calc_error": str(r.value) if isinstance(r.value, CalcError) else None,
          "author": r.author, "wrong": r.wrong, "p_yes": r.p_yes, "superseded": r.superseded}


def record_from_json(d: dict) -> st.StepRecord:
  step = st.Step(d["kind"], d["thought"], d["expr"], d["register"], d["text"], d["error"])
  value = Fraction(d["value"]) if d["value"] is not None else CalcError(d["calc_error"] or "")
  return st.StepRecord(step, d["observation"], value, d["author"], d["wrong"], d["p_yes"],
                       d["superseded"])


def write_jsonl(path: str, rows: list) -> None:
  """Through a temporary file and a rename; process 0 only (read back with `read_jsonl_shared`)."""
  import os
  from dacl.metrics import is_primary
  if not is_primary():
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  os.replace(tmp, path)


def read_jsonl_shared(path: str):
  """The rows of a JSON-lines file as process 0 reads it, on every process; None if missing."""
  from dacl.metrics import read_shared
  data = read_shared(path)
  return None if data is None else [json.loads(l) for l in data.decode().splitlines() if l.strip()]

"""Held-out splits that are really held out, and data seeds that really vary the data.

A problem's split is a pure function of its canonical form (the normalised expression or
question text): `split_of(canonical)` hashes it into [0, 1) and cuts at SPLIT_FRACTIONS. So
train / eval / test partition the problem space of *every* task, whatever the seeds, sizes or
prompt formats, and a problem shared by two tasks sits in the same split in both.

Data seeds: reasoning-gym seeds item i with `seed + i`, so run seeds 0 and 1 would draw almost
the same items. `generator_seed(task_id, data_seed)` hashes the seed to a 48-bit number instead;
two run seeds then share no more items than chance.
"""
from __future__ import annotations

import collections
import hashlib
from typing import Iterable

SPLITS = ("train", "eval", "test")
# Global, not per task: a per-task cut could put one problem in train for one task and in eval
# for another.
SPLIT_FRACTIONS = {"train": 0.70, "eval": 0.15, "test": 0.15}
_SALT = "dacl-split-v1"


class TaskError(ValueError):
  """Bad task configuration or data; the CLI prints it as one line."""


class SplitTooSmallError(TaskError):
  """A task's problem space holds fewer problems of a split than were asked for."""


def check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
  return split


def canonical_form(text: str) -> str:
  """Lower-case, whitespace-free form of a problem: "12 + 7" and "12+7" are one problem."""
  return "".join(str(text).lower().split())


def _unit(blob: str) -> float:
  h = hashlib.sha256(blob.encode("utf-8")).digest()
  return int.from_bytes(h[:8], "big") / float(1 << 64)


def split_of(canonical: str) -> str:
  """The split a problem belongs to (stable across runs, machines and Python versions)."""
  u = _unit(f"{_SALT}|{canonical}")
  acc = 0.0
  for s in SPLITS:
    acc += SPLIT_FRACTIONS[s]
    if u < acc:
      return s
  return SPLITS[-1]


def in_calib_part(canonical: str, fraction: float) -> bool:
  """Whether a train-split problem is in the calibration part: the `fraction` of the train split
  (by its own hash, independent of the split cut) that a warm start's demonstrations leave out,
  so a model can be labelled, routed or trained on problems it has not memorised."""
  return fraction > 0 and _unit(f"{_SALT}|calib|{canonical}") < fraction


def derive_seed(*parts) -> int:
  """A 48-bit seed from any parts (run seed, task id, purpose): far apart for different parts."""
  h = hashlib.sha256("|".join(map(str, ("dacl-data",) + parts)).encode("utf-8")).digest()
  return int.from_bytes(h[:6], "big")


def generator_seed(task_id: str, data_seed: int) -> int:
  """The generator's base seed for a task at a data seed. Item streams of different data seeds
  start 2^48-wide apart, so they overlap only by chance (a test checks it)."""
  return derive_seed("generator", task_id, int(data_seed))


def chao1(canonicals: Iterable[str]) -> dict:
  """How many distinct problems a generator has, from draws: the number seen and the Chao1
  estimate of the total (seen + f1²/(2·f2); f1, f2 = problems seen once, twice). A lower bound
  in expectation, tight once most problems were seen twice."""
  counts = collections.Counter(canonicals)
  freq = collections.Counter(counts.values())
  f1, f2, seen = freq.get(1, 0), freq.get(2, 0), len(counts)
  est = seen + (f1 * f1 / (2.0 * f2) if f2 else f1 * (f1 - 1) / 2.0)
  return {"draws": sum(counts.values()), "distinct_seen": seen, "singletons": f1,
          "chao1": int(round(est))}

"""A SIMULATED cloud LLM (no network): answers with the gold answer with probability p (per task),
otherwise with a plausible wrong number; latency from a configurable distribution; per-token
prices. Deterministic per (seed, request key), whatever the call order.

It is a stand-in for experiments and tests, and is labelled "simulated" in every output.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Optional

import numpy as np

from dacl.cloud.protocol import CloudLLM, CloudRequest, CloudResponse, register_cloud
from dacl.data.answers import _NUM_RE as _NUMBER, extract_answer


def _fmt(x: float) -> str:
  return str(int(round(x))) if abs(x - round(x)) < 1e-9 else f"{x:.4g}"


def _slip(text: str, rng) -> str:
  """A plausible wrong version of a step: one number in its action (else anywhere) is off by a
  small amount."""
  import re
  nums = [m for m in re.finditer(r"(?<![R\w])\d+", text)]
  action = text.find("Action:")
  pick = [m for m in nums if m.start() > action] or nums
  if not pick:
    return text
  m = pick[int(rng.integers(len(pick)))]
  v = int(m.group(0)) + int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
  return text[:m.start()] + str(abs(v)) + text[m.end():]


class SimulatedCloud(CloudLLM):
  name = "simulated"

  def __init__(self, p_correct: float = 0.9, p_correct_per_task: Optional[dict] = None,
               p_correct_step: Optional[float] = None,
               latency_ms: float = 0.0, latency_dist: str = "const", latency_jitter: float = 0.0,
               price_prompt_per_1k: float = 0.0005, price_completion_per_1k: float = 0.0015,
               seed: int = 0, fail_rate: float = 0.0):
    if latency_dist not in ("const", "uniform", "lognormal"):
      raise ValueError(f"latency_dist must be const|uniform|lognormal, got {latency_dist!r}")
    self.p = p_correct
    self.p_step = p_correct if p_correct_step is None else p_correct_step
    self.p_task = dict(p_correct_per_task or {})
    self.latency_ms, self.dist, self.jitter = latency_ms, latency_dist, latency_jitter
    self.price_in, self.price_out = price_prompt_per_1k, price_completion_per_1k
    self.seed, self.fail_rate = seed, fail_rate
    self.calls = 0
    self.stats = {}

  @property
  def cache_id(self) -> str:
    return (f"simulated|{self.seed}|{self.p}|{sorted(self.p_task.items())}|{self.fail_rate}|"
            f"{self.price_in}|{self.price_out}" + (f"|step{self.p_step}" if self.p_step != self.p else ""))

  def cache_key(self, req: CloudRequest) -> str:   # the simulated answer depends on the row key
    blob = f"{self.cache_id}|{req.key}|{req.gold}|{req.prompt}"
    return hashlib.sha256(blob.encode()).hexdigest()

  def _rng(self, key: str) -> np.random.Generator:
    h = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))

  def _latency(self, rng) -> float:
    m = self.latency_ms / 1000.0
    if m <= 0:
      return 0.0
    if self.dist == "uniform":
      return float(rng.uniform(m * (1 - self.jitter), m * (1 + self.jitter)))
    if self.dist == "lognormal":
      s = max(self.jitter, 1e-6)
      return float(m * np.exp(rng.normal(-s * s / 2, s)))
    return m

  def answer(self, req: CloudRequest) -> tuple[str, float, Optional[str]]:
    rng = self._rng(req.key)
    lat = self._latency(rng)
    if rng.random() < self.fail_rate:
      return "", lat, "simulated fault"
    if req.kind == "step":   # `gold` is the correct next step's text (AdaSwitch)
      if req.gold is None:
        return "I cannot tell.", lat, None
      return (req.gold if rng.random() < self.p_step else _slip(req.gold, rng)), lat, None
    p = self.p_task.get(req.task, self.p)
    if req.gold is not None and not _NUMBER.fullmatch(req.gold.strip()):
      # a text answer (a formula, a word): right, or one number in it slipped
      right = rng.random() < p
      return f"#### {req.gold if right else _slip(req.gold, rng)}", lat, None
    gold = extract_answer(req.gold) if req.gold is not None else None
    if gold is None:
      return "I cannot tell.", lat, None
    if rng.random() < p:
      val = gold
    else:   # a plausible wrong answer: off by a small amount or a digit slip
      off = int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
      val = gold + off if rng.random() < 0.7 else gold * 10 + off
    return f"The answer is {_fmt(val)}.\n#### {_fmt(val)}", lat, None

  async def _one(self, req: CloudRequest) -> CloudResponse:
    text, lat, err = self.answer(req)
    t = time.perf_counter()
    if lat:
      await asyncio.sleep(lat)
    self.calls += 1
    pt, ct = max(1, len(req.prompt) // 4), max(1, len(text) // 4)
    cost = pt / 1000 * self.price_in + ct / 1000 * self.price_out
    return CloudResponse(req.key, text, pt, ct, time.perf_counter() - t, cost if not err else 0.0,
                         err, backend="simulated")

  async def complete(self, requests):
    return list(await asyncio.gather(*(self._one(r) for r in requests)))


register_cloud("simulated")(lambda **kw: SimulatedCloud(**kw))

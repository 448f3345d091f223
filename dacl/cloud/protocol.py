"""The CloudLLM protocol: an async batch of requests -> responses, and a registry of back-ends.

A back-end never raises for a per-request fault: the response carries `error` and the caller
counts it and falls back to the local answer.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class CloudRequest:
  key: str                     # stable id (cache key): e.g. task/prompt hash
  prompt: str
  max_tokens: int = 256
  temperature: float = 0.0
  task: str = ""
  gold: Optional[str] = None   # used by the *simulated* cloud only; never sent over HTTP
  kind: str = "answer"         # "answer": solve the problem; "step": write the next step only
  system: Optional[str] = None  # a system prompt for this request (default: the back-end's)
  stop: tuple = ()              # stop strings for this request (default: the back-end's)


@dataclasses.dataclass(frozen=True)
class CloudResponse:
  key: str
  text: str
  prompt_tokens: int = 0
  completion_tokens: int = 0
  latency_s: float = 0.0
  cost: float = 0.0
  error: Optional[str] = None   # None on success; a short reason otherwise
  backend: str = ""
  cached: bool = False

  @property
  def ok(self) -> bool:
    return self.error is None


class CloudLLM(abc.ABC):
  name: str = "cloud"
  stats: dict = {}   # back-end counters (retries, faults by kind, ...); merged into run metrics

  @property
  def cache_id(self) -> str:
    """Identity of the answers (endpoint, model, fixed generation settings): the persistent
    cache's key prefix. Two back-ends with the same cache_id give interchangeable answers."""
    return self.name

  def cache_key(self, req: CloudRequest) -> str:
    """Persistent-cache key: what determines the answer (never the bridge's row key)."""
    parts = [self.cache_id, req.prompt, int(req.max_tokens), float(req.temperature)]
    if req.system is not None or req.stop:   # appended only when set: old keys stay valid
      parts += [req.system, list(req.stop)]
    blob = json.dumps(parts)
    return hashlib.sha256(blob.encode()).hexdigest()

  @abc.abstractmethod
  async def complete(self, requests: list[CloudRequest]) -> list[CloudResponse]:
    """Responses in request order. Faults are returned as responses with `error` set."""

  async def aclose(self) -> None:
    return None


_BACKENDS: dict[str, Callable[..., CloudLLM]] = {}


def register_cloud(name: str):
  def deco(fn):
    _BACKENDS[name] = fn
    return fn
  return deco


def make_cloud(backend: str, **kwargs) -> CloudLLM:
  if backend not in _BACKENDS:
    raise KeyError(f"unknown cloud backend {backend!r}; registered: {sorted(_BACKENDS)}")
  return _BACKENDS[backend](**kwargs)

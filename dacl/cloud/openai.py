"""`openai` back-end: any OpenAI-compatible HTTP endpoint (vLLM, SGLang, a hosted API, `dacl serve`).

One httpx.AsyncClient per back-end; at most `max_concurrency` requests in flight; connect/read
timeouts; retries with exponential backoff and full jitter on 408/409/429/5xx, timeouts and
transport errors, honouring Retry-After; a circuit breaker that fails fast after
`breaker_threshold` consecutive failed requests and lets one trial request through after
`breaker_cooldown_s`. A malformed body or a non-retryable 4xx is NOT retried: the server has
already done (and billed) the work. Every fault comes back as a response with `error` set, and
`stats` counts it by kind; nothing raises into the training loop.

The API key is read from the environment variable *named* in the config (`api_key_env`) and is
only ever placed in the Authorization header; it is not stored on the object's repr, logs,
errors, metrics, results or checkpoints.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from typing import Optional

import httpx

from dacl.cloud.protocol import CloudLLM, CloudRequest, CloudResponse, register_cloud

log = logging.getLogger("dacl.cloud")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FAULT_KINDS = ("rate_limited", "server_error", "timeout", "connection", "malformed",
               "client_error", "breaker_open")


class MissingAPIKeyError(RuntimeError):
  pass


def retry_after_s(headers, cap_s: float) -> Optional[float]:
  """Seconds from `retry-after-ms`, or `Retry-After` (delta-seconds or an HTTP date); None if absent."""
  ms = headers.get("retry-after-ms")
  if ms is not None:
    try:
      return min(max(float(ms) / 1000.0, 0.0), cap_s)
    except ValueError:
      pass
  ra = headers.get("retry-after")
  if ra is None:
    return None
  try:
    return min(max(float(ra), 0.0), cap_s)
  except ValueError:
    try:
      when = email.utils.parsedate_to_datetime(ra).timestamp()
    except (TypeError, ValueError):
      return None
    return min(max(when - time.time(), 0.0), cap_s)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
  """Full jitter: uniform(0, min(max_s, base_s * 2**attempt))."""
  return rng.uniform(0.0, min(max_s, base_s * (2 ** attempt)))


class CircuitBreaker:
  """closed -> (threshold consecutive failures) -> open -> (cooldown) -> half-open (one trial)."""

  def __init__(self, threshold: int, cooldown_s: float, clock=time.monotonic):
    self.threshold, self.cooldown_s, self.clock = threshold, cooldown_s, clock
    self.failures, self.opened_at, self.trial = 0, None, False
    self.opens = 0

  @property
  def state(self) -> str:
    if self.opened_at is None:
      return "closed"
    return "half-open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

  def allow(self) -> bool:
    s = self.state
    if s == "closed" or self.threshold <= 0:
      return True
    if s == "half-open" and not self.trial:
      self.trial = True
      return True
    return False

  def record(self, ok: bool) -> None:
    if ok:
      self.failures, self.opened_at, self.trial = 0, None, False
      return
    self.failures += 1
    if self.threshold > 0 and (self.trial or self.failures >= self.threshold):
      if self.opened_at is None or self.trial:
        self.opens += 1
      self.opened_at, self.trial = self.clock(), False


class OpenAICloud(CloudLLM):
  name = "openai"

  def __init__(self, base_url: str, model: str = "", api_key_env: str = "", mode: str = "chat",
               system_prompt: str = "", max_concurrency: int = 16, connect_timeout_s: float = 5.0,
               read_timeout_s: float = 60.0, max_retries: int = 4, backoff_base_s: float = 0.5,
               backoff_max_s: float = 20.0, retry_after_cap_s: float = 60.0,
               breaker_threshold: int = 8, breaker_cooldown_s: float = 30.0,
               price_prompt_per_1k: float = 0.0, price_completion_per_1k: float = 0.0,
               stop: tuple = (), seed: int = 0, transport=None):
    if not base_url:
      raise ValueError("cloud backend 'openai' needs cloud.base_url (e.g. http://127.0.0.1:8000/v1)")
    if mode not in ("chat", "completions"):
      raise ValueError(f"cloud.mode must be 'chat' or 'completions', got {mode!r}")
    self.base_url = base_url.rstrip("/")
    self.model, self.mode, self.system_prompt = model, mode, system_prompt
    self.api_key_env = api_key_env
    headers = {"content-type": "application/json"}
    if api_key_env:
      key = os.environ.get(api_key_env)
      if not key:
        raise MissingAPIKeyError(
            f"cloud.api_key_env names the environment variable {api_key_env!r}, which is not set")
      headers["authorization"] = f"Bearer {key}"
    self._client = httpx.AsyncClient(
        headers=headers, transport=transport,
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=max_concurrency,
                            max_keepalive_connections=max_concurrency))
    self._sem: Optional[asyncio.Semaphore] = None
    self.max_concurrency = max_concurrency
    self.max_retries, self.base_s, self.max_s = max_retries, backoff_base_s, backoff_max_s
    self.retry_after_cap_s = retry_after_cap_s
    self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
    self.price_in, self.price_out = price_prompt_per_1k, price_completion_per_1k
    self.stop = tuple(stop)
    self._rng = random.Random(seed)
    self.stats = {"http_requests": 0, "retries": 0, "usage_missing": 0,
                  **{f"fault_{k}": 0 for k in FAULT_KINDS}}

  def __repr__(self):   # never shows headers
    return f"OpenAICloud(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

  @property
  def cache_id(self) -> str:
    return f"openai|{self.base_url}|{self.model}|{self.mode}|{self.system_prompt}|{self.stop}"

  async def _resolve_model(self) -> Optional[CloudResponse]:
    """cloud.model empty: ask the endpoint (GET /models, with retries) for its first model."""
    async with self._model_lock:
      if self.model:
        return None
      got = await self._send("GET", f"{self.base_url}/models", None)
      if isinstance(got, tuple):
        return got
      try:
        self.model = got.json()["data"][0]["id"]
      except (ValueError, KeyError, IndexError, TypeError) as e:
        return ("malformed", f"model list: {type(e).__name__}")
      log.info("cloud model: %s (from %s/models)", self.model, self.base_url)
      return None

  async def _send(self, method: str, url: str, body):
    """The HTTP call with retries: a 200 httpx.Response, or (fault kind, detail) after giving up."""
    kind, detail = "connection", ""
    for attempt in range(self.max_retries + 1):
      wait = None
      try:
        async with self._sem:
          self.stats["http_requests"] += 1
          r = await self._client.request(method, url, json=body)
        if r.status_code == 200:
          return r
        detail = f"HTTP {r.status_code}"
        if r.status_code not in RETRY_STATUS:
          return ("client_error", detail)
        kind = "rate_limited" if r.status_code == 429 else "server_error"
        wait = retry_after_s(r.headers, self.retry_after_cap_s)
      except httpx.TimeoutException as e:
        kind, detail = "timeout", type(e).__name__
      except httpx.TransportError as e:
        kind, detail = "connection", type(e).__name__
      if attempt == self.max_retries:
        break
      self.stats["retries"] += 1
      await asyncio.sleep(wait if wait is not None else
                          backoff_s(attempt, self.base_s, self.max_s, self._rng))
    return (kind, f"{detail} after {self.max_retries + 1} attempts")

  def _payload(self, req: CloudRequest) -> tuple[str, dict]:
    body = {"model": self.model, "max_tokens": req.max_tokens, "temperature": req.temperature}
    stop = tuple(req.stop) or self.stop
    if stop:
      body["stop"] = list(stop)
    system = req.system if req.system is not None else self.system_prompt
    if self.mode == "chat":
      msgs = ([{"role": "system", "content": system}] if system else [])
      body["messages"] = msgs + [{"role": "user", "content": req.prompt}]
      return f"{self.base_url}/chat/completions", body
    body["prompt"] = (system + "\n\n" + req.prompt) if system and req.system is not None else req.prompt
    return f"{self.base_url}/completions", body

  def _parse(self, req: CloudRequest, data, latency: float) -> CloudResponse:
    choice = data["choices"][0]
    text = choice["message"]["content"] if self.mode == "chat" else choice["text"]
    if not isinstance(text, str):
      raise TypeError("completion text is not a string")
    usage = data.get("usage") or {}
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(pt, int) or not isinstance(ct, int):
      self.stats["usage_missing"] += 1
      pt, ct = 0, 0
    cost = pt / 1000 * self.price_in + ct / 1000 * self.price_out
    return CloudResponse(req.key, text, pt, ct, latency, cost, None, backend=self.name)

  def _fault(self, req, kind: str, detail: str, t0: float) -> CloudResponse:
    self.stats[f"fault_{kind}"] += 1
    return CloudResponse(req.key, "", latency_s=time.perf_counter() - t0,
                         error=f"{kind}: {detail}"[:200], backend=self.name)

  async def _one(self, req: CloudRequest) -> CloudResponse:
    t0 = time.perf_counter()
    if not self.breaker.allow():
      return self._fault(req, "breaker_open", "circuit breaker open; answered locally", t0)
    got = await self._resolve_model()
    if got is None:
      got = await self._send("POST", *self._payload(req))
    if isinstance(got, tuple):
      self.breaker.record(False)
      return self._fault(req, *got, t0)
    try:
      resp = self._parse(req, got.json(), time.perf_counter() - t0)
    except (ValueError, KeyError, IndexError, TypeError) as e:
      self.breaker.record(False)   # the server did the work: never retried, never paid twice
      return self._fault(req, "malformed", f"{type(e).__name__} in response body", t0)
    self.breaker.record(True)
    return resp

  async def complete(self, requests):
    if self._sem is None:   # bound to the loop that runs the requests
      self._sem = asyncio.Semaphore(self.max_concurrency)
      self._model_lock = asyncio.Lock()
    return list(await asyncio.gather(*(self._one(r) for r in requests)))

  async def aclose(self) -> None:
    await self._client.aclose()


register_cloud("openai")(lambda **kw: OpenAICloud(**kw))

"""Collaborative inference under a budget: the local SLM answers; when it emits the offload marker
the request goes to the cloud while the running cloud-usage rate stays within τ, otherwise it is
answered locally (the marker banned). Every answer reports its route and cost.

Routes: "local" (no marker), "cloud", "local_budget" (marker, but the budget was spent),
"local_fallback" (marker, the cloud call faulted; its budget share is returned).

  collab = Collaborator(engine, cloud, marker_ids=(tok.token_id("<cloud>"),), tau=0.3)
  answers = collab.answer_many(["12+7=", ...])     # or `await collab.answer(...)` in a loop
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Optional, Sequence

from dacl.cloud.cache import ResponseCache
from dacl.cloud.protocol import CloudLLM, CloudRequest
from dacl.serve.engine import BatchingEngine, Completion, GenParams, GenResult


@dataclasses.dataclass
class CollabAnswer:
  result: GenResult
  route: str
  cost: float = 0.0
  cloud_latency_s: float = 0.0
  cloud_error: Optional[str] = None
  usage_rate: float = 0.0       # running cloud-usage rate after this request
  detail: Optional[dict] = None  # mode-specific: adaswitch reports the steps each side wrote


class Collaborator:
  def __init__(self, engine: BatchingEngine, cloud: CloudLLM, marker_ids: Sequence[int], tau: float,
               marker_text: str = "", cloud_timeout_s: float = 60.0, cloud_max_tokens: int = 256,
               disk: Optional[ResponseCache] = None):
    if not marker_ids:
      raise ValueError("collaborative serving needs an offload marker (config.offload.marker)")
    if not 0.0 <= tau <= 1.0:
      raise ValueError(f"budget tau must be in [0, 1], got {tau}")
    self.engine, self.cloud, self.tau = engine, cloud, float(tau)
    self.marker_ids, self.marker_text = tuple(marker_ids), marker_text
    self.timeout_s, self.cloud_max_tokens, self.disk = cloud_timeout_s, cloud_max_tokens, disk
    self.total, self.cloud_used = 0, 0
    self.stats = {"local": 0, "cloud": 0, "local_budget": 0, "local_fallback": 0, "cost": 0.0,
                  "cloud_faults": 0}

  @property
  def usage_rate(self) -> float:
    return self.cloud_used / max(self.total, 1)

  async def _local(self, ids, params: GenParams, ban: bool) -> GenResult:
    p = dataclasses.replace(params, n=1, marker_ids=self.marker_ids, ban_marker=ban)
    return await asyncio.wrap_future(self.engine.submit(ids, p))

  def _wants_cloud(self, c: Completion) -> bool:
    return c.finish_reason == "marker" or bool(self.marker_text and self.marker_text in c.text)

  async def _ask_cloud(self, prompt: str, params: GenParams):
    req = CloudRequest(hashlib.sha1(prompt.encode()).hexdigest()[:16], prompt,
                       min(params.max_tokens, self.cloud_max_tokens), params.temperature)
    ck = self.cloud.cache_key(req) if self.disk is not None else None
    if ck is not None and (hit := self.disk.get(ck)) is not None:
      return dataclasses.replace(hit, cached=True, cost=0.0)   # paid for once, already
    try:
      (resp,) = await asyncio.wait_for(self.cloud.complete([req]), self.timeout_s)
    except Exception as e:   # timeouts and back-end bugs are faults, not crashes
      from dacl.cloud.protocol import CloudResponse
      resp = CloudResponse(req.key, "", error=f"{type(e).__name__}", backend=self.cloud.name)
    if ck is not None and resp.ok:
      self.disk.put(ck, self.cloud.name, resp)
    return resp

  async def answer_ids(self, ids, cloud_prompt: str, params: GenParams) -> CollabAnswer:
    """ids: the local model's prompt tokens; cloud_prompt: the text the cloud receives."""
    self.total += 1
    first = await self._local(ids, params, ban=False)
    if not self._wants_cloud(first.completions[0]):
      return self._done(CollabAnswer(first, "local"))
    if self.cloud_used + 1 > self.tau * self.total + 1e-9:
      route, err, lat = "local_budget", None, 0.0
    else:
      self.cloud_used += 1        # reserve before awaiting, so concurrent requests see it
      t = time.perf_counter()
      resp = await self._ask_cloud(cloud_prompt, params)
      lat = time.perf_counter() - t
      if resp.ok:
        res = GenResult(first.prompt_tokens, [Completion(resp.text, resp.completion_tokens, "stop")])
        return self._done(CollabAnswer(res, "cloud", resp.cost, lat))
      self.cloud_used -= 1
      self.stats["cloud_faults"] += 1
      route, err = "local_fallback", resp.error
    again = await self._local(ids, params, ban=True)
    c = again.completions[0]
    if self.marker_text:          # a text tag cannot be banned: cut the answer at it
      c = dataclasses.replace(c, text=c.text.split(self.marker_text)[0])
    return self._done(CollabAnswer(GenResult(again.prompt_tokens, [c]), route, 0.0, lat, err))

  async def answer(self, prompt: str, params: GenParams = GenParams(temperature=0.0)) -> CollabAnswer:
    return await self.answer_ids(self.engine.encode(prompt), prompt, params)

  def answer_many(self, prompts: Sequence[str],
                  params: GenParams = GenParams(temperature=0.0)) -> list[CollabAnswer]:
    """Synchronous helper: all prompts concurrently (they batch in the engine)."""
    async def run():
      return await asyncio.gather(*(self.answer(p, params) for p in prompts))
    return list(asyncio.run(run()))

  def _done(self, a: CollabAnswer) -> CollabAnswer:
    self.stats[a.route] += 1
    self.stats["cost"] += a.cost
    a.usage_rate = self.usage_rate
    return a

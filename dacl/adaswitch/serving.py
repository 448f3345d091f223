"""AdaSwitch behind `dacl serve --collab --config.collab.mode=adaswitch`.

Each request's question is solved step by step by the served (local) model; a step whose
reflection says P("Yes") > collab.threshold is rewritten by the configured cloud. Concurrent
requests are collected for up to `serve.batch_wait_ms` and run as one batch of rows through the
step engine, on one worker thread. Each answer reports the steps written by each side.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import Optional

from dacl.adaswitch import engine as eng
from dacl.adaswitch import steps as st
from dacl.data.calculator import format_value
from dacl.data.tasks import Example
from dacl.serve.collab import CollabAnswer
from dacl.serve.engine import Completion, GenParams, GenResult


def answer_text(row: eng.Row) -> str:
  """The worked solution a client receives: the accepted steps with their observations, then
  the final answer in GSM8K style."""
  body = "".join(r.step.text + r.observation for r in row.records if not r.superseded)
  final = format_value(row.answer) if row.answer is not None else "unknown"
  return f"{body}#### {final}"


class StepCollaborator:
  mode = "adaswitch"

  def __init__(self, sampler, tokenizer, bridge, cfg: eng.EngineConfig, chat: bool,
               max_batch: int = 16, batch_wait_ms: float = 5.0):
    self.engine = eng.StepEngine(sampler, tokenizer, cfg, bridge=bridge, chat=chat)
    self.bridge, self.tau = bridge, None
    self.max_batch, self.wait_s = max(1, int(max_batch)), batch_wait_ms / 1000.0
    self.stats = {"requests": 0, "steps_local": 0, "steps_cloud": 0, "switches": 0,
                  "cloud_calls": 0, "cloud_faults": 0, "cloud_tokens": 0, "batches": 0}
    self._q: "queue.Queue" = queue.Queue()
    self._thread = threading.Thread(target=self._worker, name="dacl-adaswitch", daemon=True)
    self._thread.start()

  @property
  def usage_rate(self) -> float:
    s = self.stats
    return s["steps_cloud"] / max(1, s["steps_cloud"] + s["steps_local"])

  def _worker(self):
    while True:
      first = self._q.get()
      if first is None:
        return
      batch, deadline = [first], time.perf_counter() + self.wait_s
      while len(batch) < self.max_batch:
        try:
          item = self._q.get(timeout=max(0.0, deadline - time.perf_counter()))
        except queue.Empty:
          break
        if item is None:
          self._q.put(None)
          break
        batch.append(item)
      try:
        rows = self.engine.new_rows([Example(p, "", "", "serve") for p, _ in batch],
                                    [None] * len(batch))
        self.engine.run(rows, "adaswitch", round_key="serve")
        self.stats["batches"] += 1
        for (_, fut), row in zip(batch, rows):
          fut.set_result(row)
      except Exception as e:   # fail these requests, keep the worker
        for _, fut in batch:
          if not fut.done():
            fut.set_exception(e)

  async def answer_ids(self, ids, cloud_prompt: str, params: GenParams) -> CollabAnswer:
    """ids are ignored: the step engine builds its own context from the question text."""
    fut: concurrent.futures.Future = concurrent.futures.Future()
    self._q.put((cloud_prompt, fut))
    row = await asyncio.wrap_future(fut)
    by = row.steps_by
    s = self.stats
    s["requests"] += 1
    s["steps_local"] += by.get("local", 0)
    s["steps_cloud"] += by.get("cloud", 0)
    s["switches"] += row.switches
    s["cloud_calls"] += row.cloud_calls
    s["cloud_faults"] += row.cloud_faults
    tokens = row.cloud_prompt_tokens + row.cloud_completion_tokens
    s["cloud_tokens"] += tokens
    text = answer_text(row)
    res = GenResult(len(ids), [Completion(text, row.local_tokens, "stop")])
    route = "cloud" if by.get("cloud", 0) else "local"
    a = CollabAnswer(res, route, 0.0, 0.0, None, self.usage_rate)
    a.detail = {"mode": "adaswitch", "steps": by, "switches": row.switches,
                "cloud_calls": row.cloud_calls, "cloud_faults": row.cloud_faults,
                "cloud_tokens": tokens, "answer": None if row.answer is None else format_value(row.answer)}
    return a

  def close(self):
    self._q.put(None)
    self._thread.join(timeout=10)
    self.bridge.close()


def build(config, engine, tokenizer, disk=None) -> StepCollaborator:
  """From a serve config: the served model's sampler, the configured cloud, collab.* settings.
  disk: a ResponseCache, so a restarted server does not pay for an answered step again."""
  from dacl.cloud.bridge import CloudBridge
  from dacl.cloud.config import cloud_from_config
  cc, c = config.collab, config.cloud
  cfg = eng.EngineConfig(max_steps=int(cc.max_steps), step_max_tokens=int(cc.step_max_tokens),
                         threshold=float(cc.threshold), cloud_max_tokens=int(c.max_tokens),
                         seed=int(config.seed))
  bridge = CloudBridge(cloud_from_config(c), cache=True, timeout_s=c.timeout_s, disk=disk)
  return StepCollaborator(engine.sampler, tokenizer, bridge, cfg, chat=bool(cc.chat),
                          max_batch=config.serve.max_batch, batch_wait_ms=config.serve.batch_wait_ms)

"""An OpenAI-compatible HTTP server backed by a dacl model (Starlette app, run by uvicorn).

  POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health   GET /dacl/stats

Concurrent requests batch in the engine (dacl.serve.continuous by default; the static
BatchingEngine with serve.engine="static"). Bad requests get OpenAI-style error bodies
({"error": {"message", "type", "param", "code"}}) with 4xx codes. With a Collaborator (`--collab`)
each answer carries `"dacl": {"route", "cost", "usage_rate"}` and an `x-dacl-route` header.

`stream: true` answers with server-sent events as OpenAI clients expect: chat chunks
(`chat.completion.chunk`: a role delta, content deltas, a final delta with finish_reason) or
completion chunks (`text_completion` with `text` deltas), an optional usage chunk
(`stream_options: {"include_usage": true}`), then `data: [DONE]`. On the continuous engine the
deltas are the tokens as they decode; on the static engine, and with --collab (whose route is
known only once the answer is), each choice's text arrives as one delta when it is done.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from dacl.sampling import PromptTooLongError
from dacl.serve.engine import BatchingEngine, GenParams

log = logging.getLogger("dacl.serve")


class BadRequest(Exception):
  def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None,
               status: int = 400, type_: str = "invalid_request_error"):
    super().__init__(message)
    self.message, self.param, self.code, self.status, self.type = message, param, code, status, type_


def error_response(e: BadRequest) -> JSONResponse:
  return JSONResponse({"error": {"message": e.message, "type": e.type, "param": e.param,
                                 "code": e.code}}, status_code=e.status)


def _num(body: dict, name: str, default, lo: float, hi: float, integer: bool = False):
  v = body.get(name, default)
  if v is None:
    return default
  ok = isinstance(v, int) if integer else isinstance(v, (int, float))
  if isinstance(v, bool) or not ok:
    raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}", name)
  if not lo <= v <= hi:
    raise BadRequest(f"'{name}' must be in [{lo}, {hi}], got {v}", name)
  return v


def parse_params(body: dict, default_max_tokens: int, max_n: int) -> GenParams:
  if not isinstance(body.get("stream", False), (bool, type(None))):
    raise BadRequest("'stream' must be a boolean", "stream")
  so = body.get("stream_options")
  if so is not None and not (isinstance(so, dict) and isinstance(so.get("include_usage", False), bool)):
    raise BadRequest("'stream_options' must be an object like {\"include_usage\": true}",
                     "stream_options")
  mt = body.get("max_completion_tokens", body.get("max_tokens"))
  mt = _num({"max_tokens": mt}, "max_tokens", default_max_tokens, 1, 1 << 20, integer=True)
  stop = body.get("stop") or ()
  if isinstance(stop, str):
    stop = (stop,)
  if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop) \
      or len(stop) > 4:
    raise BadRequest("'stop' must be a non-empty string or a list of at most 4 of them", "stop")
  return GenParams(max_tokens=mt, temperature=float(_num(body, "temperature", 1.0, 0.0, 2.0)),
                   top_p=float(_num(body, "top_p", 1.0, 0.0, 1.0)),
                   top_k=int(_num(body, "top_k", 0, 0, 1 << 20, integer=True)),
                   n=int(_num(body, "n", 1, 1, max_n, integer=True)), stop=tuple(stop),
                   seed=_num(body, "seed", None, -(1 << 63), (1 << 63) - 1, integer=True))


def parse_messages(body: dict) -> list:
  msgs = body.get("messages")
  if not isinstance(msgs, list) or not msgs:
    raise BadRequest("'messages' must be a non-empty list", "messages")
  out = []
  for i, m in enumerate(msgs):
    if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
      raise BadRequest(f"messages[{i}] needs a role of system|user|assistant", f"messages[{i}].role")
    c = m.get("content")
    if isinstance(c, list):   # content parts: text only
      if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                 for p in c):
        raise BadRequest(f"messages[{i}].content parts must be text parts", f"messages[{i}].content")
      c = "".join(p["text"] for p in c)
    if not isinstance(c, str):
      raise BadRequest(f"messages[{i}].content must be a string", f"messages[{i}].content")
    out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": c})
  return out


class App:
  def __init__(self, engine: BatchingEngine, model_name: str, api_key: Optional[str] = None,
               collab=None, default_max_tokens: int = 256, max_n: int = 8,
               max_body_bytes: int = 1 << 20):
    self.engine, self.model_name, self.api_key, self.collab = engine, model_name, api_key, collab
    self.default_max_tokens, self.max_n, self.max_body = default_max_tokens, max_n, max_body_bytes
    self.created = int(time.time())
    self.counts = {"requests": 0, "errors_4xx": 0, "errors_5xx": 0}
    self.starlette = Starlette(routes=[
        Route("/v1/chat/completions", self.chat, methods=["POST"]),
        Route("/v1/completions", self.completions, methods=["POST"]),
        Route("/v1/models", self.models, methods=["GET"]),
        Route("/health", lambda r: JSONResponse({"ok": True}), methods=["GET"]),
        Route("/dacl/stats", self.stats, methods=["GET"]),
    ], exception_handlers={404: self._not_found, 405: self._not_allowed})

  async def __call__(self, scope, receive, send):
    await self.starlette(scope, receive, send)

  async def _not_found(self, request, exc):
    return error_response(BadRequest(f"no route {request.url.path}", code="not_found", status=404))

  async def _not_allowed(self, request, exc):
    return error_response(BadRequest(f"method {request.method} not allowed on {request.url.path}",
                                      code="method_not_allowed", status=405))

  def _auth(self, request: Request) -> None:
    if self.api_key is None:
      return
    got = request.headers.get("authorization", "")
    if not hmac.compare_digest(got.encode(), f"Bearer {self.api_key}".encode()):
      raise BadRequest("invalid or missing API key (Authorization: Bearer ...)",
                       code="invalid_api_key", status=401, type_="authentication_error")

  async def _read_limited(self, request: Request) -> bytes:
    """The body, refused (413) as soon as it passes max_body bytes: a declared Content-Length
    over the limit is refused before reading, and a chunked or lying body is read chunk by
    chunk, never whole."""
    too_big = BadRequest(f"request body over {self.max_body} bytes", status=413,
                         code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > self.max_body:
      raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
      n += len(chunk)
      if n > self.max_body:
        raise too_big
      chunks.append(chunk)
    return b"".join(chunks)

  async def _body(self, request: Request) -> dict:
    raw = await self._read_limited(request)
    try:
      body = json.loads(raw)
    except RecursionError:   # e.g. [[[[...]]]] nested deeper than the parser's stack
      raise BadRequest("request body is nested too deeply")
    except (ValueError, UnicodeDecodeError):
      raise BadRequest("request body is not valid JSON")
    if not isinstance(body, dict):
      raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != self.model_name:
      raise BadRequest(f"model {model!r} does not exist; this server serves {self.model_name!r}",
                       "model", "model_not_found", status=404)
    return body

  async def _handle(self, request: Request, kind: str) -> JSONResponse:
    self.counts["requests"] += 1
    try:
      self._auth(request)
      body = await self._body(request)
      params = parse_params(body, self.default_max_tokens, self.max_n)
      if kind == "chat":
        msgs = parse_messages(body)
        prompts = [self.engine.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)]
        cloud_prompts = [next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")]
      else:
        p = body.get("prompt")
        prompts = [p] if isinstance(p, str) else p
        if not isinstance(prompts, list) or not prompts or not all(isinstance(x, str) for x in prompts):
          raise BadRequest("'prompt' must be a string or a non-empty list of strings", "prompt")
        cloud_prompts = prompts
      try:
        ids = [self.engine.encode(p) for p in prompts]
      except ValueError as e:   # e.g. an empty prompt with a tokenizer that adds no BOS
        raise BadRequest(str(e), "messages" if kind == "chat" else "prompt")
      for x in ids:
        self.engine.check_fits(x, params.max_tokens)
      stream = bool(body.get("stream"))
      usage = bool((body.get("stream_options") or {}).get("include_usage"))
      if self.collab is not None:
        if params.n != 1:
          raise BadRequest("n > 1 is not supported in collaborative mode", "n")
        if stream:
          return self._stream(kind, ids, params, usage, cloud_prompts)
        answers = await asyncio.gather(*(self.collab.answer_ids(x, cp, params)
                                         for x, cp in zip(ids, cloud_prompts)))
        results = [a.result for a in answers]
      else:
        if stream:
          return self._stream(kind, ids, params, usage)
        answers = None
        results = await asyncio.gather(*(asyncio.wrap_future(self.engine.submit(x, params))
                                         for x in ids))
    except PromptTooLongError as e:
      return self._err(BadRequest(str(e), "messages" if kind == "chat" else "prompt",
                                  "context_length_exceeded"))
    except BadRequest as e:
      return self._err(e)
    except Exception as e:   # a bug, not the client's fault: 500 with no internals leaked
      log.exception("request failed")
      self.counts["errors_5xx"] += 1
      return JSONResponse({"error": {"message": f"internal error ({type(e).__name__})",
                                     "type": "server_error", "param": None, "code": None}},
                          status_code=500)
    return self._ok(kind, results, answers)

  def _stream(self, kind: str, ids: list, params: GenParams, include_usage: bool,
              cloud_prompts: Optional[list] = None) -> StreamingResponse:
    """Server-sent events for len(ids) prompts x params.n samples (choice index i * n + g)."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    n, chat = params.n, kind == "chat"
    cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    live = getattr(self.engine, "streams", False) and cloud_prompts is None   # per-token deltas
    put = lambda *ev: loop.call_soon_threadsafe(q.put_nowait, ev)
    running = []
    for i, x in enumerate(ids):
      if cloud_prompts is not None:
        task = asyncio.ensure_future(self.collab.answer_ids(x, cloud_prompts[i], params))
        task.add_done_callback(lambda t, i=i: q.put_nowait(("done", i, t)))
        running.append(task)
      else:
        listener = (lambda g, d, f, i=i: put("delta", i * n + g, d, f)) if live else None
        fut = (self.engine.submit(x, params, listener=listener) if live
               else self.engine.submit(x, params))
        fut.add_done_callback(lambda f, i=i: put("done", i, f))
        running.append(fut)

    def stop_unfinished():   # the client went away: free the engine's slots
      for f in running:
        if not f.done():
          self.engine.cancel(f)

    def event(choices, **extra) -> str:
      body = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion",
              "created": created, "model": self.model_name, "choices": choices, **extra}
      return f"data: {json.dumps(body)}\n\n"

    def choice(idx, text=None, finish=None, role=False) -> dict:
      if chat:
        delta = {"role": "assistant", "content": ""} if role else (
            {"content": text} if text is not None else {})
        return {"index": idx, "delta": delta, "finish_reason": finish}
      return {"index": idx, "text": text or "", "logprobs": None, "finish_reason": finish}

    async def events():
      try:
        async for e in _events():
          yield e
      finally:
        stop_unfinished()

    async def _events():
      if chat:
        for idx in range(len(ids) * n):
          yield event([choice(idx, role=True)])
      pending, pt, ct = len(ids), 0, 0
      while pending:
        ev = await q.get()
        if ev[0] == "delta":
          _, idx, d, f = ev
          if d:
            yield event([choice(idx, d)])
          if f is not None:
            yield event([choice(idx, finish="stop" if f == "marker" else f)])
          continue
        _, i, fut = ev
        pending -= 1
        try:
          res = fut.result()
        except Exception as e:   # after the headers: an error object in the stream
          log.error("streamed request failed: %s", type(e).__name__)
          self.counts["errors_5xx"] += 1
          yield f"data: {json.dumps({'error': {'message': f'internal error ({type(e).__name__})', 'type': 'server_error', 'param': None, 'code': None}})}\n\n"
          continue
        extra = {}
        if cloud_prompts is not None:   # a CollabAnswer: its route rides on the final chunk
          extra = {"dacl": {"route": res.route, "cost": res.cost, "usage_rate": round(res.usage_rate, 4),
                            "cloud_error": res.cloud_error, **(res.detail or {})}}
          res = res.result
        pt += res.prompt_tokens
        ct += sum(c.tokens for c in res.completions)
        if not live:
          for g, c in enumerate(res.completions):
            f = "stop" if c.finish_reason == "marker" else c.finish_reason
            yield event([choice(i * n + g, c.text)])
            yield event([choice(i * n + g, finish=f)], **extra)
      if include_usage:
        yield event([], usage={"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct})
      yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})

  def _err(self, e: BadRequest) -> JSONResponse:
    self.counts["errors_4xx"] += 1
    return error_response(e)

  def _ok(self, kind, results, answers) -> JSONResponse:
    choices, pt, ct = [], 0, 0
    for r in results:
      pt += r.prompt_tokens
      for c in r.completions:
        ct += c.tokens
        finish = "stop" if c.finish_reason == "marker" else c.finish_reason
        i = len(choices)
        choices.append({"index": i, "message": {"role": "assistant", "content": c.text},
                        "finish_reason": finish} if kind == "chat" else
                       {"index": i, "text": c.text, "logprobs": None, "finish_reason": finish})
    body = {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": self.model_name, "choices": choices,
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
    headers = {}
    if answers is not None:
      body["dacl"] = [{"route": a.route, "cost": a.cost, "cloud_latency_s": round(a.cloud_latency_s, 4),
                       "usage_rate": round(a.usage_rate, 4), "cloud_error": a.cloud_error,
                       **(a.detail or {})} for a in answers]
      if len(body["dacl"]) == 1:
        body["dacl"] = body["dacl"][0]
      headers["x-dacl-route"] = ",".join(a.route for a in answers)
    return JSONResponse(body, headers=headers)

  async def chat(self, request):
    return await self._handle(request, "chat")

  async def completions(self, request):
    return await self._handle(request, "completions")

  async def models(self, request):
    try:
      self._auth(request)
    except BadRequest as e:
      return self._err(e)
    return JSONResponse({"object": "list", "data": [
        {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "dacl"}]})

  async def stats(self, request):
    try:
      self._auth(request)
    except BadRequest as e:
      return self._err(e)
    out = {"server": self.counts, "engine": self.engine.stats}
    if self.collab is not None:
      out["collab"] = {**self.collab.stats, "usage_rate": self.collab.usage_rate,
                       "tau": self.collab.tau, "mode": getattr(self.collab, "mode", "marker")}
    return JSONResponse(out)

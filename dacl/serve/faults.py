"""A loopback fault-injection proxy for OpenAI-compatible endpoints (tests and drills).

Requests pass through to the upstream server except where the schedule says otherwise; the
schedule is consumed one entry per request, then every request passes ("ok"):

  ok            forward unchanged
  latency:MS    wait MS milliseconds, then forward
  429:S         answer 429 with `Retry-After: S` (the upstream never sees the request)
  500           answer 500 (never forwarded)
  truncated     forward, then return the body cut in half (valid HTTP, broken JSON: the upstream
                did the work, so the client must not retry and pay again)
  reset         close the connection with a TCP reset before forwarding
  stall         send headers and a partial body, then hang for `stall_s` (never forwarded)

  proxy = FaultProxy("http://127.0.0.1:8000", ["429:1", "500", "reset", "truncated"])
  ... point the client at proxy.base_url ...;  proxy.counts  ->  {"429": 1, ..., "forwarded": n}
"""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections import Counter
from urllib.parse import urlsplit

import httpx

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}


def _response(status: int, body: bytes, headers: dict = None, length: int = None) -> bytes:
  head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
          "content-type: application/json",
          f"content-length: {len(body) if length is None else length}", "connection: keep-alive"]
  head += [f"{k}: {v}" for k, v in (headers or {}).items()]
  return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FaultProxy:
  def __init__(self, upstream: str, schedule=(), stall_s: float = 30.0, host: str = "127.0.0.1",
               port: int = 0):
    u = urlsplit(upstream)
    self.upstream = f"{u.scheme}://{u.netloc}"
    self.schedule, self.stall_s = list(schedule), stall_s
    self.counts: Counter = Counter()
    self._i = 0
    self.inflight = 0   # requests being forwarded upstream right now
    self._loop = asyncio.new_event_loop()
    self._ready = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True,
                                    name="dacl-fault-proxy")
    self._thread.start()
    if not self._ready.wait(10):
      raise RuntimeError("fault proxy did not start")
    self.base_url = f"http://{host}:{self.port}/v1"

  def _run(self, host, port):
    asyncio.set_event_loop(self._loop)
    self._client = httpx.AsyncClient(timeout=httpx.Timeout(120.0))
    self._server = self._loop.run_until_complete(asyncio.start_server(self._conn, host, port))
    self.port = self._server.sockets[0].getsockname()[1]
    self._ready.set()
    self._loop.run_forever()

  def set_schedule(self, schedule) -> None:
    def _set():
      self.schedule, self._i = list(schedule), 0
    self._loop.call_soon_threadsafe(_set)

  def _next_fault(self) -> str:
    f = self.schedule[self._i] if self._i < len(self.schedule) else "ok"
    self._i += 1
    return f

  async def _read_request(self, reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
      if ":" in line:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, path, headers, body

  async def _forward(self, method, path, headers, body):
    keep = {k: v for k, v in headers.items() if k in ("authorization", "content-type", "accept")}
    self.inflight += 1
    try:
      r = await self._client.request(method, self.upstream + path, headers=keep, content=body)
    finally:
      self.inflight -= 1
    self.counts["forwarded"] += 1
    self.counts[f"forwarded {method} {path}"] += 1
    return r.status_code, r.content

  async def _conn(self, reader, writer):
    try:
      while True:
        try:
          method, path, headers, body = await self._read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
          writer.close()
          return
        fault = self._next_fault()
        kind, _, arg = fault.partition(":")
        self.counts[kind] += 1
        if kind == "reset":
          sock = writer.get_extra_info("socket")
          sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
          writer.transport.abort()
          return
        if kind == "429":
          err = json.dumps({"error": {"message": "rate limited (injected)", "type": "rate_limit"}})
          writer.write(_response(429, err.encode(), {"retry-after": arg or "1"}))
        elif kind == "500":
          writer.write(_response(500, b'{"error": {"message": "injected server error"}}'))
        elif kind == "stall":
          writer.write(_response(200, b'{"id": "stalled", "choi', length=4096))
          await writer.drain()
          await asyncio.sleep(self.stall_s)
          writer.close()
          return
        else:
          if kind == "latency":
            await asyncio.sleep(float(arg or 0) / 1000.0)
          status, content = await self._forward(method, path, headers, body)
          if kind == "truncated":
            content = content[: len(content) // 2]
          writer.write(_response(status, content))
        await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
      writer.transport.abort()

  def close(self) -> None:
    async def _stop():
      self._server.close()
      await self._client.aclose()
      me = asyncio.current_task()
      for t in asyncio.all_tasks():
        if t is not me:
          t.cancel()
    try:
      asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
    except Exception:
      pass
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(timeout=5)

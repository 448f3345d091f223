"""The `openai` back-end against a real loopback `dacl serve` (tiny model) through a fault-injecting
proxy: retries, Retry-After, truncated bodies, resets, stalls, the circuit breaker, the key."""
import asyncio
import os
import time

import httpx
import pytest

from dacl.cloud import CloudRequest
from dacl.cloud.bridge import CloudBridge
from dacl.cloud.cache import ResponseCache
from dacl.cloud.openai import CircuitBreaker, MissingAPIKeyError, OpenAICloud, retry_after_s
from dacl.serve import ServerThread, build_app
from dacl.serve.faults import FaultProxy

SECRET = "sk-test-SECRET-7f3a9c"


@pytest.fixture(scope="module")
def server():
  from configs.serve_tiny import get_config
  c = get_config()
  c.unlock()
  c.serve.api_key_env = "DACL_TEST_SERVE_KEY"
  os.environ["DACL_TEST_SERVE_KEY"] = SECRET
  srv = ServerThread(build_app(c))
  for n in (1, 2, 4):   # compile the row buckets the tests use, so timeouts below are not compiles
    srv.app.engine.generate("1+1=", __import__("dacl.serve.engine").serve.engine.GenParams(
        max_tokens=4, temperature=0.0, n=n))
  yield srv
  srv.close()


def cloud(url, **kw):
  os.environ["DACL_TEST_CLOUD_KEY"] = SECRET
  base = dict(api_key_env="DACL_TEST_CLOUD_KEY", mode="completions", max_retries=3,
              backoff_base_s=0.01, backoff_max_s=0.05, read_timeout_s=60.0, connect_timeout_s=1.0,
              price_prompt_per_1k=1.0, price_completion_per_1k=2.0)
  return OpenAICloud(url, **{**base, **kw})


def reqs(n, prefix="q"):
  return [CloudRequest(f"{prefix}{i}", f"{i}+{i}=", max_tokens=4, temperature=0.0) for i in range(n)]


def run(c, rs):
  async def go():
    try:
      return await c.complete(rs)
    finally:
      await c.aclose()
  return asyncio.run(go())


def test_clean_calls_bill_usage_and_resolve_model(server):
  c = cloud(server.base_url)
  out = run(c, reqs(4))
  assert all(r.ok for r in out), [r.error for r in out]
  assert c.model == "dacl-tiny"                       # taken from GET /v1/models
  for r in out:
    assert r.completion_tokens == 4 and r.prompt_tokens > 0
    assert r.cost == pytest.approx(r.prompt_tokens / 1000 * 1.0 + 4 / 1000 * 2.0)
  assert c.stats["http_requests"] == 5 and c.stats["retries"] == 0   # one GET /models, shared


def test_chat_mode(server):
  c = cloud(server.base_url, mode="chat", system_prompt="be brief", model="dacl-tiny")
  (r,) = run(c, reqs(1))
  assert r.ok and r.completion_tokens == 4


def test_wrong_key_is_a_client_error_not_retried(server):
  os.environ["DACL_TEST_WRONG"] = "nope"
  c = cloud(server.base_url, api_key_env="DACL_TEST_WRONG", model="dacl-tiny")
  (r,) = run(c, reqs(1))
  assert not r.ok and "client_error" in r.error and "401" in r.error
  assert c.stats["retries"] == 0
  with pytest.raises(MissingAPIKeyError, match="DACL_TEST_UNSET"):
    cloud(server.base_url, api_key_env="DACL_TEST_UNSET")


def test_faults_are_retried_or_counted_never_raised(server):
  proxy = FaultProxy(server.base_url, stall_s=5.0)
  try:
    # Sequential single requests so the schedule maps to attempts deterministically.
    cases = [(["429:0.2", "ok"], True, "retries"), (["500", "500", "ok"], True, "retries"),
             (["reset", "ok"], True, "retries"), (["stall", "ok"], True, "retries"),
             (["latency:300"], True, None), (["truncated"], False, "fault_malformed")]
    for sched, ok, counter in cases:
      proxy.set_schedule(sched)
      time.sleep(0.05)
      c = cloud(proxy.base_url, model="dacl-tiny", read_timeout_s=1.0)
      t = time.perf_counter()
      (r,) = run(c, reqs(1, prefix=str(sched)))
      assert r.ok == ok, (sched, r.error)
      if counter:
        assert c.stats[counter] >= 1, (sched, c.stats)
      if sched[0].startswith("429"):
        assert time.perf_counter() - t >= 0.2          # Retry-After honoured
      if sched == ["truncated"]:
        assert c.stats["http_requests"] == 1           # served once: never paid twice
    proxy.set_schedule(["429:0", "reset"])               # the model lookup retries too
    time.sleep(0.05)
    c = cloud(proxy.base_url)
    out = run(c, reqs(3, "m"))
    assert all(r.ok for r in out) and c.model == "dacl-tiny" and c.stats["retries"] == 2
    proxy.set_schedule(["500"] * 10)
    time.sleep(0.05)
    c = cloud(proxy.base_url, model="dacl-tiny", max_retries=1)
    (r,) = run(c, reqs(1, "x"))
    assert not r.ok and r.error.startswith("server_error") and c.stats["fault_server_error"] == 1
  finally:
    proxy.close()
  assert proxy.counts["429"] and proxy.counts["reset"] and proxy.counts["stall"]


def test_circuit_breaker_fails_fast_then_recovers():
  now = [0.0]
  b = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
  b.record(False)
  assert b.allow()
  b.record(False)
  assert b.state == "open" and not b.allow()
  now[0] = 11
  assert b.allow() and not b.allow()                   # half-open: exactly one trial
  b.record(False)
  assert b.state == "open"
  now[0] = 22
  assert b.allow()
  b.record(True)
  assert b.state == "closed" and b.allow() and b.opens == 2


def test_breaker_opens_on_dead_endpoint():
  c = cloud("http://127.0.0.1:9/v1", model="m", max_retries=0, breaker_threshold=2,
            breaker_cooldown_s=60)
  async def one_by_one():
    try:
      return [(await c.complete([r]))[0] for r in reqs(5)]
    finally:
      await c.aclose()
  out = asyncio.run(one_by_one())
  assert not any(r.ok for r in out)
  assert c.stats["fault_breaker_open"] >= 1 and c.stats["http_requests"] == 2


def test_retry_after_parsing():
  assert retry_after_s({"retry-after": "3"}, 60) == 3
  assert retry_after_s({"retry-after-ms": "250"}, 60) == 0.25
  assert retry_after_s({"retry-after": "999"}, 30) == 30
  assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 30) == 0
  assert retry_after_s({}, 30) is None and retry_after_s({"retry-after": "soon"}, 30) is None


def test_key_never_in_repr_or_errors(server):
  c = cloud("http://127.0.0.1:9/v1", model="m", max_retries=0)
  (r,) = run(c, reqs(1))
  assert SECRET not in repr(c) and SECRET not in (r.error or "") and SECRET not in str(c.stats)


def test_bridge_with_disk_cache_pays_once(server, tmp_path):
  path = str(tmp_path / "cache.sqlite")
  c1 = cloud(server.base_url, model="dacl-tiny")
  b1 = CloudBridge(c1, disk=ResponseCache(path))
  b1.register(reqs(3))
  first = b1.collect(["q0", "q1", "q2"])
  b1.close()
  assert b1.stats["billed_calls"] == 3 and c1.stats["http_requests"] == 3
  c2 = cloud(server.base_url, model="dacl-tiny")
  b2 = CloudBridge(c2, disk=ResponseCache(path))     # a rerun / resumed run: fresh memory cache
  b2.register(reqs(3))
  again = b2.collect(["q0", "q1", "q2"])
  b2.close()
  assert c2.stats["http_requests"] == 0 and b2.stats["billed_calls"] == 0
  assert b2.stats["disk_hits"] == 3 and b2.stats["cost"] == pytest.approx(b1.stats["cost"])
  assert [again[k].text for k in first] == [first[k].text for k in first]


def test_server_rejects_bad_requests_with_openai_errors(server):
  h = {"authorization": f"Bearer {SECRET}"}
  u = server.base_url
  cases = [
      ("post", "/completions", {"headers": h, "content": b"{not json"}, 400, None),
      ("post", "/completions", {"headers": h, "json": {"prompt": 5}}, 400, "prompt"),
      ("post", "/completions", {"headers": h, "json": {"prompt": "a", "temperature": "hot"}}, 400, "temperature"),
      ("post", "/completions", {"headers": h, "json": {"prompt": "a", "max_tokens": 10 ** 6}}, 400, "prompt"),
      ("post", "/completions", {"headers": h, "json": {"prompt": "a", "stream": "yes"}}, 400, "stream"),
      ("post", "/completions", {"headers": h, "json": {"prompt": "a", "model": "gpt-9"}}, 404, "model"),
      ("post", "/chat/completions", {"headers": h, "json": {"messages": []}}, 400, "messages"),
      ("post", "/chat/completions", {"headers": h, "json": {"messages": [{"role": "x"}]}}, 400, "messages[0].role"),
      ("post", "/completions", {"json": {"prompt": "a"}}, 401, None),
      ("get", "/completions", {"headers": h}, 405, None),
      ("get", "/nope", {"headers": h}, 404, None),
      ("post", "/completions", {"headers": h, "content": b"[" * 100_000 + b"]" * 100_000}, 400, None),
      ("post", "/completions", {"headers": h, "content": b'{"prompt": "' + b"a" * (2 << 20) + b'"}'}, 413, None),
      ("post", "/completions", {"headers": h, "content": iter([b"[" * 65536] * 40)}, 413, None),
      ("post", "/completions", {"headers": h, "content": b"\xff\xfe"}, 400, None),
      ("post", "/completions", {"headers": h, "content": b"[1, 2]"}, 400, None),
  ]
  for method, path, kw, status, param in cases:
    r = getattr(httpx, method)(u + path, timeout=10, **kw)
    assert r.status_code == status, (path, kw, r.text)
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["param"] == param
  r = httpx.post(u + "/completions", headers=h, timeout=10,
                 json={"prompt": ["1+1=", "2+2="], "max_tokens": 3, "n": 2, "temperature": 0.5})
  assert r.status_code == 200 and len(r.json()["choices"]) == 4
  assert r.json()["usage"]["completion_tokens"] == 12

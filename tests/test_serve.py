"""`dacl serve`: the CLI binds loopback, concurrent requests batch, SmolLM2 answers over HTTP, and
collaborative serving keeps the running cloud usage within τ and reports each route and cost."""
import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from dacl.cloud import make_cloud
from dacl.serve import ServerThread, build_app
from dacl.serve.collab import Collaborator
from dacl.serve.engine import Completion, GenParams, GenResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  return port


def test_cli_serves_on_loopback_and_batches_concurrent_requests():
  port = free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", "serve",
                        f"--config={ROOT}/configs/serve_tiny.py", "--port", str(port),
                        "--config.serve.batch_wait_ms=50"],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    lines = [p.stdout.readline()]
    while "dacl serve:" not in lines[-1] and lines[-1]:   # after the warm-up's log line
      lines.append(p.stdout.readline())
    assert f"http://127.0.0.1:{port}/v1" in lines[-1], lines
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
      try:
        if httpx.get(url + "/health", timeout=1).status_code == 200:
          break
      except httpx.TransportError:
        time.sleep(0.1)
    body = {"prompt": "3+4=", "max_tokens": 4, "temperature": 0}
    httpx.post(url + "/v1/completions", json=body, timeout=60)      # compile
    before = httpx.get(url + "/dacl/stats").json()["engine"]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
      outs = list(ex.map(lambda i: httpx.post(url + "/v1/completions", timeout=60,
                                              json={**body, "prompt": f"{i}+4="}), range(8)))
    assert all(o.status_code == 200 for o in outs)
    after = httpx.get(url + "/dacl/stats").json()["engine"]
    assert after["requests"] - before["requests"] == 8
    assert after["max_active"] > 1                                  # they shared decode steps
    assert after["steps"] - before["steps"] < 8 * 4
  finally:
    p.terminate()
    p.wait(10)


def test_serve_smollm2_chat_over_http():
  from configs.serve_smollm2 import get_config
  c = get_config()
  # the 1- and 4-row steps (10 more SmolLM2 compiles in the background) are tested on the tiny
  # model in tests/test_serve_stream.py
  c.serve.row_buckets = ()
  srv = ServerThread(build_app(c))
  try:
    r = httpx.post(srv.base_url + "/chat/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert "Paris" in out["choices"][0]["message"]["content"]
    assert out["usage"]["prompt_tokens"] > 10 and out["usage"]["completion_tokens"] <= 12
  finally:
    srv.close()


class FakeEngine:
  """Wants the cloud (marker) for every prompt unless the marker is banned."""
  def encode(self, prompt):
    return [1, 2, 3]

  def submit(self, ids, params):
    f = concurrent.futures.Future()
    c = Completion("local answer", 2, "stop") if params.ban_marker else Completion("", 1, "marker")
    f.set_result(GenResult(len(ids), [c]))
    return f


def test_collab_budget_routing_is_exact():
  cloud = make_cloud("simulated", seed=0)
  co = Collaborator(FakeEngine(), cloud, marker_ids=(9,), tau=0.3)
  routes = []
  for i in range(20):   # sequential: running usage after each request must stay within τ
    a = asyncio.run(co.answer(f"q{i}"))
    routes.append(a.route)
    assert a.usage_rate <= 0.3 + 1e-9
    assert (a.cost > 0) == (a.route == "cloud")
  assert routes.count("cloud") == 6 and routes.count("local_budget") == 14
  assert routes[:3] == ["local_budget"] * 3 and routes[3] == "cloud"
  dead = Collaborator(FakeEngine(), make_cloud("simulated", fail_rate=1.0), marker_ids=(9,), tau=1.0)
  a = asyncio.run(dead.answer("q"))
  assert a.route == "local_fallback" and a.result.completions[0].text == "local answer"
  assert dead.cloud_used == 0 and dead.stats["cloud_faults"] == 1   # a fault spends no budget


def test_collab_server_reports_route_and_cost():
  from configs.serve_tiny import get_config
  c = get_config()
  c.unlock()
  c.serve.collab = True
  c.budget.tau = 0.5
  srv = ServerThread(build_app(c))
  try:
    rs = [httpx.post(srv.base_url + "/completions", timeout=60,
                     json={"prompt": f"{i}*7=", "max_tokens": 6, "temperature": 1.0})
          for i in range(6)]
    for r in rs:
      assert r.status_code == 200, r.text
      d = r.json()["dacl"]
      assert d["route"] in ("local", "cloud", "local_budget", "local_fallback")
      assert r.headers["x-dacl-route"] == d["route"] and d["usage_rate"] <= 0.5 + 1e-9
    st = httpx.get(srv.base_url.replace("/v1", "") + "/dacl/stats").json()["collab"]
    assert sum(st[k] for k in ("local", "cloud", "local_budget", "local_fallback")) == 6
    r = httpx.post(srv.base_url + "/completions", json={"prompt": "1", "n": 2}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
  finally:
    srv.close()


def test_serve_restores_a_trained_policy(tmp_path):
  import jax
  import numpy as np
  from flax import nnx
  from configs.serve_tiny import get_config
  from dacl.build import build_model_and_tokenizer
  from dacl.serve import restore_policy
  from dacl.train.checkpoint import CheckpointError, Checkpointer
  from dacl.train.sft import init_train_state, make_optimizer
  c = get_config()
  trained, _ = build_model_and_tokenizer(c.model, seed=7)          # stands in for a trained run
  graphdef, state = init_train_state(trained, make_optimizer(3e-3, 100, 5, 0.1), 7)
  ck = Checkpointer(str(tmp_path / "checkpoints"))
  ck.save(5, state, {"note": "x"})
  ck.close()
  fresh, _ = build_model_and_tokenizer(c.model, seed=0)
  got = restore_policy(fresh, str(tmp_path / "checkpoints"))
  a, b = nnx.state(got, nnx.Param), nnx.state(trained, nnx.Param)
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  with pytest.raises(CheckpointError):
    restore_policy(fresh, str(tmp_path / "nothing_here"))

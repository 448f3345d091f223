"""Load test of `dacl serve` on loopback: the continuous engine against static batching, same run.

For each engine (`--engines`, default static then continuous) it starts `dacl serve` in a
subprocess (warm-up at start is the server's own), drives it with N concurrent streaming clients
(asyncio + httpx) for a bounded time, each request with a max_tokens drawn from `--max-tokens`
(mixed lengths: the case static batching handles worst), and prints one JSON line per
(engine, clients):
  {"bench": "serve_load", "engine", "clients", "rps", "tok_s", "p50_ms", "p99_ms",
   "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "errors", "start_s",
   "background_compile_s"}
then one line per client count with the continuous / static ratios (and continuous /
continuous-all, the engine with every step over all slots, and continuous-chunk / continuous,
the engine with 8 decode steps per call, when both ran). Latency is request start to
the last byte; TTFT is to the first content delta (the static engine sends a choice's text in
one piece when it is done, so its TTFT is its latency); TPOT is the time per output token after
the first (latency minus TTFT over tokens minus one). An untimed load at the same concurrency
runs first. start_s: seconds from launching the server to /health answering (model load +
warm-up); background_compile_s: seconds more until the continuous engine's 1- and 4-row steps
and chunked steps, compiled on a second thread after start, are all ready (no timed window
overlaps them).

  python benchmarks/serve_load.py                       # SmolLM2, 1/8/16/32 clients
  python benchmarks/serve_load.py --config configs/serve_tiny.py --clients 1,8 --seconds 5
  python benchmarks/serve_load.py --startup             # start-up: cold vs warm compile cache
  python benchmarks/serve_load.py --engines continuous-all,continuous --clients 1,4,8,16
  python benchmarks/serve_load.py --engines static,continuous,continuous-chunk --clients 1,4,16
"""
import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from common import ROOT, emit

PROMPTS = ["What is 12 plus 30?", "Name a primary colour.", "What is the capital of Italy?",
           "Count from one to five.", "What is 7 times 6?", "Give a synonym for happy."]


def free_port():
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  p = s.getsockname()[1]
  s.close()
  return p


ENGINES = {   # --engines name -> `dacl serve` overrides
    "static": ["--config.serve.engine=static"],
    "continuous": ["--config.serve.engine=continuous"],
    # every step over all slots (the engine before its 1- and 4-row steps)
    "continuous-all": ["--config.serve.engine=continuous", "--config.serve.row_buckets=()"],
    # 8 decode steps per call while no request waits (serve.decode_chunk; off by default)
    "continuous-chunk": ["--config.serve.engine=continuous", "--config.serve.decode_chunk=8"],
}


def start_server(config, engine, slots, env=None):
  port = free_port()
  t = time.perf_counter()
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", "serve", f"--config={config}",
                        "--port", str(port), *ENGINES[engine],
                        f"--config.serve.max_batch={slots}"], cwd=ROOT,
                       env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
                            **(env or {})},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  for _ in range(6000):
    if p.poll() is not None:
      raise RuntimeError(f"dacl serve exited with {p.returncode} (config {config})")
    try:
      if httpx.get(url + "/health", timeout=1).status_code == 200:
        return p, url, time.perf_counter() - t
    except httpx.TransportError:
      time.sleep(0.1)
  p.kill()
  raise RuntimeError("server did not start")


def wait_background_compiles(url, limit_s=900.0):
  """Seconds until the continuous engine's background-compiled row steps are all ready (0 for an
  engine without them), so that no timed window shares the cores with XLA."""
  t = time.perf_counter()
  while time.perf_counter() - t < limit_s:
    st = httpx.get(url + "/dacl/stats", timeout=5).json()["engine"]
    if st.get("small_steps_compiled", 0) + st.get("small_steps_failed", 0) >= st.get(
        "small_steps_queued", 0):
      return time.perf_counter() - t
    time.sleep(0.5)
  raise RuntimeError("background compiles did not finish")


async def one(c, url, prompt, max_tokens):
  """One streaming chat request -> (latency s, ttft s, completion tokens) or None."""
  t = time.perf_counter()
  ttft, tokens = None, 0
  body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
          "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
  async with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
    if r.status_code != 200:
      return None
    async for line in r.aiter_lines():
      if not line.startswith("data: ") or line == "data: [DONE]":
        continue
      ev = json.loads(line[6:])
      if ev.get("usage"):
        tokens = ev["usage"]["completion_tokens"]
      if ttft is None and any(ch.get("delta", {}).get("content") for ch in ev.get("choices", [])):
        ttft = time.perf_counter() - t
  lat = time.perf_counter() - t
  return lat, lat if ttft is None else ttft, tokens


async def load(url, clients, seconds, lengths, seed=0):
  rng = random.Random(seed)
  out, errors = [], 0
  stop = time.perf_counter() + seconds
  async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as c:
    async def client(i):
      nonlocal errors
      k = i
      while time.perf_counter() < stop:
        try:
          r = await one(c, url, PROMPTS[k % len(PROMPTS)], rng.choice(lengths))
        except httpx.HTTPError:
          r = None
        if r is None:
          errors += 1
        else:
          out.append(r)
        k += 1
    await asyncio.gather(*(client(i) for i in range(clients)))
  return out, errors


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", "serve_smollm2.py"))
  ap.add_argument("--engines", default="static,continuous",
                  help=f"comma-separated, from {sorted(ENGINES)}")
  ap.add_argument("--clients", default="1,8,16,32")
  ap.add_argument("--seconds", type=float, default=20.0)
  ap.add_argument("--warmup", type=float, default=6.0)
  ap.add_argument("--max-tokens", default="8,32,64", help="each request draws one of these")
  ap.add_argument("--slots", type=int, default=16, help="serve.max_batch")
  ap.add_argument("--startup", action="store_true",
                  help="only time the continuous server's start-up (load + warm-up) twice, with "
                       "a fresh persistent compilation cache: first run compiles, second reuses")
  a = ap.parse_args()
  a.config = os.path.abspath(a.config)
  lengths = [int(x) for x in a.max_tokens.split(",")]
  clients = [int(x) for x in a.clients.split(",")]
  if a.startup:
    import tempfile
    with tempfile.TemporaryDirectory() as cache:
      times = []
      for _ in range(2):
        proc, _, start_s = start_server(a.config, "continuous", a.slots,
                                        {"DACL_COMPILATION_CACHE_DIR": cache})
        proc.terminate()
        proc.wait(10)
        times.append(round(start_s, 1))
    emit(bench="serve_startup", config=os.path.basename(a.config), slots=a.slots,
         first_s=times[0], second_s=times[1])
    return
  rows = {}
  for eng in a.engines.split(","):
    proc, url, start_s = start_server(a.config, eng, a.slots)
    try:
      ready_s = wait_background_compiles(url)
      for n in clients:
        asyncio.run(load(url, n, a.warmup, lengths, seed=1))
        t = time.perf_counter()
        res, errors = asyncio.run(load(url, n, a.seconds, lengths))
        wall = time.perf_counter() - t
        lat = np.array([r[0] for r in res] or [np.nan]) * 1000
        ttft = np.array([r[1] for r in res] or [np.nan]) * 1000
        # time per output token after the first: latency spread with the length mix removed
        tpot = np.array([(r[0] - r[1]) / max(r[2] - 1, 1) for r in res if r[2] > 1] or [np.nan]) * 1000
        row = dict(bench="serve_load", config=os.path.basename(a.config), engine=eng, clients=n,
                   slots=a.slots, max_tokens=a.max_tokens, rps=round(len(res) / wall, 2),
                   tok_s=round(sum(r[2] for r in res) / wall, 1),
                   p50_ms=round(float(np.percentile(lat, 50)), 1),
                   p99_ms=round(float(np.percentile(lat, 99)), 1),
                   ttft_p50_ms=round(float(np.percentile(ttft, 50)), 1),
                   ttft_p99_ms=round(float(np.percentile(ttft, 99)), 1),
                   tpot_p50_ms=round(float(np.percentile(tpot, 50)), 1),
                   tpot_p99_ms=round(float(np.percentile(tpot, 99)), 1),
                   errors=errors, start_s=round(start_s, 1),
                   background_compile_s=round(ready_s, 1))
        rows[(eng, n)] = row
        emit(**row)
    finally:
      proc.terminate()
      proc.wait(10)
  for n in clients:
    s, c = rows.get(("static", n)), rows.get(("continuous", n))
    if rows.get(("continuous-all", n)) and c:
      emit(bench="serve_row_buckets_ratio", clients=n,
           tok_s_ratio=round(c["tok_s"] / max(rows[("continuous-all", n)]["tok_s"], 1e-9), 2))
    if rows.get(("continuous-chunk", n)) and c:
      emit(bench="serve_chunk_ratio", clients=n,
           tok_s_ratio=round(rows[("continuous-chunk", n)]["tok_s"] / max(c["tok_s"], 1e-9), 2))
    if s and c:
      emit(bench="serve_load_ratio", clients=n, tok_s_ratio=round(c["tok_s"] / max(s["tok_s"], 1e-9), 2),
           rps_ratio=round(c["rps"] / max(s["rps"], 1e-9), 2),
           continuous_p99_over_p50=round(c["p99_ms"] / c["p50_ms"], 2),
           ttft_p50_ratio=round(c["ttft_p50_ms"] / s["ttft_p50_ms"], 3))


if __name__ == "__main__":
  main()

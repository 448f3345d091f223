"""Load test of `dacl serve` on loopback: N concurrent clients for a bounded time.

Starts `dacl serve` in a subprocess (batched, and with --unbatched also with max_batch=1), drives
it from this process with asyncio + httpx, and prints one JSON line per (clients, max_batch):
{"bench": "serve_load", "clients": n, "max_batch": b, "rps": x, "p50_ms": y, "p99_ms": z,
 "errors": k, "mean_batch": m}. A warm-up at the same concurrency (not timed) compiles the buckets.

  python benchmarks/serve_load.py --config configs/serve_smollm2.py --clients 1,8,16 --unbatched
"""
import argparse
import asyncio
import os
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


def start_server(config, max_batch, wait_ms):
  port = free_port()
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", "serve", f"--config={config}",
                        "--port", str(port), f"--config.serve.max_batch={max_batch}",
                        f"--config.serve.batch_wait_ms={wait_ms}"], cwd=ROOT,
                       env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  for _ in range(1200):
    try:
      if httpx.get(url + "/health", timeout=1).status_code == 200:
        return p, url
    except httpx.TransportError:
      time.sleep(0.1)
  p.kill()
  raise RuntimeError("server did not start")


async def load(url, clients, seconds, max_tokens):
  lat, errors = [], 0
  stop = time.perf_counter() + seconds
  async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
    async def client(i):
      nonlocal errors
      k = i
      while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
          r = await c.post(url + "/v1/chat/completions", json={
              "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
              "max_tokens": max_tokens, "temperature": 0})
          ok = r.status_code == 200
        except httpx.HTTPError:
          ok = False
        if ok:
          lat.append(time.perf_counter() - t)
        else:
          errors += 1
        k += 1
    await asyncio.gather(*(client(i) for i in range(clients)))
  return lat, errors


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default=os.path.join(ROOT, "configs", "serve_smollm2.py"))
  ap.add_argument("--clients", default="1,8,16")
  ap.add_argument("--seconds", type=float, default=20.0)
  ap.add_argument("--warmup", type=float, default=8.0)
  ap.add_argument("--max-tokens", type=int, default=16)
  ap.add_argument("--max-batch", type=int, default=16)
  ap.add_argument("--wait-ms", type=float, default=5.0)
  ap.add_argument("--unbatched", action="store_true", help="also run with max_batch=1")
  a = ap.parse_args()
  for mb in ([a.max_batch, 1] if a.unbatched else [a.max_batch]):
    proc, url = start_server(a.config, mb, a.wait_ms)
    try:
      for n in (int(x) for x in a.clients.split(",")):
        asyncio.run(load(url, n, a.warmup, a.max_tokens))
        s0 = httpx.get(url + "/dacl/stats").json()["engine"]
        t = time.perf_counter()
        lat, errors = asyncio.run(load(url, n, a.seconds, a.max_tokens))
        wall = time.perf_counter() - t
        s1 = httpx.get(url + "/dacl/stats").json()["engine"]
        batches = max(s1["batches"] - s0["batches"], 1)
        ms = np.array(lat) * 1000 if lat else np.array([np.nan])
        emit(bench="serve_load", config=os.path.basename(a.config), clients=n, max_batch=mb,
             max_tokens=a.max_tokens, rps=round(len(lat) / wall, 2),
             p50_ms=round(float(np.percentile(ms, 50)), 1),
             p99_ms=round(float(np.percentile(ms, 99)), 1), errors=errors,
             mean_batch=round((s1["requests"] - s0["requests"]) / batches, 2))
    finally:
      proc.terminate()
      proc.wait(10)


if __name__ == "__main__":
  main()

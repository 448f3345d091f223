"""End to end over real HTTP: the main job with `--config.cloud.backend=openai` against `dacl serve`
(tiny model) through a fault-injecting proxy; killed with SIGKILL and resumed. Checks: the run
finishes with faults counted, results.json has the usual schema plus token usage, nothing was
paid twice (upstream completions == cached answers + malformed ones), the key appears nowhere.
The read timeout is generous on purpose: a client timeout on a slow but working upstream is
retried and *does* pay twice (at-least-once HTTP); the stall here ends in a dropped connection."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from dacl.serve import ServerThread, build_app
from dacl.serve.faults import FaultProxy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# F2's bare-answer job (configs/dagrpo_stream.py:answer): the mechanics, at their old cost
CFG = os.path.join(ROOT, "configs", "dagrpo_stream.py") + ":answer"
SECRET = "sk-e2e-DO-NOT-LEAK-91c2"
ARGS = ["--config.warmstart.steps=60", "--config.warmstart.examples_per_task=300",
        "--config.warmstart.offload_fraction=0.5", "--config.stream.steps=(4,4,4)",
        "--config.stream.train_size=200", "--config.eval.num_examples=8",
        "--config.rl.batch_prompts=4", "--config.rl.group=4", "--config.train.save_every=2",
        "--config.train.log_every=1", "--config.stream.post_switch_steps=2",
        "--config.cloud.backend=openai", "--config.cloud.mode=completions",
        "--config.cloud.max_tokens=6", "--config.cloud.model=dacl-tiny", "--config.cloud.api_key_env=DACL_E2E_KEY",
        "--config.cloud.read_timeout_s=60.0", "--config.cloud.backoff_base_s=0.05",
        "--config.cloud.price_prompt_per_1k=0.5", "--config.cloud.price_completion_per_1k=1.5",
        "--config.stream.space_draws=200"]


def test_main_job_against_dacl_serve_with_faults_and_resume(tmp_path):
  from configs.serve_tiny import get_config
  c = get_config()
  c.unlock()
  c.serve.api_key_env = "DACL_E2E_KEY"
  os.environ["DACL_E2E_KEY"] = SECRET
  srv = ServerThread(build_app(c))
  proxy = FaultProxy(srv.base_url, ["429:0.2", "500", "reset", "truncated", "stall",
                                    "latency:300", "truncated"], stall_s=3.0)
  wd = tmp_path / "run"
  args = ["-m", "dacl.cli", "train", f"--config={CFG}", f"--workdir={wd}", *ARGS,
          f"--config.cloud.base_url={proxy.base_url}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  logs = []
  try:
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    ck = wd / "runs" / "dagrpo_s0" / "checkpoints"
    deadline = time.time() + 400
    while time.time() < deadline and p.poll() is None:   # inside task 2
      if ck.exists() and any(d.isdigit() and int(d) >= 6 for d in os.listdir(ck)):
        break
      time.sleep(0.05)
    assert p.poll() is None, p.stdout.read()[-3000:]
    # Quiesce: hold every new request, let answers already upstream land, then SIGKILL.
    proxy.set_schedule(["stall"] * 10000)
    while proxy.inflight:
      time.sleep(0.02)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    logs.append(p.communicate()[0])
    proxy.set_schedule([])
    time.sleep(0.05)
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    logs += [r.stdout, r.stderr]
    assert r.returncode == 0, r.stderr[-3000:]
  finally:
    proxy.close()
    srv.close()
  res = json.load(open(wd / "results.json"))
  assert res["cloud"].startswith("openai-compatible endpoint")
  a = res["algorithms"]["dagrpo"]
  for key in ("R", "L", "U", "ACC", "BWT", "forgetting", "post_switch_accuracy",
              "usage_last_quarter", "cloud_calls"):
    assert key in a, key
  u = a["cloud_usage_sum"]
  assert a["cloud_calls"] > 0 and u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
  assert u["cost"] == pytest.approx(u["prompt_tokens"] / 1000 * 0.5 + u["completion_tokens"] / 1000 * 1.5)
  assert a["per_seed"][0]["cloud_faults"] >= 1 and u["backend_fault_malformed"] >= 1, (u, dict(proxy.counts))
  assert u["backend_retries"] >= 3                      # 429, 500, reset, stall were retried
  rows = [json.loads(l) for l in open(wd / "runs" / "dagrpo_s0" / "metrics.jsonl")]
  assert any(x.get("cloud_faults", 0) >= 1 for x in rows)
  # Nothing paid twice across the kill: every completion the server produced is either an
  # answer in the persistent cache or one of the deliberately truncated (unusable) bodies.
  db = sqlite3.connect(wd / "cloud_cache.sqlite")
  stored = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
  db.close()
  served = proxy.counts["forwarded POST /v1/completions"]
  assert proxy.counts["truncated"] == 2
  assert served == stored + proxy.counts["truncated"], (served, stored, dict(proxy.counts))
  # The key is in no file of the run and in no output.
  for root, _, files in os.walk(wd):
    for f in files:
      assert SECRET.encode() not in open(os.path.join(root, f), "rb").read(), f
  assert all(SECRET not in (s or "") for s in logs)

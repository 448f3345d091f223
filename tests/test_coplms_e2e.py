"""Co-PLMs end to end (shortened): every method on one code path with results.json in the issue's
schema; only proxy parameters cross the edge-cloud boundary and no raw example does; the same run
as 2 processes, one SIGKILLed after the first round, relaunched, resumes and equals the
uninterrupted one-process run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_multiprocess import free_port, launch_env, pid_of
from test_readme_commands import readme_train_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "coplms_domains.py")
SHORT = ["--config.coplms.rounds=2", "--config.coplms.edge_steps=3", "--config.coplms.cloud_steps=3",
         "--config.coplms.batch_size=8", "--config.eval.num_examples=8",
         "--config.coplms.private_size=32", "--config.coplms.public_per_domain=32",
         "--config.coplms.space_draws=100", "--config.coplms.answer_tokens=12"]


def _run(*args, **kw):
  return subprocess.run([sys.executable, "-m", "dacl.cli", *args], cwd=ROOT, capture_output=True,
                        text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=1200, **kw)


def test_all_methods_schema_and_resume(tmp_path):
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  r = _run(*readme_train_argv("coplms_domains.py", ref), *SHORT)   # the README's command
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(ref / "results.json"))
  assert [x["round"] for x in res["rounds"]] == [1, 2]
  for block in [res["final"]] + [res["baselines"][m] for m in ("standalone", "fedavg_proxy",
                                                              "direct_kd", "pooled")]:
    assert set(block["slms"]) == {"slm_llama", "slm_qwen2", "slm_qwen3_bpe"}
    for n, m in block["slms"].items():
      assert m["domain"] in ("reverse", "sort", "add") and 0 <= m["em"] <= 1 and 0 <= m["rouge_l"] <= 1
    assert set(block["llm"]) == {"reverse", "sort", "add"}
    assert all({"em", "rouge_l"} <= set(v) for v in block["llm"].values())
  assert isinstance(res["bytes_per_round"], int) and isinstance(res["bytes_full_models"], int)
  assert 0 < res["bytes_per_round"] < res["bytes_full_models"]
  by = res["bytes_per_round_by_method"]
  assert by["standalone"] == by["pooled"] == 0 and by["direct_kd"] > by["coplms"]
  assert all(d["eval_train_overlap"] == 0 for d in res["data"]["s0"].values())
  assert all(set(x["wall_s"]) == {"edge", "cloud", "eval"} for x in res["rounds"])
  assert (ref / "plots" / "coplms_rounds.png").exists() and "Co-PLMs" in r.stdout

  # Co-PLMs alone as 2 jax.distributed processes (launch/local_multiprocess.sh), one SIGKILLed
  # after the first round's checkpoint, then relaunched: it resumes and equals the one-process
  # run (the proxies cross through process-gathered parameters, dacl/coplms/protocol.py)
  launch = ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc", "2",
            "--port", str(free_port()), CFG, str(cut), *SHORT, "--config.coplms.methods=('coplms',)"]
  log = open(tmp_path / "first_launch.log", "w")   # both processes' output, for a failure
  p = subprocess.Popen(launch, cwd=ROOT, env=launch_env(), stdout=log, stderr=subprocess.STDOUT)
  ck = cut / "runs" / "coplms_s0" / "checkpoints"
  deadline = time.time() + 900
  while time.time() < deadline and p.poll() is None and not (ck / "1" / "commit_success.txt").exists():
    time.sleep(0.05)
  assert p.poll() is None, (tmp_path / "first_launch.log").read_text()[-3000:]
  os.kill(pid_of(1, cut), signal.SIGKILL)
  assert p.wait(timeout=120) != 0                 # the launcher stopped process 0 too
  log.close()
  assert not (cut / "results.json").exists() and (ck / "1").exists()
  r = subprocess.run(launch, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=1200)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed" in r.stderr and r.stdout.count("results:") == 1
  res2 = json.load(open(cut / "results.json"))
  assert res2["final"] == res["final"]
  assert [x["bytes"] for x in res2["rounds"]] == [x["bytes"] for x in res["rounds"]]
  losses = lambda wd: [{k: v for k, v in x.items() if k.startswith("loss")}
                       for x in map(json.loads, open(wd / "runs" / "coplms_s0" / "metrics.jsonl"))]
  a, b = losses(ref), losses(cut)
  assert len(a) == len(b) == 2                    # written once, by process 0
  for x, y in zip(a, b):
    assert y == pytest.approx(x, abs=1e-5)


def test_only_proxy_parameters_cross_and_no_raw_example_does(tmp_path):
  from dacl.build import build_task
  from dacl.cli import parse_config
  from dacl.coplms import job
  from dacl.coplms.protocol import ProxyMessage, Transport, flatten
  cfg, _ = parse_config([f"--config={CFG}", f"--workdir={tmp_path}", *SHORT,
                         "--config.coplms.rounds=1"])
  tasks = [build_task(t) for t in cfg.coplms.domains]
  data = job.domain_data(cfg, tasks, 0)
  transport = Transport(keep_payloads=True)
  job.run_method(cfg, str(tmp_path / "run"), "coplms", 0, tasks, data, transport=transport)
  assert {x["direction"] for x in transport.log} == {"up", "down"}
  assert len(transport.log) == 2 * len(tasks)
  dpm = job.build_party("dpm", cfg.coplms.dpm, 0, 1, cfg.optim)
  keys = set(flatten(dpm.state.params))
  secrets = {s.encode() for p in data["private"] for e in p for s in (e.prompt, e.answer)
             if len(s) >= 6}
  for x in transport.log:
    msg = ProxyMessage.from_bytes(x["payload"])
    assert set(msg.params) == keys, "something other than the proxy's parameters crossed"
    assert not any(s in x["payload"] for s in secrets), "a raw example crossed"

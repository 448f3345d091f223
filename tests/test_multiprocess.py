"""Two local processes under jax.distributed (CPU collectives, coordinator on 127.0.0.1), started
by launch/local_multiprocess.sh: SFT and DA-GRPO equal the single-process run, process 0 alone
writes the run's files and calls the cloud, and a rerun resumes from the checkpoint both
processes saved (after a SIGKILL, for DA-GRPO)."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "sft_arith.py")
SMALL = ["--config.train.eval_every=0", "--config.eval.num_examples=16",
         "--config.train.log_every=1", "--config.train.save_every=2", "--config.train.batch_size=16"]


def launch_env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "DACL": f"{sys.executable} -m dacl.cli",
          "PYTHONPATH": ROOT}


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(wd, *args):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc",
                         "2", "--port", str(free_port()), CFG, str(wd), *SMALL, *args],
                        capture_output=True, text=True, env=launch_env(), cwd=ROOT, timeout=600)


def _one_process(wd, *args):
  return subprocess.run([sys.executable, "-m", "dacl.cli", "train", f"--config={CFG}",
                         f"--workdir={wd}", *SMALL, *args], capture_output=True, text=True,
                        env=launch_env(), cwd=ROOT, timeout=600)


def _losses(wd):
  return [(r["step"], r["loss"]) for r in map(json.loads, open(wd / "metrics.jsonl"))]


def test_two_processes_match_one_and_resume(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  r = _one_process(one, "--config.train.steps=6")
  assert r.returncode == 0, r.stderr[-2000:]
  r = _two_processes(two, "--config.train.steps=4")
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count("results:") == 1            # one report, from process 0
  rows = _losses(two)
  assert [s for s, _ in rows] == [1, 2, 3, 4]        # written once, not once per process
  ref = dict(_losses(one))
  for s, loss in rows:                               # the batch is split over the 2 processes
    assert loss == pytest.approx(ref[s], abs=1e-5), s
  assert sorted(os.listdir(two / "checkpoints")) == ["2", "4"]
  # rerun with more steps: both processes restore step 4 and continue
  r = _two_processes(two, "--config.train.steps=6")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from" in r.stderr
  rows = _losses(two)
  assert [s for s, _ in rows] == [1, 2, 3, 4, 5, 6]
  for s, loss in rows:
    assert loss == pytest.approx(ref[s], abs=1e-5), s
  assert json.load(open(two / "results.json"))["steps"] == 6


# the main job's config on its earlier stream (add2 -> mul -> mixed3): the same code path as the
# default add3 -> mul4 -> mixed4, with rows of 40 tokens instead of 56
DAGRPO = os.path.join(ROOT, "configs", "dagrpo_stream.py") + ":scratch"
DAGRPO_SMALL = ["--config.warmstart.steps=20", "--config.warmstart.examples_per_task=100",
                "--config.warmstart.marker_on=random", "--config.warmstart.offload_fraction=0.5",
                "--config.stream.steps=(2,2,2)", "--config.stream.train_size=64",
                "--config.stream.local_eval_every=0", "--config.stream.post_switch_steps=1",
                "--config.eval.num_examples=8", "--config.rl.batch_prompts=4",
                "--config.rl.group=4", "--config.train.save_every=2", "--config.train.log_every=1",
                "--config.cloud.backend=openai", "--config.cloud.mode=completions",
                "--config.cloud.max_tokens=4", "--config.cloud.model=dacl-tiny",
                "--config.cloud.read_timeout_s=60.0", "--config.stream.space_draws=200"]


def pid_of(process_id: int, workdir) -> int:
  """The pid of one `dacl train` process of a local multi-process run (by its environment)."""
  for d in os.listdir("/proc"):
    if not d.isdigit():
      continue
    try:
      cmd = open(f"/proc/{d}/cmdline", "rb").read()
      env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
    except OSError:
      continue
    if f"--workdir={workdir}".encode() in cmd and f"DACL_PROCESS_ID={process_id}".encode() in env:
      return int(d)
  raise LookupError(f"process {process_id} of {workdir} is not running")


def test_dagrpo_two_processes_call_the_cloud_once_match_one_and_resume_after_sigkill(tmp_path):
  """DA-GRPO (the main job's config, shortened) over 2 processes against an HTTP cloud that
  counts requests: process 0 calls, the answers are broadcast (dacl/cloud/multihost.py), so the
  cloud sees exactly the single-process run's requests; process 1 is SIGKILLed after the first
  checkpoint and the rerun launch resumes both processes and ends equal to the one-process run."""
  import signal
  import time
  from configs.serve_tiny import get_config
  from dacl.serve import ServerThread, build_app
  from dacl.serve.faults import FaultProxy
  srv = ServerThread(build_app(get_config()))
  proxy = FaultProxy(srv.base_url)
  one, two = tmp_path / "one", tmp_path / "two"
  args = [*DAGRPO_SMALL, f"--config.cloud.base_url={proxy.base_url}"]
  launch = ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc", "2",
            "--port", str(free_port()), DAGRPO, str(two), *args]
  try:
    r = subprocess.run([sys.executable, "-m", "dacl.cli", "train", f"--config={DAGRPO}",
                        f"--workdir={one}", *args], capture_output=True, text=True, env=launch_env(),
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    calls_one = proxy.counts["forwarded"]
    assert calls_one > 0
    p = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=launch_env(), cwd=ROOT)
    ck = two / "runs" / "dagrpo_s0" / "checkpoints"
    deadline = time.time() + 500
    while time.time() < deadline and p.poll() is None and not (ck.exists() and "2" in os.listdir(ck)):
      time.sleep(0.05)
    assert p.poll() is None, p.stdout.read()[-3000:]
    proxy.set_schedule(["stall"] * 10000)    # hold new requests; answers upstream land first
    while proxy.inflight:
      time.sleep(0.02)
    os.kill(pid_of(1, two), signal.SIGKILL)
    out = p.communicate(timeout=120)[0]
    assert p.returncode != 0, out[-2000:]      # the launcher stopped process 0 too
    proxy.set_schedule([])
    r = subprocess.run(launch, capture_output=True, text=True, env=launch_env(), cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
  finally:
    proxy.close()
    srv.close()
  # each prompt's request happened once globally: the single-process run's count, not twice it
  assert proxy.counts["forwarded"] - calls_one == calls_one
  assert "resumed dagrpo from" in r.stderr and r.stdout.count("results:") == 1
  run = lambda wd: [json.loads(x) for x in open(wd / "runs" / "dagrpo_s0" / "metrics.jsonl")]
  a, b = run(one), run(two)
  assert [x["step"] for x in b] == [x["step"] for x in a]   # process 0 alone wrote, no repeats
  for x, y in zip(a, b):
    for k in ("reward_mean", "cloud_rate", "local_acc", "lambda"):
      if k in x:
        assert y[k] == pytest.approx(x[k], abs=1e-6), (x["step"], k)
    if "loss" in x:
      assert y["loss"] == pytest.approx(x["loss"], abs=1e-5), x["step"]
  ra, rb = (json.load(open(wd / "results.json"))["algorithms"]["dagrpo"] for wd in (one, two))
  assert rb["R"] == ra["R"] and rb["L"] == ra["L"] and rb["cloud_calls"] == ra["cloud_calls"]

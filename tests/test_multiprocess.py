"""Two local processes under jax.distributed (CPU collectives, coordinator on 127.0.0.1), started
by launch/local_multiprocess.sh: SFT equals the single-process run, process 0 alone writes the
run's files, and a rerun resumes from the checkpoint both processes saved."""
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


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "DACL": f"{sys.executable} -m dacl.cli",
          "PYTHONPATH": ROOT}


def _port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(wd, *args):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc",
                         "2", "--port", str(_port()), CFG, str(wd), *SMALL, *args],
                        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)


def _one_process(wd, *args):
  return subprocess.run([sys.executable, "-m", "dacl.cli", "train", f"--config={CFG}",
                         f"--workdir={wd}", *SMALL, *args], capture_output=True, text=True,
                        env=_env(), cwd=ROOT, timeout=600)


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


def test_single_process_jobs_refuse_multiprocess(tmp_path):
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc",
                      "2", "--port", str(_port()), os.path.join(ROOT, "configs", "dagrpo_stream.py"),
                      str(tmp_path)], capture_output=True, text=True, env=_env(), cwd=ROOT,
                     timeout=300)
  assert r.returncode == 2 and "multi-process runs support ['sft']" in r.stderr

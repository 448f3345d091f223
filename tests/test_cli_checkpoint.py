"""CLI config handling, strict checkpoint errors, and SIGKILL mid-run + resume == uninterrupted."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "sft_arith.py")
SMALL = ["--config.train.steps=24", "--config.train.batch_size=16", "--config.train.log_every=2",
         "--config.train.eval_every=12", "--config.train.save_every=4", "--config.task.train_size=400",
         "--config.eval.num_examples=16", "--config.eval.batch_size=16",
         "--config.model.max_seq_len=64"]


def dacl(*args, **kw):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.run([sys.executable, "-m", "dacl.cli", *args], capture_output=True, text=True,
                        env=env, cwd=ROOT, **kw)


def test_unknown_key_wrong_type_missing_config(tmp_path):
  r = dacl("train", f"--config={CFG}", f"--workdir={tmp_path}", "--config.train.stepz=3")
  assert r.returncode == 2 and "unknown config key" in r.stderr and "steps" in r.stderr
  assert "Traceback" not in r.stderr
  r = dacl("train", f"--config={CFG}", f"--workdir={tmp_path}", "--config.train.steps=abc")
  assert r.returncode == 2 and "config.train.steps" in r.stderr and "Traceback" not in r.stderr
  r = dacl("train", "--config=configs/nope.py", f"--workdir={tmp_path}")
  assert r.returncode == 2 and "config file not found" in r.stderr
  r = dacl("train", f"--config={CFG}")
  assert r.returncode == 2 and "--workdir" in r.stderr
  r = dacl("report", str(tmp_path / "none"))
  assert r.returncode == 2 and "results.json not found" in r.stderr


def _metrics(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [{k: v for k, v in r.items() if k not in ("steps_per_s", "tokens_per_s")} for r in rows]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  r = dacl("train", f"--config={CFG}", f"--workdir={ref}", *SMALL)
  assert r.returncode == 0, r.stderr[-2000:]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", "train", f"--config={CFG}",
                        f"--workdir={cut}", *SMALL], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Kill once a checkpoint past step 8 exists but before the run ends.
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit()] \
        if (cut / "checkpoints").exists() else []
    if any(s >= 12 for s in steps if s < 24):
      break
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert not (cut / "results.json").exists(), "run finished before it could be killed"
  r = dacl("train", f"--config={CFG}", f"--workdir={cut}", *SMALL)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from" in r.stderr
  assert _metrics(cut) == _metrics(ref)
  kept = sorted(int(d) for d in os.listdir(ref / "checkpoints") if d.isdigit())
  assert kept == [16, 20, 24]   # save every 4 steps, keep 3
  a, b = json.load(open(ref / "results.json")), json.load(open(cut / "results.json"))
  assert a["accuracy"] == b["accuracy"] and a["examples"] == b["examples"]
  # eval of the final checkpoint reproduces the run's accuracy
  r = dacl("eval", f"--config={CFG}", f"--workdir={ref}", *SMALL)
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.load(open(ref / "eval_step24.json"))["accuracy"] == a["accuracy"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  wd = tmp_path / "run"
  args = [f"--config={CFG}", f"--workdir={wd}", *SMALL[1:], "--config.train.steps=4"]
  assert dacl("train", *args).returncode == 0
  state_dir = wd / "checkpoints" / "4" / "state"
  for root, _, files in os.walk(state_dir):
    for f in files:
      if f != "commit_success.txt":
        with open(os.path.join(root, f), "r+b") as fh:
          fh.truncate(3)
  r = dacl("train", *args)
  assert r.returncode == 2 and "corrupt" in r.stderr and str(wd / "checkpoints" / "4") in r.stderr
  r = dacl("eval", f"--config={CFG}", f"--workdir={tmp_path / 'empty'}")
  assert r.returncode == 2 and "does not exist" in r.stderr

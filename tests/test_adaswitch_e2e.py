"""AdaSwitch end to end (shortened): the three stages and the evaluation write results.json in the
issue's schema; the same run as 2 processes, one SIGKILLed during stage 3, relaunched, resumes and
equals the uninterrupted one-process run;
`dacl eval` and `dacl report` work on the run directory."""
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
CFG = os.path.join(ROOT, "configs", "adaswitch_arith.py")
SHORT = ["--config.stage1.steps=16", "--config.stage1.examples_per_task=64",
         "--config.stage1.batch_size=8", "--config.stage2.questions_per_task=8",
         "--config.stage3.steps=12", "--config.stage3.batch_size=8", "--config.train.save_every=4",
         "--config.eval.num_examples=4", "--config.adaswitch.batch_rows=16",
         "--config.adaswitch.space_draws=200", "--config.adaswitch.max_steps=6",
         "--config.adaswitch.thresholds=(0.3,0.7)",
         "--config.adaswitch.calib_per_task=8"]


def _cmd(*args):
  return [sys.executable, "-m", "dacl.cli", *args]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_adaswitch_job_schema_resume_eval_report(tmp_path):
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  r = subprocess.run(_cmd(*readme_train_argv("adaswitch_arith.py", ref), *SHORT), cwd=ROOT,
                     env=_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(ref / "results.json"))
  for mode in ("local", "self_reflection", "adaswitch", "cloud"):
    m = res["modes"][mode]
    assert isinstance(m["accuracy"], float) and 0 <= m["accuracy"] <= 1
    assert all(isinstance(m[k], int) for k in ("cloud_calls", "local_tokens", "cloud_tokens"))
    assert isinstance(m["flops"], float) and m["flops"] > 0
  assert res["modes"]["local"]["cloud_tokens"] == res["modes"]["self_reflection"]["cloud_tokens"] == 0
  assert res["modes"]["cloud"]["local_tokens"] == 0 and res["modes"]["cloud"]["cloud_calls"] > 0
  for a in ("no_cloud", "no_reflection", "no_reflective_learning"):
    assert {"accuracy", "cloud_tokens"} <= set(res["ablations"][a])
  assert res["ablations"]["no_cloud"]["cloud_tokens"] == 0
  assert [s["threshold"] for s in res["threshold_sweep"]] == [0.3, 0.7]
  assert all({"accuracy", "cloud_tokens"} <= set(s) for s in res["threshold_sweep"])
  seed = res["per_seed"][0]
  assert set(seed["calibration"]) >= {"auroc", "threshold", "n_steps", "n_wrong"}
  assert seed["threshold"] == (seed["calibration"]["threshold"] if seed["calibration"]["threshold"]
                               is not None else 0.5)
  assert all(d["eval_train_overlap"] == 0 for d in seed["data"].values())
  assert seed["stage2"]["questions"] > 0
  assert (ref / "plots" / "adaswitch_tradeoff.png").exists()
  assert "adaswitch" in r.stdout and "threshold sweep" in r.stdout

  # The same run as 2 jax.distributed processes (launch/local_multiprocess.sh), one of them
  # SIGKILLed during stage 3 (after its first checkpoint), then relaunched: equal to the
  # uninterrupted one-process run, cloud usage included (saved with each finished stage); process
  # 0 alone wrote the run's files, and every process read stage 2 back through it.
  launch = ["bash", os.path.join(ROOT, "launch", "local_multiprocess.sh"), "--nproc", "2",
            "--port", str(free_port()), CFG, str(cut), *SHORT]
  log = open(tmp_path / "first_launch.log", "w")   # both processes' output, for a failure
  p = subprocess.Popen(launch, cwd=ROOT, env=launch_env(), stdout=log, stderr=subprocess.STDOUT)
  ck = cut / "runs" / "s0" / "stage3" / "checkpoints"
  deadline = time.time() + 900
  while time.time() < deadline and p.poll() is None and not (ck / "4" / "commit_success.txt").exists():
    time.sleep(0.05)
  assert p.poll() is None, (tmp_path / "first_launch.log").read_text()[-3000:]
  os.kill(pid_of(1, cut), signal.SIGKILL)
  assert p.wait(timeout=120) != 0                 # the launcher stopped process 0 too
  log.close()
  assert not (cut / "results.json").exists() and (cut / "runs" / "s0" / "stage2" / "trajectories.jsonl").exists()
  stage2 = (cut / "runs" / "s0" / "stage2" / "trajectories.jsonl").stat().st_mtime
  r = subprocess.run(launch, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.count("results:") == 1            # one report, from process 0
  assert (cut / "runs" / "s0" / "stage2" / "trajectories.jsonl").stat().st_mtime == stage2   # not redone
  res2 = json.load(open(cut / "results.json"))
  strip = lambda m: {k: v for k, v in m.items() if k != "wall_s"}
  for mode in res["modes"]:
    assert strip(res2["per_seed"][0]["modes"][mode]) == strip(seed["modes"][mode]), mode
  assert res2["threshold_sweep"] == res["threshold_sweep"]
  assert res2["per_seed"][0]["stage2"] == {**seed["stage2"], "wall_s": res2["per_seed"][0]["stage2"]["wall_s"]}
  assert res2["per_seed"][0]["cloud_usage"] == seed["cloud_usage"]
  # a rerun of the finished run reads every stage and evaluation back and changes nothing
  r = subprocess.run(launch, cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.load(open(cut / "results.json")) == res2

  r = subprocess.run(_cmd("eval", f"--config={CFG}", f"--workdir={ref}", *SHORT), cwd=ROOT,
                     env=_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  ev = json.load(open(ref / "eval.json"))["runs"]["s0"]
  assert ev["modes"]["local"]["accuracy"] == pytest.approx(seed["modes"]["local"]["accuracy"])
  r = subprocess.run(_cmd("report", str(ref)), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert r.returncode == 0 and "ablations" in r.stdout

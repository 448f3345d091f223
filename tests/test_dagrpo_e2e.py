"""End to end: λ moves against the budget, every algorithm runs on the same path, and a stream
resumed after SIGKILL equals an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# F2's bare-answer job (configs/dagrpo_stream.py:answer): the mechanics, at their old cost
CFG = os.path.join(ROOT, "configs", "dagrpo_stream.py") + ":answer"
SMALL = ["--config.warmstart.steps=60", "--config.warmstart.examples_per_task=300",
         "--config.stream.steps=(6,6,6)", "--config.stream.train_size=200",
         "--config.eval.num_examples=16", "--config.rl.batch_prompts=4", "--config.rl.group=4",
         "--config.train.save_every=3", "--config.train.log_every=1",
         "--config.stream.post_switch_steps=2", "--config.stream.space_draws=200"]


def test_main_job_formats():
  from configs.dagrpo_stream import get_config
  fmts = lambda c: {t.kwargs.solution_format for t in c.stream.tasks}
  names = lambda c: [t.kwargs.name for t in c.stream.tasks]
  assert names(get_config()) == ["add3", "mul4", "mixed4"] == names(get_config("spread"))
  assert names(get_config("scratch")) == ["add2", "mul", "mixed3"]
  assert fmts(get_config()) == fmts(get_config("scratch")) == {"scratch"}
  assert fmts(get_config("answer")) == {"answer"}
  assert get_config("answer").rl.lr > get_config().rl.lr
  assert get_config().warmstart.marker_on == "budget"            # self-knowledge SFT, at most ⌊τn⌋
  assert get_config("scratch").warmstart.marker_on == "failures"
  assert get_config("answer").warmstart.marker_on == "random"
  with pytest.raises(ValueError, match="scratch"):
    get_config("scratchpad")


def dacl(*args, **kw):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "dacl.cli", *args], capture_output=True, text=True,
                        env=env, cwd=ROOT, **kw)


def _rows(wd, algo="dagrpo"):
  path = os.path.join(wd, "runs", f"{algo}_s0", "metrics.jsonl")
  return [json.loads(l) for l in open(path)]


def test_lambda_follows_usage_against_tau(tmp_path):
  # τ = 0.5 with a warm start that offloads often (60% marker demos): usage starts above τ, so the
  # dual-ascent (integral) term must rise; with a large K_i it overshoots and usage falls below τ,
  # where it must fall. λ itself is the PI output max(0, I + K_p(u − τ)).
  kp = 1.5
  r = dacl("train", f"--config={CFG}", f"--workdir={tmp_path}", *SMALL,
           "--config.warmstart.offload_fraction=0.6", "--config.budget.tau=0.5",
           "--config.rl.lam_lr=2.0", f"--config.rl.lam_kp={kp}", "--config.rl.lr=3e-3",
           "--config.stream.local_eval_every=4")
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [x for x in _rows(tmp_path) if "lambda" in x and "event" not in x]
  assert len(rows) == 18
  i_prev = 0.0
  moved_up = moved_down = False
  for x in rows:
    i = x["lambda_integral"]
    if x["cloud_rate"] > 0.5:
      assert i > i_prev, x
      moved_up = True
    elif x["cloud_rate"] < 0.5 and i_prev > 0:
      assert i < i_prev or i == 0.0, x
      moved_down = True
    assert x["lambda"] == pytest.approx(max(0.0, i + kp * (x["cloud_rate"] - 0.5)), abs=1e-5)
    i_prev = i
  assert moved_up and moved_down   # both directions were exercised, not just computed
  res = json.load(open(tmp_path / "results.json"))
  a = res["algorithms"]["dagrpo"]
  assert res["tasks"] == ["add2", "mul", "mixed3"] and res["budget"] == 0.5
  assert np.asarray(a["R"]).shape == (3, 3) and np.asarray(a["U"]).shape == (3, 3)
  for key in ("ACC", "BWT", "forgetting", "post_switch_accuracy", "usage_last_quarter", "cloud_calls"):
    assert key in a
  assert all(0 <= u <= 1 for row in a["U"] for u in row)
  assert all(u <= 0.5 + 1e-9 for row in a["U_cap"] for u in row)   # the hard cap holds
  # offload quality (F8): per task, before RL and after the stream
  assert len(a["L_init"]) == 3 and a["offload_score"] == "policy_marker"
  for key in ("offload_auroc", "offload_auroc_init"):
    assert len(a[key]) == 3 and all(v is None or 0 <= v <= 1 for v in a[key])
  for b in a["acc_at_budget"] + a["acc_at_budget_init"]:
    assert b["oracle"] >= max(b["policy"], b["random"]) - 1e-9
  # L_gain: task k's held-out problems right after training on it, paired with the warm start's
  for k, g in enumerate(a["L_gain"]):
    assert g["delta"] == pytest.approx(a["L"][k][k] - a["L_init"][k], abs=1e-9)
    assert g["n"] == 16 and 0 <= g["p"] <= 1 and g["gained"] + g["lost"] <= g["n"]
  # L over steps: every 4 steps and at each task's end, every task; the curve's point at a
  # task's last step is the same greedy evaluation as that task's row of L
  curve = a["per_seed"][0]["L_over_steps"]
  assert [p[0] for p in curve] == [0, 4, 6, 8, 12, 16, 18]
  assert curve[0][1] == a["L_init"] and all(len(p[1]) == 3 for p in curve)
  for row, step in enumerate((6, 12, 18)):
    assert dict(curve)[step] == pytest.approx(a["L"][row], abs=1e-9)
  assert a["L_over_steps"] == [[s, pytest.approx(v, abs=1e-4)] for s, v in curve]
  r = dacl("report", str(tmp_path))
  assert r.returncode == 0 and "ACC" in r.stdout
  assert (tmp_path / "plots" / "lambda.png").exists()
  assert (tmp_path / "plots" / "dynamics_dagrpo.png").exists()
  # dacl eval on the final checkpoint reproduces the last row of R (same greedy eval, same cache)
  r = dacl("eval", f"--config={CFG}", f"--workdir={tmp_path}", *SMALL,
           "--config.warmstart.offload_fraction=0.6", "--config.budget.tau=0.5")
  assert r.returncode == 0, r.stderr[-3000:]
  ev = json.load(open(tmp_path / "eval.json"))["runs"]["dagrpo_s0"]
  assert [x["R"] for x in ev["per_task"]] == pytest.approx(a["R"][-1], abs=1e-4)


def test_all_algorithms_share_the_path(tmp_path):
  small = [a for a in SMALL if not a.startswith("--config.stream.steps")]
  r = dacl("train", f"--config={CFG}", f"--workdir={tmp_path}", *small,
           "--config.stream.steps=(2,2,2)",
           "--config.algorithms=('grpo_local','shaped','random_offload','router','cloud_only','local_only')")
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))["algorithms"]
  assert set(res) == {"grpo_local", "shaped", "random_offload", "router", "cloud_only", "local_only"}
  assert all(u == 0 for row in res["grpo_local"]["U"] for u in row)
  assert all(u == 0 for row in res["local_only"]["U"] for u in row)
  assert all(u == 1 for row in res["cloud_only"]["U"] for u in row)
  assert res["local_only"]["R"] == res["local_only"]["L"]
  # the offload report fetched cloud answers for every problem; they are not the run's usage
  assert res["local_only"]["cloud_calls"] == 0 and res["grpo_local"]["cloud_calls"] == 0
  assert res["random_offload"]["offload_score"] == "random"
  assert res["router"]["offload_score"] == "router"
  assert res["local_only"]["L_init"] == res["local_only"]["L"][-1]   # no training: unchanged
  assert all(g == {"delta": 0.0, "gained": 0, "lost": 0, "n": g["n"], "p": 1.0}
             for g in res["local_only"]["L_gain"])
  # on-policy at the first step (θ = θ_old): the ratio is 1 and nothing is clipped, also where
  # the marker was banned while sampling (it was 1 − p(marker) before the trainer banned it too)
  for algo in ("grpo_local", "shaped", "random_offload", "router"):
    first = next(x for x in _rows(tmp_path, algo) if "clip_frac" in x)
    assert first["step"] == 1 and first["clip_frac"] == 0.0, (algo, first)
  # random offload routes about τ of the prompts (16 eval prompts: loose bounds)
  assert 0.0 < np.mean(res["random_offload"]["U"]) < 0.7


def test_resume_mid_stream_equals_uninterrupted(tmp_path):
  # With rl.pipeline (one-step-off-policy rollouts): the pipeline drains before each checkpoint,
  # so a resumed stream still equals an uninterrupted one.
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  SMALL = [*globals()["SMALL"], "--config.rl.pipeline=True", "--config.stream.local_eval_every=4"]
  assert dacl("train", f"--config={CFG}", f"--workdir={ref}", *SMALL).returncode == 0
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", "train", f"--config={CFG}",
                        f"--workdir={cut}", *SMALL], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ck = cut / "runs" / "dagrpo_s0" / "checkpoints"
  deadline = time.time() + 300
  # Task 2 (mul) is global steps 7..12; its first checkpoint is step 9, and the end-of-task
  # checkpoint 12 (written after the evaluation of all three tasks) already belongs to task 3.
  while time.time() < deadline:
    if (ck / "9" / "commit_success.txt").exists():
      break
    time.sleep(0.02)
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert not (cut / "results.json").exists()
  steps = sorted(int(d) for d in os.listdir(ck) if d.isdigit())
  record = json.load(open(ck / str(steps[-1]) / "record" / "metadata"))
  assert steps[-1] in (9, 12) and record["task_index"] == 1, (steps, record["task_index"])
  rows = _rows(cut)
  assert rows and rows[-1]["task"] == "mul", rows[-1]   # killed inside task 2, as intended
  r = dacl("train", f"--config={CFG}", f"--workdir={cut}", *SMALL)
  assert r.returncode == 0, r.stderr[-3000:]
  strip = lambda rows: [{k: v for k, v in x.items() if k not in ("steps_per_s", "tokens_per_s")}
                        for x in rows]
  assert strip(_rows(cut)) == strip(_rows(ref))
  a = json.load(open(ref / "results.json"))["algorithms"]["dagrpo"]
  b = json.load(open(cut / "results.json"))["algorithms"]["dagrpo"]
  for key in ("R", "L", "U", "ACC", "BWT", "post_switch_accuracy", "usage_last_quarter",
              "L_over_steps"):
    assert a[key] == b[key], key


# configs/dagrpo_smollm2_gsm.py (SmolLM2-135M-Instruct, GSM tasks, text-tag marker, chat template)
# runs for one RL step per task in tests/test_readme_commands.py, as the README documents it.


def test_arith_to_code_stream_with_forgetting_options(tmp_path):
  """The arithmetic → code stream (warm start on the first task only; the code task's rewards
  run in the sandbox) with every forgetting option on: replay, λ reset, KL to the previous
  task's policy; and dynamic sampling (twice the prompts drawn, half kept)."""
  cfg = os.path.join(ROOT, "configs", "stream_arith_code.py")
  small = [a for a in SMALL if not a.startswith("--config.stream.steps")]
  r = dacl("train", f"--config={cfg}", f"--workdir={tmp_path}", *small,
           "--config.stream.steps=(3,3)", "--config.rl.max_new_tokens=12",
           "--config.stream.replay_fraction=0.5", "--config.stream.replay_size=8",
           "--config.budget.lam_reset=True", "--config.rl.lam_init=0.5",
           "--config.rl.beta=0.05", "--config.rl.kl_anchor=previous_task",
           "--config.warmstart.marker_on=failures", "--config.warmstart.calib_examples=48",
           "--config.warmstart.calib_steps=3", "--config.rl.decision_weight=4",
           "--config.rl.dynamic_sampling=2")
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(tmp_path / "results.json"))
  assert res["tasks"] == ["add2", "code"] and res["warmstart_tasks"] == ["add2"]
  assert res["data"]["s0"]["code"]["train_pools"]["warmstart"]["n"] == 0
  # self-knowledge SFT labelled its own train-split draw of the warm-start task (held out from
  # the eval set like every pool: data_report fails on overlap) and trained on it
  pools = res["data"]["s0"]["add2"]["train_pools"]
  assert pools["self_knowledge"]["n"] == 48 and "self_knowledge" not in res["data"]["s0"]["code"]["train_pools"]
  sk = tmp_path / "warmstart_s0" / "self_knowledge"
  labels = json.load(open(sk / "labels.json"))
  assert list(labels) == ["add2"] and labels["add2"]["n"] == 48 and 0 <= labels["add2"]["failed"] <= 1
  assert sorted(os.listdir(sk / "checkpoints")) == ["3"]
  a = res["algorithms"]["dagrpo"]
  assert len(a["L_init"]) == 2 and len(a["acc_at_budget"]) == 2
  rows = [x for x in _rows(tmp_path) if "lambda" in x]
  # λ reset: the first step of task 2 starts again from λ_init = 0.5 (one dual-ascent step)
  first = next(x for x in rows if x["task"] == "code")
  assert first["lambda_integral"] == pytest.approx(0.5 + 0.1 * (first["cloud_rate"] - 0.3), abs=1e-6)
  assert sorted(os.listdir(tmp_path / "runs" / "dagrpo_s0" / "kl_anchor")) == ["1"]

"""Every `dacl` command shown in README.md runs, in a shortened form, so a documented command
cannot break silently. Commands are read from the README itself (bash blocks, and inline code
spans that name a config or a run directory); a new command without a shortened form here
fails `test_every_readme_command_is_covered`."""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "dacl", "data", "fixtures", "gsm8k_mini.jsonl")

_RL_SMALL = ["--config.warmstart.steps=8", "--config.warmstart.examples_per_task=64",
             "--config.stream.train_size=32", "--config.eval.num_examples=4",
             "--config.rl.batch_prompts=2", "--config.rl.group=2",
             "--config.stream.post_switch_steps=1", "--config.stream.space_draws=200",
             "--config.train.save_every=1000", "--config.warmstart.calib_examples=32",
             "--config.warmstart.calib_steps=2"]
# SmolLM2 runs keep its first 2 of 30 blocks (`model.n_layers`: real weights, tokenizer and
# chat template, a fifteenth of the compile and step time); the full model's load, greedy
# answers and parity are tested in tests/test_smollm2.py and tests/test_serve.py.
_SMOLLM2_SHALLOW = ["--config.model.n_layers=2"]
# config basename -> overrides that shorten it (appended after the README's own arguments)
SHORT = {
    "dagrpo_stream.py": _RL_SMALL + ["--config.stream.steps=(1,1,1)"],
    "dagrpo_stream.py:answer": _RL_SMALL + ["--config.stream.steps=(1,1,1)"],
    "dagrpo_stream.py:scratch": _RL_SMALL + ["--config.stream.steps=(1,1,1)"],
    # every algorithm runs in tests/test_dagrpo_e2e.py::test_all_algorithms_share_the_path
    "compare_stream.py": _RL_SMALL + ["--config.stream.steps=(1,1,1)", "--config.seeds=(0,)",
                                      "--config.algorithms=('dagrpo','random_offload')"],
    "dagrpo_smollm2_gsm.py": _SMOLLM2_SHALLOW + [
        "--config.warmstart.steps=1", "--config.warmstart.batch_size=2",
        "--config.warmstart.examples_per_task=4", "--config.warmstart.seq_len=320",
        "--config.stream.steps=(1,1)", "--config.stream.train_size=8",
        "--config.rl.batch_prompts=2", "--config.rl.group=2", "--config.rl.max_new_tokens=12",
        "--config.eval.num_examples=2", "--config.stream.post_switch_steps=1",
        "--config.stream.space_draws=50"],
    "sft_arith.py": ["--config.train.steps=4", "--config.train.batch_size=16",
                     "--config.task.train_size=128", "--config.eval.num_examples=8",
                     "--config.train.eval_every=0", "--config.train.log_every=2"],
    "sft_smollm2_gsm8k.py": _SMOLLM2_SHALLOW + ["--config.train.steps=1", "--config.train.batch_size=2",
                             "--config.task.train_size=8", "--config.eval.num_examples=2",
                             "--config.eval.max_new_tokens=4"],
}
_ADA = ["--config.stage1.steps=2", "--config.stage1.examples_per_task=16",
        "--config.stage1.batch_size=4", "--config.stage2.questions_per_task=2",
        "--config.stage3.steps=2", "--config.stage3.batch_size=4", "--config.eval.num_examples=2",
        "--config.adaswitch.batch_rows=4", "--config.adaswitch.space_draws=50",
        "--config.adaswitch.max_steps=2", "--config.adaswitch.thresholds=(0.5,)",
        "--config.adaswitch.calib_per_task=2"]
SHORT["adaswitch_smollm2_gsm.py"] = _ADA + _SMOLLM2_SHALLOW + [
    "--config.stage1.batch_size=1", "--config.stage3.batch_size=1", "--config.stage1.seq_len=384",
    "--config.stage3.seq_len=384", "--config.adaswitch.step_max_tokens=8",
    "--config.adaswitch.max_steps=1",
    "--config.eval_tasks[0].eval_size=1", "--config.eval_tasks[1].eval_size=1",
    "--config.cloud.max_tokens=32"]
# configs whose README train command runs in their own end-to-end test (shortened there, with
# deeper checks and a SIGKILL resume) through readme_train_argv, instead of a second time here
E2E = {"adaswitch_arith.py": "test_adaswitch_e2e.py", "coplms_domains.py": "test_coplms_e2e.py"}
SERVE_CONFIGS = ("serve_tiny.py", "serve_smollm2.py")


def readme_commands() -> list:
  text = open(os.path.join(ROOT, "README.md")).read()
  cmds = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      if line.startswith("dacl "):
        cmds.append(line)
  for span in re.findall(r"`(dacl [^`]+)`", text):
    if "--config=" in span or span.startswith("dacl report "):
      cmds.append(span)
  out = []
  for c in cmds:
    c = re.sub(r"\[[^\]]*\]", "", c)          # optional parts: [--step=N] [...]
    c = " ".join(c.split())
    if c not in out:
      out.append(c)
  return out


COMMANDS = readme_commands()


def _config_of(cmd):
  m = re.search(r"--config=(\S+)", cmd)
  return os.path.basename(m.group(1)) if m else None


def _free_port():
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  return port


def _argv(cmd, workdir=None, port=None, cloud_port=None):
  args = shlex.split(cmd)[1:]
  out = []
  for a in args:
    if a.startswith("--config.task.path=") and not os.path.exists(a.split("=", 1)[1]):
      a = f"--config.task.path={FIXTURE}"        # the README's placeholder data file
    if cloud_port and a.startswith("--config.cloud.base_url="):
      a = f"--config.cloud.base_url=http://127.0.0.1:{cloud_port}/v1"
    out.append(a.replace("DIR", workdir) if workdir else a)
  if port is not None and "--port" in out:
    out[out.index("--port") + 1] = str(port)
  elif port is not None:
    out += ["--port", str(port)]
  return out


def _run(argv, **kw):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "dacl.cli", *argv], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=900, **kw)


def _kind(cmd):
  if cmd.startswith("dacl serve"):
    return "serve"
  if cmd.startswith("dacl train") and "backend=openai" in cmd:
    return "train_http"
  if cmd.startswith("dacl train"):
    return "train"
  if cmd.startswith("dacl eval"):
    return "eval"
  if cmd.startswith("dacl report"):
    return "report"
  if cmd.startswith("dacl export"):
    return "export"
  return None


def _lora(cmd):
  """The README's LoRA train and export commands run in tests/test_lora.py (with a transformers
  parity check of the export) through readme_lora_argv, not here."""
  return "--config.lora." in cmd


def _eval_config(cmd):
  """The config whose training run a README `dacl eval` needs (CONFIG: the SFT example)."""
  c = _config_of(cmd)
  return "sft_arith.py" if c in (None, "CONFIG") else c


def test_every_readme_command_is_covered():
  assert len(COMMANDS) >= 8, COMMANDS
  for cmd in COMMANDS:
    kind = _kind(cmd)
    assert kind is not None, f"README command with no test: {cmd}"
    if kind == "export" or _lora(cmd):
      assert _lora(cmd) and "readme_lora_argv(" in open(os.path.join(ROOT, "tests", "test_lora.py")).read(), cmd
    elif kind == "train" and _config_of(cmd) in E2E:
      src = open(os.path.join(ROOT, "tests", E2E[_config_of(cmd)])).read()
      assert f'readme_train_argv("{_config_of(cmd)}"' in src, cmd
    elif kind in ("train", "train_http"):
      assert _config_of(cmd) in SHORT, f"add a shortened form for: {cmd}"
      assert os.path.exists(os.path.join(ROOT, "configs", _config_of(cmd).split(":")[0])), cmd
    if kind == "serve":
      assert _config_of(cmd) in SERVE_CONFIGS, cmd
    if kind == "eval":   # runs after the README's training command of the same config
      assert any(_kind(c) == "train" and _config_of(c) == _eval_config(cmd) for c in COMMANDS), cmd


TRAIN = [c for c in COMMANDS if _kind(c) == "train" and _config_of(c) not in E2E and not _lora(c)]


def readme_lora_argv(kind: str, workdir, out=None) -> list:
  """The README's LoRA `dacl train` / `dacl export` command as argv, DIR -> workdir."""
  cmd = next(c for c in COMMANDS if _kind(c) == kind and _lora(c))
  return _argv(cmd.replace("HF_DIR", str(out)) if out else cmd, str(workdir))


def readme_train_argv(config: str, workdir) -> list:
  """The README's `dacl train` command of `config` as argv (after `dacl`), DIR -> workdir."""
  cmd = next(c for c in COMMANDS if _kind(c) == "train" and _config_of(c) == config)
  return _argv(cmd, str(workdir))


@pytest.mark.parametrize("cmd", TRAIN, ids=[f"{_config_of(c)}:{i}" for i, c in enumerate(TRAIN)])
def test_readme_train_command(cmd, tmp_path):
  wd = str(tmp_path / "run")
  r = _run(_argv(cmd, wd) + SHORT[_config_of(cmd)])
  assert r.returncode == 0, (cmd, r.stderr[-3000:])
  res = json.load(open(os.path.join(wd, "results.json")))
  assert os.listdir(os.path.join(wd, "plots")), cmd
  for other in COMMANDS:   # README eval commands of this config, and the report templates
    kind = _kind(other)
    if not ((kind == "eval" and _eval_config(other) == _config_of(cmd)) or
            (kind == "report" and _config_of(cmd) == "sft_arith.py")):
      continue
    other = other.replace("CONFIG", f"configs/{_config_of(cmd)}").replace("runs/main", "DIR")
    upstream, cloud_port = None, None
    if "base_url=" in other:   # the cloud it names: the README's own tiny server
      cloud_port = _free_port()
      tiny = next(c for c in COMMANDS if _kind(c) == "serve" and _config_of(c) == "serve_tiny.py"
                  and "--collab" not in c)
      upstream = _start_server(tiny, cloud_port)
    try:
      argv = _argv(other, wd, cloud_port=cloud_port)
      if kind == "eval":
        argv += SHORT[_config_of(cmd)]
      r = _run(argv)
    finally:
      if upstream is not None:
        upstream.terminate()
        upstream.wait(timeout=30)
    assert r.returncode == 0, (other, r.stderr[-3000:])
    assert any(w in r.stdout for w in ("accuracy", "ACC")), (other, r.stdout[-1000:])
  if "algorithms" in res:
    import glob
    import math
    a = next(iter(res["algorithms"].values()))
    assert len(a["R"]) == len(res["tasks"]) and res["data"]
    for path in glob.glob(os.path.join(wd, "runs", "*", "metrics.jsonl")):
      losses = [json.loads(l).get("loss") for l in open(path)]
      assert all(math.isfinite(x) for x in losses if x is not None), path


def _start_server(cmd, port, cloud_port=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  # SmolLM2's warm-up compiles 12 shapes at 1,024 context (~40 s); the test sends one request.
  # Warm-up itself is tested on the tiny servers here and in tests/test_serve_stream.py.
  short = (["--config.serve.warmup=False", *_SMOLLM2_SHALLOW]
           if _config_of(cmd) == "serve_smollm2.py" else [])
  p = subprocess.Popen([sys.executable, "-m", "dacl.cli", *_argv(cmd, port=port, cloud_port=cloud_port),
                        *short],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  line = p.stdout.readline()
  while line and "dacl serve:" not in line:   # log lines (the warm-up's) come first
    line = p.stdout.readline()
  if f"127.0.0.1:{port}" not in line:
    p.kill()
    p.wait()
    raise AssertionError((cmd, line, p.returncode))
  deadline = time.time() + 120   # the URL line comes before uvicorn listens: wait for /health
  while True:
    try:
      if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
        return p
    except httpx.TransportError:
      pass
    if time.time() > deadline or p.poll() is not None:
      p.kill()
      p.wait()
      raise AssertionError((cmd, "server never became healthy"))
    time.sleep(0.2)


def test_readme_serve_and_http_cloud_commands(tmp_path):
  serves = [c for c in COMMANDS if _kind(c) == "serve"]
  # the upstream cloud: the plain tiny server (the README's AdaSwitch collab command also uses
  # serve_tiny.py, comes first, and would otherwise be picked, pointing at a cloud on 8001)
  tiny = next(c for c in serves if _config_of(c) == "serve_tiny.py" and "--collab" not in c)
  cloud_port = _free_port()
  upstream = _start_server(tiny, cloud_port)
  try:
    for cmd in serves:
      if cmd == tiny:
        continue
      port = _free_port()
      p = _start_server(cmd, port, cloud_port=cloud_port)
      try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300,
                       json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None, cmd
      finally:
        p.terminate()
        p.wait(timeout=30)
    for cmd in (c for c in COMMANDS if _kind(c) == "train_http"):
      wd = str(tmp_path / "http")
      r = _run(_argv(cmd, wd, cloud_port=cloud_port) + SHORT[_config_of(cmd)])
      assert r.returncode == 0, (cmd, r.stderr[-3000:])
      res = json.load(open(os.path.join(wd, "results.json")))
      assert res["cloud"].startswith("openai-compatible endpoint")
  finally:
    upstream.terminate()
    upstream.wait(timeout=30)


def test_unaccepted_task_argument_is_one_line(tmp_path):
  """The issue's traceback: sft_arith's chain_sum kwargs passed to gsm8k_jsonl."""
  r = _run(["train", "--config=configs/sft_arith.py", f"--workdir={tmp_path}",
            "--config.task.name=gsm8k_jsonl", "--config.task.prompt_format=question"])
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("dacl: error: task 'gsm8k_jsonl'") and "'max_digits'" in last, last

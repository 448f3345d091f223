"""launch/ scripts: their --dry-run commands, and how the environment selects jax.distributed."""
import os
import shlex
import subprocess

import pytest

from dacl.parallel import distributed_init_kwargs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVR = "--config.seeds=(0,)"


def dry(script, *args):
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], capture_output=True,
                     text=True, cwd=ROOT, env={**os.environ, "PATH": "/usr/bin:/bin"}, timeout=60)
  assert r.returncode == 0, r.stderr
  return [shlex.split(l) for l in r.stdout.splitlines() if l and not l.startswith("#")]


def test_local_multiprocess_dry_run():
  lines = dry("local_multiprocess.sh", "--dry-run", "--nproc", "3", "--port", "2345",
              "configs/dagrpo_stream.py", "/tmp/w", OVR)
  assert len(lines) == 3
  for i, words in enumerate(lines):
    assert words[:3] == ["DACL_COORDINATOR=127.0.0.1:2345", "DACL_NUM_PROCESSES=3",
                         f"DACL_PROCESS_ID={i}"]
    assert words[3:] == ["dacl", "train", "--config=configs/dagrpo_stream.py", "--workdir=/tmp/w", OVR]


def test_gpu_slurm_dry_run():
  (words,) = dry("gpu_slurm.sbatch", "--dry-run", "configs/dagrpo_stream.py", "/shared/w", OVR)
  assert words[0] == "srun" and "DACL_DISTRIBUTED=auto" in words
  assert words[-6:] == ["-m", "dacl.cli", "train", "--config=configs/dagrpo_stream.py",
                        "--workdir=/shared/w", OVR]


def test_tpu_pod_dry_run():
  lines = dry("tpu_pod.sh", "--dry-run", "--name", "pod", "--zone", "us-west4-a", "--bucket",
              "gs://bkt", "--repo", "https://example.org/dacl.git", "--ref", "abc123", "--spot",
              "configs/dagrpo_stream.py", "run1", OVR)
  create, install, train = lines
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "--spot" in create
  assert create[create.index("--accelerator-type") + 1] == "v5litepod-16"
  for cmd in (install, train):
    assert cmd[4] == "ssh" and "--worker=all" in cmd
  remote_install = install[install.index("--command") + 1]
  assert "git clone -q https://example.org/dacl.git" in remote_install and "checkout -q abc123" in remote_install
  assert "gcsfuse --implicit-dirs bkt /gcs/bkt" in remote_install
  remote = shlex.split(train[train.index("--command") + 1])
  assert "DACL_DISTRIBUTED=auto" in remote
  assert remote[-3:] == ["--config=configs/dagrpo_stream.py", "--workdir=/gcs/bkt/run1", OVR]


def test_launch_scripts_reject_bad_usage():
  for script in ("local_multiprocess.sh", "gpu_slurm.sbatch", "tpu_pod.sh"):
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "usage" in r.stderr, script


def test_distributed_init_from_environment():
  assert distributed_init_kwargs({}) is None
  assert distributed_init_kwargs({"DACL_DISTRIBUTED": "auto"}) == {}
  assert distributed_init_kwargs({"JAX_NUM_PROCESSES": "4"}) == {}
  env = {"DACL_COORDINATOR": "127.0.0.1:1234", "DACL_NUM_PROCESSES": "2", "DACL_PROCESS_ID": "1"}
  assert distributed_init_kwargs(env) == {"coordinator_address": "127.0.0.1:1234",
                                          "num_processes": 2, "process_id": 1}
  with pytest.raises(ValueError, match="DACL_PROCESS_ID"):
    distributed_init_kwargs({"DACL_COORDINATOR": "127.0.0.1:1", "DACL_NUM_PROCESSES": "2"})

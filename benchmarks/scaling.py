"""SFT-step and GRPO-step tokens/s against devices, mesh shapes and processes (JSON lines).

  python benchmarks/scaling.py [--preset small] [--batch 32] [--seq 64] [--steps 5]

Each row runs in a fresh process (the device count is fixed when JAX starts): N emulated CPU
devices (`--xla_force_host_platform_device_count`) on each mesh shape of N devices, and 2
processes under jax.distributed (one CPU device each, coordinator on 127.0.0.1). The state is
placed by the logical-axis rules and the batch split over (data, fsdp), as in `dacl train`.

On a CPU host every emulated device shares the same cores, so these rows measure the cost of
partitioning (collectives, re-layouts), not a speed-up; on accelerators each device is a chip.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MESHES = {1: [(1, 1, 1)], 2: [(2, 1, 1), (1, 2, 1), (1, 1, 2)],
          8: [(8, 1, 1), (1, 8, 1), (2, 2, 2), (2, 4, 1), (1, 1, 8)]}


def measure(a, mesh_shape, processes: int):
  """One configuration in this process: (SFT tokens/s, GRPO tokens/s), best step of a.steps."""
  sys.path.insert(0, os.path.dirname(HERE))
  import jax
  import numpy as np
  from dacl import parallel
  from dacl.models.config import get_preset
  from dacl.models.decoder import create_model
  from dacl.rl.step import make_rl_step
  from dacl.train.sft import init_train_state, make_optimizer, make_train_step
  model = create_model(get_preset(a.preset), seed=0)
  tx = make_optimizer(1e-4, 100)
  graphdef, state = init_train_state(model, tx, 0)
  mesh = parallel.make_mesh(mesh_shape)
  sh = parallel.state_shardings(state, mesh)
  state = jax.device_put(state, sh)
  r = np.random.default_rng(0)
  B, T = a.batch, a.seq
  tokens = r.integers(3, 250, (1, B, T)).astype(np.int32)
  mask = np.ones((1, B, T), bool)
  sft = {"tokens": tokens, "targets": np.roll(tokens, -1, -1), "mask": mask, "loss_mask": mask}
  rl = dict(sft, positions=np.broadcast_to(np.arange(T, dtype=np.int32), (1, B, T)).copy(),
            old_logp=np.full((1, B, T), -2.0, np.float32), adv=r.normal(size=(1, B)).astype(np.float32))
  out = {}
  for name, fn, batch, extra in (("sft", make_train_step(graphdef, tx, state_shardings=sh), sft, ()),
                                 ("grpo", make_rl_step(graphdef, tx, state_shardings=sh), rl, (None,))):
    b = parallel.shard_batch(batch, mesh, batch_axis=1)
    state, m = fn(state, b, *extra)
    jax.block_until_ready(m)
    best = float("inf")
    for _ in range(a.steps):
      t = time.perf_counter()
      state, m = fn(state, b, *extra)
      jax.block_until_ready(m)
      best = min(best, time.perf_counter() - t)
    out[name] = round(B * T / best, 1)
  return out


def child(a):
  from dacl.parallel import maybe_initialize_distributed
  maybe_initialize_distributed()
  import jax
  shape = tuple(json.loads(a.mesh))
  res = measure(a, shape, jax.process_count())
  if jax.process_index() == 0:
    print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                      "mesh": list(shape), "preset": a.preset, "batch": a.batch, "seq": a.seq,
                      "sft_tokens_per_s": res["sft"], "grpo_tokens_per_s": res["grpo"]}), flush=True)


def spawn(a, devices: int, mesh, processes: int = 1):
  base = [sys.executable, os.path.abspath(__file__), "--child", "--mesh", json.dumps(list(mesh)),
          "--preset", a.preset, "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps)]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  if processes == 1:
    r = subprocess.run(base, capture_output=True, text=True, env=env, timeout=1800)
    outs = [r]
  else:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    procs = [subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "DACL_COORDINATOR": f"127.0.0.1:{port}",
                                   "DACL_NUM_PROCESSES": str(processes), "DACL_PROCESS_ID": str(i)})
             for i in range(processes)]
    outs = []
    for p in procs:
      o, e = p.communicate(timeout=1800)
      outs.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
  for r in outs:
    if r.returncode:
      print(json.dumps({"devices": devices, "processes": processes, "mesh": list(mesh),
                        "error": r.stderr.strip().splitlines()[-1:]}), flush=True)
      return
  for r in outs:   # the JSON row (process 0's); not the collectives' own chatter
    for line in r.stdout.splitlines():
      if line.startswith("{"):
        print(line, flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="small")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--seq", type=int, default=64)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--child", action="store_true")
  ap.add_argument("--mesh", default="[1,1,1]")
  a = ap.parse_args()
  if a.child:
    return child(a)
  sys.path.insert(0, HERE)
  from common import emit, machine
  emit(machine=machine(), note="emulated devices share the host's cores")
  for n, meshes in MESHES.items():
    for mesh in meshes:
      spawn(a, n, mesh)
  spawn(a, 1, (2, 1, 1), processes=2)   # 2 processes x 1 device, batch over both


if __name__ == "__main__":
  main()

"""DA-GRPO step time with a simulated cloud latency of 0 ms vs 300 ms (cache off).

Cloud requests start inside the decode loop (io_callback) when a row emits the offload marker
and are collected after decoding, so latency overlaps the rest of the decode.
  python benchmarks/cloud_overlap.py [--steps 6] [--warm 150] [--new 8]
  python benchmarks/cloud_overlap.py --scratchpad 96 --new 128    # long completions
"""
import argparse
import os
import sys
import tempfile
import time

from common import ROOT, emit, machine

import jax
import numpy as np
from flax import nnx

from dacl.build import build_model_and_tokenizer, build_task
from dacl.cli import parse_config
from dacl.cloud import make_cloud
from dacl.cloud.bridge import CloudBridge
from dacl.rl.rollout import collaborative_rollout, training_batch
from dacl.rl.step import compute_advantages, make_rl_step
from dacl.rl.trainer import marker_ids, warm_start
from dacl.sampling import Sampler, next_bucket
from dacl.train.sft import init_train_state, make_optimizer


class _Scratchpad:
  """A task whose demonstrations write a scratchpad of n characters before the answer."""

  def __init__(self, task, n):
    self.task, self.n, self.name = task, n, task.name

  def examples(self, split, n, seed=0):
    import dataclasses
    pad = ("thinking " * (self.n // 9 + 1))[: self.n]
    return [dataclasses.replace(e, solution=pad + " " + e.solution)
            for e in self.task.examples(split, n, seed)]

  def score(self, completion, ex):
    return self.task.score(completion, ex)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=6)
  ap.add_argument("--warm", type=int, default=150)
  ap.add_argument("--new", type=int, default=8)
  ap.add_argument("--scratchpad", type=int, default=0,
                  help="long-completion variant: demonstrations write N scratchpad characters "
                       "before the answer, so local rows decode ~N tokens")
  a = ap.parse_args()
  tmp = tempfile.mkdtemp()
  cfg, _ = parse_config([f"--config={os.path.join(ROOT, 'configs/dagrpo_stream.py')}",
                         f"--workdir={tmp}", f"--config.warmstart.steps={a.warm}",
                         "--config.warmstart.offload_fraction=0.4",
                         "--config.warmstart.examples_per_task=2000",
                         f"--config.warmstart.seq_len={24 + a.scratchpad}",
                         f"--config.model.max_seq_len={64 + 2 * a.scratchpad}"])
  model, tok = build_model_and_tokenizer(cfg.model, 0)
  tasks = [build_task(t) for t in cfg.stream.tasks]
  if a.scratchpad:
    tasks = [_Scratchpad(t, a.scratchpad) for t in tasks]
  graphdef, params = warm_start(cfg, os.path.join(tmp, "ws"), model, tok, tasks, 0)
  rc = cfg.rl
  tx = make_optimizer(rc.lr, 100, 0)
  graphdef, state = init_train_state(nnx.merge(graphdef, params), tx, 0)
  step = make_rl_step(graphdef, tx)
  sampler = Sampler(nnx.merge(graphdef, state.params), tok, max_cache_len=cfg.model.max_seq_len)
  pool = tasks[1].examples("train", 2000, seed=0)
  B, G = rc.batch_prompts, rc.group
  bridges = {lat: CloudBridge(make_cloud("simulated", latency_ms=lat, seed=0), cache=False)
             for lat in (0, 300)}
  times = {0: [], 300: []}
  offl = {0: [], 300: []}
  for i in range(a.steps * 2 + 2):
    lat = (0, 300)[i % 2]
    ex = pool[(i // 2) * B:(i // 2 + 1) * B]
    t = time.perf_counter()
    ro = collaborative_rollout(sampler, ex, lambda e: tasks[1], group=G, max_new_tokens=a.new,
                               temperature=1.0, marker_ids=marker_ids(cfg, tok), route="policy",
                               tau=0.3, bridge=bridges[lat], key=jax.random.key(i),
                               rng=np.random.default_rng(i))
    adv = compute_advantages(ro.reward.reshape(B, G), ro.cost.reshape(B, G), np.float32(0.5),
                             np.float32(0.0), scale="none", shaped=False)
    batch = training_batch(ro, G, tok.pad_id, next_bucket(max(len(p) for p in ro.prompt_ids), 16))
    batch["adv"] = np.asarray(adv).reshape(-1)
    new_state, m = step(state, {k: v[None] for k, v in batch.items()}, None)
    jax.block_until_ready(m)
    state = new_state
    sampler.update_state(nnx.state(nnx.merge(graphdef, state.params)))
    if i >= 2:   # the first pair compiles
      times[lat].append(time.perf_counter() - t)
      offl[lat].append(float(ro.offload.mean()))
  for lat in (0, 300):
    emit(bench="cloud_overlap", latency_ms=lat, step_s=round(float(np.median(times[lat])), 3),
         offload_rate=round(float(np.mean(offl[lat])), 3), rows=B * G, new_tokens=a.new,
         scratchpad=a.scratchpad,
         steps=len(times[lat]), machine=machine())
  emit(bench="cloud_overlap", scratchpad=a.scratchpad,
       ratio_300_over_0=round(float(np.median(times[300]) / np.median(times[0])), 3))
  for b in bridges.values():
    b.close()


if __name__ == "__main__":
  main()

"""DA-GRPO step time with a simulated cloud latency of 0 ms vs 300 ms (cache off), through the
trainer's own loop (`dacl.rl.trainer.run_one`), with and without `rl.pipeline`.

Cloud requests start inside the decode loop (io_callback) when a row emits the offload marker.
Without the pipeline they are collected right after decoding, so only the rest of the decode
hides their latency; with `rl.pipeline=True` the next batch is decoded (one step off-policy) and
the update runs while they are in flight. Step time = median of per-step wall times from
metrics.jsonl (log_every=1), first 2 steps (compiles) dropped.

  python benchmarks/cloud_overlap.py [--steps 12] [--warm 150] [--new 8]
  python benchmarks/cloud_overlap.py --scratchpad 96 --new 128    # long completions
"""
import argparse
import json
import os
import tempfile

from common import ROOT, emit, machine

import numpy as np

from dacl.cli import parse_config
from dacl.rl import trainer


class _Scratchpad:
  """A task whose demonstrations write a scratchpad of n characters before the answer."""

  def __init__(self, task, n):
    self.task, self.n, self.name = task, n, task.name

  def examples(self, split, n, seed=0, **kw):
    import dataclasses
    pad = ("thinking " * (self.n // 9 + 1))[: self.n]
    return [dataclasses.replace(e, solution=pad + " " + e.solution)
            for e in self.task.examples(split, n, seed, **kw)]

  def score(self, completion, ex):
    return self.task.score(completion, ex)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=12)
  ap.add_argument("--warm", type=int, default=150)
  ap.add_argument("--new", type=int, default=8)
  ap.add_argument("--scratchpad", type=int, default=0,
                  help="long-completion variant: demonstrations write N scratchpad characters "
                       "before the answer, so local rows decode ~N tokens")
  a = ap.parse_args()
  tmp = tempfile.mkdtemp()
  if a.scratchpad:   # wrap the task builder so warm start and rollouts use the scratchpad task
    build = trainer.build_task
    trainer.build_task = lambda t: _Scratchpad(build(t), a.scratchpad)
  times = {}
  for pipeline in (False, True):
    for lat in (0, 300):
      cfg, _ = parse_config([
          f"--config={os.path.join(ROOT, 'configs/dagrpo_stream.py')}:scratch", f"--workdir={tmp}",
          f"--config.warmstart.steps={a.warm}", "--config.warmstart.offload_fraction=0.4",
          "--config.warmstart.examples_per_task=2000",
          f"--config.warmstart.seq_len={24 + a.scratchpad}",
          f"--config.model.max_seq_len={64 + 2 * a.scratchpad}",
          f"--config.rl.max_new_tokens={a.new}", f"--config.rl.pipeline={pipeline}",
          # λ fixed at 0.5: no integral (K_i) and no proportional (K_p) term
          "--config.rl.lam_lr=0.0", "--config.rl.lam_kp=0.0", "--config.rl.lam_init=0.5",
          f"--config.stream.steps=({a.steps},{a.steps},{a.steps})", "--config.train.log_every=1",
          "--config.train.save_every=100000", "--config.eval.num_examples=8",
          "--config.cloud.cache=False", f"--config.cloud.kwargs.latency_ms={float(lat)}"])
      cfg.unlock()
      cfg.stream.tasks = cfg.stream.tasks[1:2]     # mul only
      cfg.stream.steps = (a.steps,)
      cfg.lock()
      run_dir = os.path.join(tmp, f"p{int(pipeline)}_l{lat}")
      res = trainer.run_one(cfg, run_dir, "dagrpo", 0, tmp)
      rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
      dts = [1.0 / r["steps_per_s"] for r in rows if "steps_per_s" in r][2:]
      usage = [r["cloud_rate"] for r in rows if "cloud_rate" in r]
      times[(pipeline, lat)] = float(np.median(dts))
      emit(bench="cloud_overlap", pipeline=pipeline, latency_ms=lat,
           step_s=round(times[(pipeline, lat)], 3), cloud_rate=round(float(np.mean(usage)), 3),
           new_tokens=a.new, scratchpad=a.scratchpad, steps=len(dts), machine=machine())
  for pipeline in (False, True):
    emit(bench="cloud_overlap", pipeline=pipeline, scratchpad=a.scratchpad,
         ratio_300_over_0=round(times[(pipeline, 300)] / times[(pipeline, 0)], 3))


if __name__ == "__main__":
  main()

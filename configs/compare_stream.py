"""The comparison: every algorithm on the main job's stream with 3 seeds (about an hour on 2 CPU
cores with bare answers; with the scratchpad default not yet re-measured, expect 2-3 hours).
results.json holds each algorithm under "algorithms" (mean over seeds, per_seed inside).

  dacl train --config=configs/compare_stream.py --workdir=DIR
  dacl train --config=configs/compare_stream.py --workdir=DIR2 "--config.seeds=(3,4)"   # held out
"""
from configs.dagrpo_stream import get_config as _main


def get_config():
  c = _main()
  c.unlock()
  c.algorithms = ("dagrpo", "grpo_local", "shaped", "router", "random_offload", "cloud_only")
  c.seeds = (0, 1, 2)
  c.stream.local_eval_every = 10
  c.lock()
  return c

"""The comparison: every algorithm on the main job's stream (add3 -> mul4 -> mixed4) with 3 seeds
(not yet timed at full scale on it: one seed of 3 algorithms took over an hour on 2 CPU cores
shared with other runs, so expect several hours for 6 x 3).
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

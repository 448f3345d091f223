"""The main job: DA-GRPO on a stream of three reasoning-gym families of rising difficulty, with
the SIMULATED cloud, the tiny byte-level SLM warm-started by SFT inside the job.

  dacl train --config=configs/dagrpo_stream.py --workdir=DIR
"""
from configs.rl_base import get_rl_base, task


def get_config():
  c = get_rl_base()
  c.model.preset = "tiny"
  c.model.max_seq_len = 64
  c.stream.tasks = [
      task("chain_sum", "add2", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
      task("products", "mul", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
      task("basic_arithmetic", "mixed3", min_terms=3, max_terms=3, min_digits=1, max_digits=1,
           operators=("+", "-", "*"), allow_parentheses=False)]
  c.stream.steps = (80, 80, 80)
  c.eval.num_examples = 128
  c.train.save_every = 20
  c.train.log_every = 5
  c.lock()
  return c

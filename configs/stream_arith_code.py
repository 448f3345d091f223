"""Arithmetic → code, as in the seed paper's math → code stream: the warm start has seen only
the first task (2-term addition, scratchpad demonstrations); the second task, writing the Python
expression of a function from three input/output pairs (`fit_formula`, rewarded by running it on
hidden inputs in a sandbox), arrives unseen. SIMULATED cloud.

  dacl train --config=configs/stream_arith_code.py --workdir=DIR
"""
from configs.rl_base import get_rl_base, task


def get_config():
  c = get_rl_base()
  c.model.preset = "tiny"
  c.model.max_seq_len = 80
  c.stream.tasks = [
      task("chain_sum", "add2", min_terms=2, max_terms=2, min_digits=1, max_digits=2,
           solution_format="scratch"),
      task("fit_formula", "code", fmt="compact", forms=("linear", "quadratic"))]
  c.stream.steps = (80, 80)
  c.warmstart.coverage = "first"
  c.warmstart.seq_len = 48
  c.rl.max_new_tokens = 24
  c.eval.num_examples = 128
  c.train.save_every = 20
  c.train.log_every = 5
  c.lock()
  return c

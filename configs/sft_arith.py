"""SFT of the tiny byte-level model from scratch on two-term addition of 1-2 digit numbers
(reasoning-gym chain_sum, compact `a+b=` prompts). A few CPU minutes."""
import ml_collections

from configs.base import get_base


def get_config():
  c = get_base()
  c.task.name = "chain_sum"
  c.task.prompt_format = "expression"
  c.task.kwargs = ml_collections.ConfigDict(dict(min_terms=2, max_terms=2, min_digits=1,
                                                 max_digits=2))
  c.train.steps = 1500
  c.train.batch_size = 128
  c.optim.lr = 6e-3
  c.optim.weight_decay = 0.1
  c.train.seq_len = 16
  c.train.eval_every = 500
  c.eval.max_new_tokens = 6
  c.lock()
  return c

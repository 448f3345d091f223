"""AdaSwitch's main run: the tiny byte-level SLM solves 3-4 term arithmetic step by step with a
calculator, reflects on each step, and hands the steps it judges wrong to a SIMULATED cloud
(which writes the correct next step with probability 0.97). Three training stages, then
evaluation of the four modes, the threshold sweep and the ablations on held-out problems.

  dacl train --config=configs/adaswitch_arith.py --workdir=DIR
"""
import ml_collections

from configs.base import get_base
from configs.rl_base import cloud_config, task


def get_config():
  c = get_base()
  c.algorithm = "adaswitch"
  c.seeds = (0,)
  c.task_chat = False
  c.model.preset = "tiny"
  c.model.max_seq_len = 512
  c.tasks = [   # a spread of difficulty: long operands to copy; brackets, signs and precedence
      task("chain_sum", "chain", min_terms=3, max_terms=4, min_digits=1, max_digits=3),
      task("basic_arithmetic", "mixed", min_terms=3, max_terms=4, min_digits=1, max_digits=2,
           operators=("+", "-", "*"), allow_parentheses=True)]
  c.eval_tasks = []          # [] = evaluate on the training tasks' eval splits
  c.adaswitch = ml_collections.ConfigDict(dict(
      max_steps=10,            # steps per problem, flagged ones included
      step_max_tokens=48,      # tokens per local step
      threshold=-1.0,          # switch when P("Yes") > threshold; -1 = calibrated on train-split
      calib_per_task=100,      #   problems: best Youden's J of wrong-step detection among cuts
      switch_budget=0.25,      #   that flag at most this share of local steps: the predicted
                               #   share of cloud-only's cloud tokens (0.25 leaves a margin
                               #   under the 30 % goal for the estimate's error, +-0.015)
      thresholds=(0.01, 0.03, 0.1, 0.3),
      max_fixes_per_step=1,    # self_reflection: corrections in a row before accepting a step
      drop_flagged=True,       # a replaced step leaves the local model's context (False: it stays,
                               #   followed by "Yes" and its replacement)
      temperature=0.0,         # local decoding at evaluation (0 = greedy)
      cloud_params=70e9,       # the cloud's parameter count, for the FLOPs estimate
      batch_rows=256,          # problems advanced together (one batched decode per round)
      min_rows=16,             # smallest row bucket: rows that finished stop costing compute
      min_bucket=64, space_draws=2000))
  c.stage1 = ml_collections.ConfigDict(dict(
      examples_per_task=6000, steps=650, batch_size=32, lr=3e-3, warmup_steps=40, seq_len=384,
      pack=True))   # a batch's trajectories packed into fewer rows: same gradient, fewer slots
  c.stage2 = ml_collections.ConfigDict(dict(
      questions_per_task=250, cloud_attempts=2, temperature=0.0))
  c.stage3 = ml_collections.ConfigDict(dict(
      steps=120, batch_size=32, lr=1e-3, warmup_steps=20, seq_len=384, gold_fraction=0.3,
      pack=True))
  c.eval.num_examples = 100  # per task
  c.train.save_every = 200
  c.cloud = cloud_config()
  c.cloud.kwargs.p_correct_step = 0.97
  c.cloud.max_tokens = 96
  c.lock()
  return c

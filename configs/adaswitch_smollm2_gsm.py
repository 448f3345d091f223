"""AdaSwitch with a real model: the embedded SmolLM2-135M-Instruct (no download) on gsm_symbolic
word problems with the chat template, evaluated on gsm_symbolic's held-out split and on the
GSM8K-format fixture (whose `<<a*b=c>>` annotations become Calculator actions). CPU
smoke-testable; on a GPU raise the stage sizes.

  dacl train --config=configs/adaswitch_smollm2_gsm.py --workdir=DIR
  dacl eval  --config=configs/adaswitch_smollm2_gsm.py --workdir=DIR \
      --config.cloud.backend=openai --config.cloud.base_url=http://127.0.0.1:8000/v1
"""
from configs.adaswitch_arith import get_config as _arith
from configs.rl_base import task


def get_config():
  c = _arith()
  c.unlock()
  c.task_chat = True
  c.model.weights = "smollm2-135m-instruct"
  c.model.max_seq_len = 1024
  c.tasks = [task("gsm_symbolic", "gsm_symbolic", fmt="question")]
  c.eval_tasks = [task("gsm_symbolic", "gsm_symbolic", fmt="question", eval_size=32),
                  # the shipped fixture: 64 rows, 7 in the eval split
                  task("gsm8k_jsonl", "gsm8k", fmt="question", eval_size=7)]
  c.adaswitch.update(dict(max_steps=8, step_max_tokens=96, batch_rows=8, min_rows=4, min_bucket=256,
                          thresholds=(0.2, 0.5, 0.8), space_draws=200))
  c.stage1.update(dict(examples_per_task=800, steps=100, batch_size=4, lr=2e-5, warmup_steps=10,
                       seq_len=768))
  c.stage2.update(dict(questions_per_task=64))
  c.stage3.update(dict(steps=50, batch_size=4, lr=1e-5, warmup_steps=5, seq_len=768))
  c.train.save_every = 25
  c.cloud.max_tokens = 128
  c.cloud.timeout_s = 120.0
  c.lock()
  return c

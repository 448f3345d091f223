"""DA-GRPO with a real model: SmolLM2-135M-Instruct (the embedded GGUF), GSM-style tasks, a text
tag as the offload marker, and the chat template. CPU smoke-testable (a test runs 2 steps).

GPU users: copy this file and set
  c.model.weights = "/path/to/Qwen2.5-1.5B-Instruct"   # a local HF directory (no downloads)
  c.model.dtype = c.model.param_dtype = "bfloat16"
and scale rl.batch_prompts / rl.group / rl.max_new_tokens / stream.steps up.
"""
from configs.rl_base import get_rl_base, task


def get_config():
  c = get_rl_base()
  c.task_chat = True
  c.model.weights = "smollm2-135m-instruct"
  c.model.max_seq_len = 512
  c.offload.marker = "<unknown> I need external assistance </unknown>"
  c.stream.tasks = [task("gsm_symbolic", "gsm_symbolic", fmt="chat"),
                    # the shipped GSM8K-format fixture: 64 rows, 7 of them in the eval split
                    task("gsm8k_jsonl", "gsm8k", fmt="chat", eval_size=7)]
  c.stream.steps = (50, 50)
  c.stream.train_size = 2000
  c.warmstart.update(dict(steps=50, batch_size=8, lr=2e-5, warmup_steps=5, seq_len=384,
                          examples_per_task=500, offload_fraction=0.2))
  c.rl.update(dict(lr=1e-6, batch_prompts=8, group=4, max_new_tokens=192))
  c.cloud.timeout_s = 60.0
  c.eval.num_examples = 64
  c.train.save_every = 10
  c.train.log_every = 1
  c.lock()
  return c

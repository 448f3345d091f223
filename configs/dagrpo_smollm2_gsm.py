"""DA-GRPO with a real model: SmolLM2-135M-Instruct (the embedded GGUF), GSM-style tasks, a text
tag as the offload marker, and the chat template. CPU smoke-testable (a test runs 2 steps).

GPU users: copy this file and set
  c.model.weights = "/path/to/Qwen2.5-1.5B-Instruct"   # a local HF directory (no downloads)
  c.model.dtype = c.model.param_dtype = "bfloat16"
and scale rl.batch_prompts / rl.group / rl.max_new_tokens / stream.steps up.
"""
import ml_collections

from configs.base import get_base


def task(name, display, fmt="chat", path="", **kw):
  return ml_collections.ConfigDict(dict(name=name, prompt_format=fmt, path=path,
                                        kwargs=ml_collections.ConfigDict(dict(name=display, **kw))))


def get_config():
  c = get_base()
  c.algorithm = "rl"
  c.algorithms = ("dagrpo",)
  c.seeds = (0,)
  c.task_chat = True
  c.model.weights = "smollm2-135m-instruct"
  c.model.max_seq_len = 512
  c.offload = ml_collections.ConfigDict(dict(
      marker="<unknown> I need external assistance </unknown>"))
  c.stream = ml_collections.ConfigDict(dict(
      tasks=[task("gsm_symbolic", "gsm_symbolic"),
             task("gsm8k_jsonl", "gsm8k")],       # the shipped GSM8K-format fixture by default
      steps=(50, 50), train_size=2000, post_switch_steps=10))
  c.budget = ml_collections.ConfigDict(dict(tau=0.3))
  c.warmstart = ml_collections.ConfigDict(dict(
      steps=50, batch_size=8, lr=2e-5, warmup_steps=5, seq_len=384,
      examples_per_task=500, offload_fraction=0.2))
  c.rl = ml_collections.ConfigDict(dict(
      lr=1e-6, warmup_steps=5, batch_prompts=8, group=4, grad_accum=1, max_new_tokens=192,
      temperature=1.0, eps_low=0.2, eps_high=0.28, beta=0.0, aggregation="token-mean",
      scale="none", gamma=0.5, lam_init=0.0, lam_lr=0.5))
  c.cloud = ml_collections.ConfigDict(dict(
      backend="simulated", cache=True, timeout_s=60.0,
      kwargs=ml_collections.ConfigDict(dict(p_correct=0.9, latency_ms=0.0, seed=0))))
  c.eval.num_examples = 64
  c.train.save_every = 10
  c.train.log_every = 1
  c.lock()
  return c

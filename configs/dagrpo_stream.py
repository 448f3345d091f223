"""The main job: DA-GRPO on a stream of three reasoning-gym families of rising difficulty, with
the SIMULATED cloud, the tiny byte-level SLM warm-started by SFT inside the job.

  dacl train --config=configs/dagrpo_stream.py --workdir=DIR
"""
import ml_collections

from configs.base import get_base


def task(name, display, **kw):
  return ml_collections.ConfigDict(dict(name=name, prompt_format="expression", path="",
                                        kwargs=ml_collections.ConfigDict(dict(name=display, **kw))))


def get_config():
  c = get_base()
  c.algorithm = "rl"
  c.algorithms = ("dagrpo",)
  c.seeds = (0,)
  c.task_chat = False
  c.model.preset = "tiny"
  c.model.max_seq_len = 64
  c.offload = ml_collections.ConfigDict(dict(marker="<cloud>"))   # the byte tokenizer's token
  c.stream = ml_collections.ConfigDict(dict(
      tasks=[task("chain_sum", "add2", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
             task("products", "mul", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
             task("basic_arithmetic", "mixed3", min_terms=3, max_terms=3, min_digits=1,
                  max_digits=1, operators=("+", "-", "*"), allow_parentheses=False)],
      steps=(80, 80, 80), train_size=4000, post_switch_steps=10))
  c.budget = ml_collections.ConfigDict(dict(tau=0.3))
  c.warmstart = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=128, lr=6e-3, warmup_steps=50, seq_len=24,
      examples_per_task=6000, offload_fraction=0.15))
  c.rl = ml_collections.ConfigDict(dict(
      lr=2e-4, warmup_steps=5, batch_prompts=16, group=8, grad_accum=1, max_new_tokens=8,
      temperature=1.0, eps_low=0.2, eps_high=0.28, beta=0.0, aggregation="token-mean",
      scale="none", gamma=0.5, lam_init=0.0, lam_lr=0.25))
  c.cloud = ml_collections.ConfigDict(dict(
      backend="simulated", cache=True, timeout_s=30.0,
      kwargs=ml_collections.ConfigDict(dict(p_correct=0.9, latency_ms=0.0, seed=0))))
  c.eval.num_examples = 128
  c.train.save_every = 20
  c.train.log_every = 5
  c.lock()
  return c

"""Shared defaults of the DA-GRPO configs (stream, budget, warm start, RL, cloud)."""
import ml_collections

from configs.base import get_base


def task(name, display, fmt="expression", path="", **kw):
  """One stream entry: a registered task, its display name (unique in the stream), generator args."""
  return ml_collections.ConfigDict(dict(name=name, prompt_format=fmt, path=path,
                                        kwargs=ml_collections.ConfigDict(dict(name=display, **kw))))


def get_rl_base() -> ml_collections.ConfigDict:
  c = get_base()
  c.algorithm = "rl"
  c.algorithms = ("dagrpo",)
  c.seeds = (0,)
  c.task_chat = False
  c.offload = ml_collections.ConfigDict(dict(marker="<cloud>"))
  c.stream = ml_collections.ConfigDict(dict(tasks=[], steps=(), train_size=4000,
                                            post_switch_steps=10))
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
  return c

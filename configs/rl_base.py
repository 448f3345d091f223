"""Shared defaults of the DA-GRPO configs (stream, budget, warm start, RL, cloud)."""
import ml_collections

from configs.base import get_base


def task(name, display, fmt="expression", path="", eval_size=0, **kw):
  """One stream entry: a registered task, its display name (unique in the stream), generator args.
  eval_size: held-out problems for this task (0 = config.eval.num_examples)."""
  return ml_collections.ConfigDict(dict(name=name, prompt_format=fmt, path=path, eval_size=eval_size,
                                        kwargs=ml_collections.ConfigDict(dict(name=display, **kw))))


def cloud_config() -> ml_collections.ConfigDict:
  """`kwargs` configure the simulated back-end; the other fields an OpenAI-compatible endpoint
  (backend="openai"; the key is read from the env var named by api_key_env). timeout_s is the
  deadline per request, retries included. cache_path: "auto" = <workdir>/cloud_cache.sqlite
  (answers persist across reruns and resumes), "" = memory only."""
  return ml_collections.ConfigDict(dict(
      backend="simulated", cache=True, cache_path="auto", timeout_s=30.0, max_tokens=256,
      kwargs=ml_collections.ConfigDict(dict(p_correct=0.9, latency_ms=0.0, seed=0)),
      base_url="", model="", api_key_env="", mode="chat",
      system_prompt="Solve the problem. End your reply with '#### ' and the final number.",
      max_concurrency=16, connect_timeout_s=5.0, read_timeout_s=20.0, max_retries=4,
      backoff_base_s=0.5, backoff_max_s=10.0, retry_after_cap_s=30.0, breaker_threshold=8,
      breaker_cooldown_s=30.0, price_prompt_per_1k=0.0, price_completion_per_1k=0.0, stop=()))


def get_rl_base() -> ml_collections.ConfigDict:
  c = get_base()
  c.algorithm = "rl"
  c.algorithms = ("dagrpo",)
  c.seeds = (0,)
  c.task_chat = False
  c.offload = ml_collections.ConfigDict(dict(marker="<cloud>"))
  # post_switch_steps M: post-switch accuracy is the greedy held-out accuracy after M steps of a
  # new task. space_draws: draws per task for the problem-space estimate in results.json "data".
  # replay_fraction: share of each RL batch drawn from a buffer of the first replay_size prompts
  # of every earlier task's pool (0 = no replay). local_eval_every: every so many RL steps, greedy
  # local accuracy L on every task's held-out set (results "L_over_steps", plots/dynamics_*.png;
  # 0 = only at task ends). rl_on_calib: RL's prompts from warmstart.calib_fraction's part.
  # distinct_pools: RL's prompts and self-knowledge labels are distinct problems, like the
  # held-out sets (False: i.i.d. draws, the generator's own mix; dacl/continual/stream.py).
  c.stream = ml_collections.ConfigDict(dict(tasks=[], steps=(), train_size=4000,
                                            post_switch_steps=10, space_draws=5000,
                                            replay_fraction=0.0, replay_size=200,
                                            local_eval_every=0, rl_on_calib=False,
                                            distinct_pools=False))
  # lam_reset: λ (and its integral) back to rl.lam_init at each task switch (default: carried)
  c.budget = ml_collections.ConfigDict(dict(tau=0.3, lam_reset=False))
  c.warmstart = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=128, lr=6e-3, warmup_steps=50, seq_len=24,
      examples_per_task=6000, offload_fraction=0.15,
      coverage="all",    # whose demonstrations: "all" stream tasks, or "first" (later ones unseen)
      # marker_on: "random" (the marker replaces offload_fraction of the demonstrations) or
      # "failures" (then a second phase, self-knowledge SFT: calib_examples fresh problems per task
      # labelled by the warm start's own greedy answers, the marker where wrong; dacl/rl/warmstart.py)
      # or "budget" (the same phase, the marker on at most floor(tau*n) failures, least confident first)
      marker_on="random", calib_examples=8192, calib_steps=200, calib_lr=1e-3,
      # calib_fraction: a share of each task's train split (by problem hash) kept out of the
      # demonstrations; self-knowledge labels and the router's fitting set come from it, so they
      # describe the model on problems it has not memorised (0 = none: any train problem)
      calib_fraction=0.0))
  c.rl = ml_collections.ConfigDict(dict(
      lr=2e-4, warmup_steps=5, batch_prompts=16, group=8, grad_accum=1, max_new_tokens=8,
      temperature=1.0, eps_low=0.2, eps_high=0.28, aggregation="token-mean",
      beta=0.0,                 # KL weight to an anchor policy (0 = no KL term)
      kl_anchor="warmstart",    # the anchor: "warmstart" or "previous_task" (set at each switch)
      decision_weight=1.0,      # weight of each rollout's first token (marker or local answer)
      dynamic_sampling=1,       # f > 1: sample f x batch_prompts groups, train on batch_prompts
                                # of them whose rows differ (DAPO's dynamic sampling)
      partial_credit=0.0,       # w > 0: a wrong local answer earns w x its digit places right
                                # (integer tasks) instead of 0; local accuracy stays exact
      scale="none", gamma=0.5, lam_init=0.0,
      lam_lr=0.1,        # K_i: step of the projected dual ascent (the integral term)
      lam_kp=4.0,        # K_p: proportional gain of the PI multiplier; 0 = plain dual ascent
      pipeline=False))   # pipeline: one-step-off-policy rollouts that hide cloud latency
  c.cloud = cloud_config()
  return c

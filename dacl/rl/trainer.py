"""The DA-GRPO training loop over a task stream: `dacl train --config=configs/dagrpo_stream.py`.

For every (algorithm, seed): warm-start SFT (shared per seed; its demonstrations include offload
examples), then for each task T_k of the stream, N_k RL steps of
  collaborative rollout -> advantages (A^r − λ·A^c) -> clipped surrogate step -> λ update
  (projected dual ascent plus a proportional term, `kernels.pi_lagrangian`),
and after each task an evaluation of every task (R, L, U, with and without a hard budget cap).
Everything a resumed run needs (params, optimizer, λ, task index, step, matrices so far) is in
the Orbax checkpoint; rerunning the command resumes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl import parallel
from dacl.build import build_model_and_tokenizer, build_task
from dacl.cloud.config import bridge_from_config, describe as describe_cloud
from dacl.continual import metrics as cm
from dacl.continual import stream as sd
from dacl.data.tasks import Example
from dacl.evaluation import format_prompt
from dacl.metrics import MetricsWriter, progress, write_json_atomic
from dacl.rl import kernels
from dacl.rl.algorithms import get_algorithm
from dacl.rl.rollout import cloud_key, finish_rollout, start_rollout, training_batch
from dacl.rl.router import Router, prompt_features
from dacl.rl.step import compute_advantages, make_rl_step
from dacl.sampling import STOP_MARKER, Sampler, SamplingParams, next_bucket
from dacl.train.checkpoint import Checkpointer
from dacl.rl.warmstart import marker_ids, marker_text, uses_self_knowledge, warm_start
from dacl.train.sft import BatchStream, init_train_state, make_optimizer, state_model

log = logging.getLogger("dacl")


# ----------------------------------------------------------------------------- setup helpers

def _micro(batch: dict, accum: int) -> dict:
  return {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()}


# ----------------------------------------------------------------------------- evaluation

def offload_scores(sampler, examples, spec, router, config, tok, seed, tau):
  """The score an algorithm's offload decisions rank problems by, [n], and its source: the
  router's failure probability (`router`), the uniform draw that `random_offload` thresholds at
  τ (`random`), otherwise the policy's probability of starting its answer with the offload
  marker (`policy_marker`; for grpo_local and cloud_only, whose routes ignore it, it says which
  problems their policy would send)."""
  fmt = lambda p: format_prompt(tok, p, config.task_chat)
  n = len(examples)
  if spec.route == "router":
    return router.predict_proba(sampler, [e.prompt for e in examples], fmt), "router"
  if spec.route == "random":
    return 1.0 - np.random.default_rng([seed, 99]).random(n), "random"
  lp = sampler.score_next([fmt(e.prompt) for e in examples], marker_ids(config, tok)[:1])
  return np.exp(lp[:, 0]), "policy_marker"


def local_scores(sampler, task, examples, config, tok, seed) -> np.ndarray:
  """Greedy local answers (offload marker banned) scored per held-out problem, [n]."""
  out = sampler([format_prompt(tok, e.prompt, config.task_chat) for e in examples],
                jax.random.key(seed), SamplingParams(
                    max_new_tokens=config.rl.max_new_tokens, temperature=0.0,
                    marker_ids=marker_ids(config, tok), ban_marker=True))
  return np.asarray(task.score_many(out.texts, examples), np.float64)


def evaluate_collab(sampler, task, examples, spec, bridge, tau, router, config, tok, seed,
                    offload_report: bool = False):
  """Greedy evaluation on held-out examples: R (with collaboration), R_cap (hard budget cap τ),
  L (local only), U (usage: every attempted offload, answered or faulted), U_ok (offloads the
  cloud answered), U_cap.

  offload_report: also how good the offload decisions are, against the cloud's answers to every
  problem (fetched for this report and not counted in the bridge's usage; they stay cached):
  `offload_auroc` of the algorithm's offload score (`offload_scores`) for "the local answer is
  wrong", and `acc_at_budget` {policy, random, oracle} with exactly ⌊τ·n⌋ offloads."""
  fmt = lambda p: format_prompt(tok, p, config.task_chat)
  prompts = [fmt(e.prompt) for e in examples]
  mk = marker_ids(config, tok)
  local = local_scores(sampler, task, examples, config, tok, seed)
  n = len(examples)
  if spec.route == "policy":
    collab = sampler(prompts, jax.random.key(seed), SamplingParams(
        max_new_tokens=config.rl.max_new_tokens, temperature=0.0, marker_ids=mk))
    offload = (collab.stop_reason == STOP_MARKER) | np.array(
        [marker_text(config, tok) in t for t in collab.texts])
    own = np.where(offload, 0.0, task.score_many(collab.texts, examples))
  else:
    own = local
    if spec.route == "random":
      offload = np.random.default_rng([seed, 99]).random(n) < tau
    elif spec.route == "router":
      offload = router.predict_proba(sampler, [e.prompt for e in examples], fmt) > router.threshold
    elif spec.route == "always":
      offload = np.ones(n, bool)
    else:
      offload = np.zeros(n, bool)
  keys = [cloud_key(e, "eval") for e in examples]
  from dacl.cloud.protocol import CloudRequest
  bridge.register([CloudRequest(k, e.prompt, config.cloud.max_tokens, task=e.task, gold=e.answer)
                   for k, e in zip(keys, examples)])
  answers = bridge.collect([keys[i] for i in range(n) if offload[i]])
  answered = [i for i in range(n) if offload[i] and answers[keys[i]].ok]
  cloud_scores = np.full(n, np.nan)
  cloud_scores[answered] = task.score_many([answers[keys[i]].text for i in answered],
                                           [examples[i] for i in answered])
  ok = offload & ~np.isnan(cloud_scores)   # offloaded and answered (not faulted)
  R = np.where(ok, np.nan_to_num(cloud_scores), np.where(offload, local, own))
  cap = int(np.floor(tau * n))
  within = np.cumsum(offload) <= cap
  R_cap = np.where(ok & within, np.nan_to_num(cloud_scores), np.where(offload, local, own))
  U_cap = (offload & within).mean()
  out = {"R": float(R.mean()), "R_cap": float(R_cap.mean()), "L": float(local.mean()),
         "U": float(offload.mean()), "U_ok": float(ok.mean()), "U_cap": float(U_cap),
         "local_scores": [float(x) for x in local]}
  if offload_report:
    before, cached = dict(bridge.stats), {k for k in keys if k in bridge.cache}
    every = bridge.collect(keys)
    out["offload_report_cloud_calls"] = bridge.stats["calls"] - before["calls"]
    # diagnostic answers are not the run's usage, and must not turn its later calls into
    # memory-cache hits (the disk cache keeps them, which counts as a call, as before)
    bridge.stats.update(before)
    for k in keys:
      if k not in cached:
        bridge.cache.pop(k, None)
    cloud_all = local.astype(float).copy()   # a faulted answer scores as the local one
    got = [i for i, k in enumerate(keys) if every[k].ok]
    cloud_all[got] = task.score_many([every[keys[i]].text for i in got], [examples[i] for i in got])
    score, source = offload_scores(sampler, examples, spec, router, config, tok, seed, tau)
    out.update(offload_score=source, offload_auroc=cm.auroc(score, local < 1),
               acc_at_budget=cm.acc_at_budget(local, cloud_all, score, tau),
               cloud_all=[float(x) for x in cloud_all])
  bridge.forget(keys)
  return out


# ----------------------------------------------------------------------------- one run

def run_one(config, run_dir, algo_name, seed, shared_dir) -> dict:
  spec = get_algorithm(algo_name)
  rc, tau = config.rl, float(config.budget.tau)
  os.makedirs(run_dir, exist_ok=True)
  model, tok = build_model_and_tokenizer(config.model, seed, lora=config.get("lora"))
  tasks = [build_task(t) for t in config.stream.tasks]
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise ValueError(f"stream task names must be unique, got {names}")
  by_name = {t.name: t for t in tasks}
  task_of = lambda ex: by_name[ex.task]
  steps = list(config.stream.steps)
  if len(steps) != len(tasks):
    raise ValueError(f"stream.steps has {len(steps)} entries for {len(tasks)} tasks")
  K = len(tasks)
  mesh = parallel.make_mesh(tuple(config.mesh.shape) or None)
  ws_tasks = sd.warmstart_tasks(config, tasks)
  graphdef, params0 = warm_start(
      config, os.path.join(shared_dir, f"warmstart_s{seed}"), model, tok,
      [sd.warmstart_pool(config, t, seed) for t in ws_tasks], seed,
      mesh, tasks=ws_tasks)
  model = nnx.merge(graphdef, params0)
  oc = config.optim
  tx = make_optimizer(rc.lr, sum(steps), rc.warmup_steps, oc.weight_decay, oc.b1, oc.b2,
                      oc.clip_norm, 1.0)
  graphdef, state = init_train_state(model, tx, seed)
  shardings = parallel.state_shardings(state, mesh)   # parameters and moments by the axis rules
  state = jax.device_put(state, shardings)
  if str(rc.get("kl_anchor", "warmstart")) not in ("warmstart", "previous_task"):
    raise ValueError(f"rl.kl_anchor must be 'warmstart' or 'previous_task', got {rc.kl_anchor!r}")
  # rl.kl_anchor = "warmstart": a copy, since the train state shares (and donates) params0's
  # buffers (with LoRA: the initial adapters, over the same frozen base)
  ref_params = jax.tree.map(jnp.copy, state.params) if rc.beta else None
  ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.train.save_every, config.train.keep)
  writer = MetricsWriter(run_dir)
  rec = {"lam": float(rc.lam_init if spec.dual else 0.0), "task_index": 0, "step_in_task": 0,
         "global_step": 0, "R": [], "R_cap": [], "L": [], "U": [], "U_cap": [],
         "step_rewards": [[] for _ in range(K)], "step_usage": [[] for _ in range(K)],
         "post_switch": [None] * K,
         "faults": 0, "data_position": 0, "algorithm": algo_name, "seed": seed}
  if ckpt.latest_step() is not None:
    state, rec, last = ckpt.restore(state)
    log.info("resumed %s from %s/checkpoints/%d (task %d, λ=%.3f)", algo_name, run_dir, last,
             rec["task_index"], rec["lam"])
    writer.truncate_after(last)
    rec.setdefault("post_switch", [None] * K)
  sampler = Sampler(state_model(graphdef, state), tok, max_cache_len=config.model.max_seq_len,
                    mesh=mesh)
  bridge = bridge_from_config(config.cloud, shared_dir)
  if "bridge" in rec:
    bridge.import_state(rec.pop("bridge"))
  eval_sets = sd.eval_sets(config, tasks, seed)

  def save(step):
    ckpt.save(step, state, {**rec, "bridge": bridge.export_state()})
  fmt = lambda p: format_prompt(tok, p, config.task_chat)
  router = Router(tau) if spec.route == "router" else None
  mk = marker_ids(config, tok)
  rl_step = make_rl_step(graphdef, tx, eps_low=rc.eps_low, eps_high=rc.eps_high or None,
                         beta=rc.beta, aggregation=rc.aggregation,
                         ban_id=mk[0] if (spec.route != "policy" and len(mk) == 1) else -1,
                         state_shardings=shardings, decision_weight=rc.decision_weight)
  B, G = rc.batch_prompts, rc.group

  def refresh_sampler():
    sampler.update_state(nnx.state(state_model(graphdef, state)))

  def fit_router(k):
    calib = sd.router_calibration(config, tasks[k], k, seed)
    out = sampler([fmt(e.prompt) for e in calib], jax.random.key(seed), SamplingParams(
        max_new_tokens=rc.max_new_tokens, temperature=0.0, marker_ids=mk, ban_marker=True))
    failed = np.array([1.0 - tasks[k].score(t, e) for t, e in zip(out.texts, calib)])
    feats = prompt_features(sampler, [e.prompt for e in calib], fmt)
    half = len(calib) // 2
    router.fit(feats[:half], failed[:half], feats[half:])

  if "L_init" not in rec:
    # The warm start before any RL (shared by a seed's algorithms): its local answers and its
    # marker probability per held-out problem. No cloud request here: the run's first requests
    # stay its own; the cloud side of acc_at_budget_init is filled in by the final report.
    probe = dataclasses.replace(spec, route="never")
    rec["init_local"], rec["init_score"] = [], []
    for j in range(K):
      loc = local_scores(sampler, tasks[j], eval_sets[j], config, tok, seed)
      rec["init_local"].append([float(x) for x in loc])
      score, _ = offload_scores(sampler, eval_sets[j], probe, None, config, tok, seed, tau)
      rec["init_score"].append([float(x) for x in score])
    rec["L_init"] = [float(np.mean(x)) for x in rec["init_local"]]
    rec["offload_auroc_init"] = [cm.auroc(sc, np.asarray(lo) < 1)
                                 for lo, sc in zip(rec["init_local"], rec["init_score"])]
  rec.setdefault("L_over_steps", [[0, rec["L_init"]]])
  every = int(config.stream.get("local_eval_every", 0))

  total = sum(steps) if spec.train else 0
  bar = progress(total, initial=min(rec["global_step"], total), desc=f"{algo_name} s{seed}")
  t_last = time.perf_counter()
  while rec["task_index"] < K:
    k = rec["task_index"]
    if router is not None:
      fit_router(k)
    pool = sd.rl_pool(config, tasks[k], k, seed)
    # Forgetting countermeasures (all off by default; BUILD_NOTES.md measures each):
    n_rep = int(round(float(config.stream.replay_fraction) * B)) if k > 0 else 0
    stream = BatchStream(pool, B - n_rep, seed + 31 * k)
    replay = None
    if n_rep:   # a small buffer of earlier tasks' prompts, a fixed share of every batch
      buf = [e for j in range(k) for e in
             sd.rl_pool(config, tasks[j], j, seed)[:int(config.stream.replay_size)]]
      replay = BatchStream(buf, n_rep, seed + 31 * k + 7)
    one_batch = lambda i: stream.batch(i) + (replay.batch(i) if replay is not None else [])
    # rl.dynamic_sampling = f > 1: draw f batches' prompts per step and keep B groups whose
    # advantage is not zero for every row (DAPO's dynamic sampling); 1 = off
    ds = max(1, int(rc.get("dynamic_sampling", 1)))
    batch_of = lambda i: [e for j in range(ds) for e in one_batch(ds * i + j)]
    if k > 0 and rec["step_in_task"] == 0 and bool(config.budget.lam_reset) and spec.dual:
      rec["lam"] = rec["lam_integral"] = float(rc.lam_init)   # λ reset at the switch
    if rc.beta and k > 0 and str(rc.kl_anchor) == "previous_task":
      # KL to the policy that finished the previous task (saved at the switch, for resumes)
      anchor_ck = Checkpointer(os.path.join(run_dir, "kl_anchor"), 1, 1)
      if rec["step_in_task"] == 0 and anchor_ck.latest_step() != k:
        anchor_ck.save(k, state.params, {"task_index": k})
      ref_params, _, _ = anchor_ck.restore(state.params, k)
      anchor_ck.close()
    n_steps = steps[k] if spec.train else 0
    # Post-switch accuracy: greedy, held-out, after the first M steps of the new task.
    M = min(int(config.stream.post_switch_steps), n_steps)

    def post_switch_eval():
      r = evaluate_collab(sampler, tasks[k], eval_sets[k], spec, bridge, tau, router, config, tok,
                          seed)
      rec["post_switch"][k] = {key: r[key] for key in ("R", "L", "U")}

    if M == 0 and rec["post_switch"][k] is None:
      post_switch_eval()

    def start(s, gs):
      return start_rollout(
          sampler, batch_of(s - 1), group=G, max_new_tokens=rc.max_new_tokens,
          temperature=rc.temperature, marker_ids=mk, route=spec.route, tau=tau, bridge=bridge,
          key=jax.random.fold_in(jax.random.key(seed), gs), rng=np.random.default_rng([seed, gs]),
          router=router, format_prompt=fmt, marker_text=marker_text(config, tok),
          cloud_max_tokens=config.cloud.max_tokens)

    pending = None
    for s in range(rec["step_in_task"] + 1, n_steps + 1):
      gstep = rec["global_step"] + 1
      if pending is None:
        pending = start(s, gstep)
      nxt = None
      # rl.pipeline: decode batch s+1 (with the pre-update policy: one step off-policy) before
      # waiting for batch s's cloud answers, so their latency overlaps device work. The pipeline
      # drains before checkpoints and task ends, so a resumed run equals an uninterrupted one.
      if rc.pipeline and s < n_steps and not ckpt.should_save(gstep):
        nxt = start(s + 1, gstep + 1)
      ro = finish_rollout(pending, task_of, G, bridge, float(rc.get("partial_credit", 0.0)))
      pending = nxt
      full = ro   # every sampled group: the run's usage and reward; `ro` is what trains
      usage = float(ro.cost.mean())   # attempted offloads, answered or faulted: what λ sees
      if ds > 1:
        ro = keep_informative_groups(ro, G, B)
      adv = compute_advantages(ro.reward.reshape(B, G), ro.cost.reshape(B, G),
                               np.float32(rec["lam"]), np.float32(rc.gamma), scale=rc.scale,
                               shaped=spec.shaped)
      P = next_bucket(max(len(p) for p in ro.prompt_ids), sampler.min_bucket)
      batch = training_batch(ro, G, tok.pad_id, P)
      batch["adv"] = np.asarray(adv, np.float32).reshape(-1)
      state, m = rl_step(state, parallel.shard_batch(_micro(batch, rc.grad_accum), mesh, 1),
                         ref_params)
      refresh_sampler()
      if spec.dual:
        lam, integral = kernels.pi_lagrangian(rec.get("lam_integral", rec["lam"]), usage, tau,
                                              rc.lam_lr, rc.lam_kp)
        rec["lam"], rec["lam_integral"] = float(lam), float(integral)
      rec["step_rewards"][k].append(float(full.reward.mean()))
      rec["step_usage"][k].append(usage)
      rec["faults"] += full.faults
      rec["global_step"], rec["step_in_task"] = gstep, s
      rec["data_position"] = s * B
      if s == M:
        post_switch_eval()
      bar.update(1)
      if gstep % config.train.log_every == 0 or s == n_steps:
        m = jax.device_get(m)
        dt = time.perf_counter() - t_last
        t_last = time.perf_counter()
        writer.write(gstep, {
            "task": tasks[k].name, "task_index": k, "loss": float(m["loss"]),
            "reward_mean": float(full.reward.mean()), "local_acc": float(full.local_correct.mean()),
            "cloud_rate": usage, "cloud_ok_rate": float(full.cloud_ok.mean()), "lambda": rec["lam"],
            "lambda_integral": rec.get("lam_integral", rec["lam"]),
            "kl": float(m["kl"]), "clip_frac": float(m["clip_frac"]),
            "grad_norm": float(m["grad_norm"]), "faults": rec["faults"],
            "cloud_calls": bridge.stats["calls"], "cloud_faults": bridge.stats["faults"],
            "cloud_retries": bridge.summary().get("backend_retries", 0), "steps_per_s": config.train.log_every / max(dt, 1e-9),
            "tokens_per_s": float(ro.mask.sum()) * config.train.log_every / max(dt, 1e-9)})
        bar.set_postfix(task=k, r=f"{ro.reward.mean():.2f}", c=f"{usage:.2f}", lam=f"{rec['lam']:.2f}")
      if every and (gstep % every == 0 or s == n_steps):
        # L over steps (every task's held-out set): what RL does to the local model, and when
        L_now = [float(local_scores(sampler, tasks[j], eval_sets[j], config, tok, seed).mean())
                 for j in range(K)]
        rec["L_over_steps"].append([gstep, L_now])
        writer.write(gstep, {"task": tasks[k].name, "event": "local_eval",
                             **{f"L_{tasks[j].name}": L_now[j] for j in range(K)}})
      if ckpt.should_save(gstep):
        save(gstep)
    # end of task k: evaluate every task
    last = k == K - 1
    row = [evaluate_collab(sampler, tasks[j], eval_sets[j], spec, bridge, tau, router, config,
                           tok, seed, offload_report=last) for j in range(K)]
    for key in ("R", "R_cap", "L", "U", "U_ok", "U_cap"):
      rec.setdefault(key, []).append([r[key] for r in row])
    # the task's own problems right after its training, paired with init_local for L_gain
    rec.setdefault("local_after_own", []).append(row[k]["local_scores"])
    if last:
      for key in ("offload_auroc", "acc_at_budget", "offload_score"):
        rec[key] = [r[key] for r in row]
      rec["acc_at_budget_init"] = [
          cm.acc_at_budget(rec["init_local"][j], r["cloud_all"], rec["init_score"][j], tau)
          for j, r in enumerate(row)]
    rec["task_index"], rec["step_in_task"] = k + 1, 0
    writer.write(rec["global_step"], {"task": tasks[k].name, "event": "task_end",
                                      **{f"eval_R_{tasks[j].name}": row[j]["R"] for j in range(K)},
                                      **{f"eval_U_{tasks[j].name}": row[j]["U"] for j in range(K)}})
    save(rec["global_step"] if spec.train else k + 1)
  bar.close()
  m_first = config.stream.post_switch_steps
  ps = rec["post_switch"]
  result = {
      "R": rec["R"], "R_cap": rec["R_cap"], "L": rec["L"], "U": rec["U"], "U_ok": rec["U_ok"],
      "U_cap": rec["U_cap"],
      "ACC": cm.acc(rec["R"]), "ACC_cap": cm.acc(rec["R_cap"]), "BWT": cm.bwt(rec["R"]),
      "forgetting": cm.forgetting(rec["R"]),
      "post_switch_accuracy": [p["R"] for p in ps],
      "post_switch_local": [p["L"] for p in ps],
      "post_switch_train_reward": cm.post_switch_accuracy(rec["step_rewards"], m_first),
      "usage_last_quarter": cm.usage_last_quarter(rec["step_usage"]),
      "L_init": rec["L_init"], "L_over_steps": rec.get("L_over_steps", []),
      # per task: local accuracy right after its own training against the warm start's, on the
      # same held-out problems (a run resumed from before this field has no per-problem record)
      "L_gain": [cm.paired_gain(rec["init_local"][k], own)
                 for k, own in enumerate(rec["local_after_own"])]
                if len(rec.get("local_after_own", [])) == K else None,
      "offload_auroc": rec["offload_auroc"],
      "acc_at_budget": rec["acc_at_budget"], "offload_score": rec["offload_score"][0],
      "offload_auroc_init": rec["offload_auroc_init"],
      "acc_at_budget_init": rec["acc_at_budget_init"],
      "cloud_calls": int(bridge.stats["calls"]), "cloud_faults": int(bridge.stats["faults"]),
      "cloud_cost": float(bridge.stats["cost"]), "final_lambda": rec["lam"], "seed": seed,
      "rollout_faults": rec["faults"],
      "cloud_usage": {k: (round(v, 8) if isinstance(v, float) else v)
                      for k, v in bridge.summary().items()}}
  write_json_atomic(os.path.join(run_dir, "run_results.json"), result)
  bridge.close()
  writer.close()
  ckpt.close()
  return result


# ----------------------------------------------------------------------------- all runs

_MEAN_KEYS = ("ACC", "ACC_cap", "BWT", "cloud_calls", "cloud_cost")
_LIST_KEYS = ("forgetting", "post_switch_accuracy", "post_switch_local", "post_switch_train_reward",
              "usage_last_quarter", "L_init", "offload_auroc", "offload_auroc_init")
_BUDGET_KEYS = ("acc_at_budget", "acc_at_budget_init")


def aggregate(per_seed: list) -> dict:
  """Over seeds: matrices element-wise means; scalars mean with `_std` (ddof = 1; None for one
  seed); `n_seeds`. `cloud_calls` is the mean per run, `cloud_calls_sum` and `cloud_usage_sum`
  are totals over the runs."""
  out = {"n_seeds": len(per_seed)}
  for key in ("R", "R_cap", "L", "U", "U_ok", "U_cap"):
    out[key] = np.mean([r[key] for r in per_seed], axis=0).round(4).tolist()
  for key in _MEAN_KEYS:
    out[key], out[key + "_std"] = cm.mean_std([r[key] for r in per_seed])
  for key in _LIST_KEYS:
    cols = list(zip(*[r[key] for r in per_seed]))
    out[key] = [None if any(v is None for v in c) else float(np.mean(c)) for c in cols]
  for key in _BUDGET_KEYS:   # per task {policy, random, oracle}: means over seeds
    cols = list(zip(*[r[key] for r in per_seed]))
    out[key] = [None if any(v is None for v in c) else
                {f: float(np.mean([v[f] for v in c])) for f in ("policy", "random", "oracle")}
                for c in cols]
  gains = [r.get("L_gain") for r in per_seed]
  if all(gains):   # pooled over seeds (each seed's held-out set is its own draw)
    out["L_gain"] = []
    for col in zip(*gains):
      g, l = sum(x["gained"] for x in col), sum(x["lost"] for x in col)
      out["L_gain"].append({"delta": float(np.mean([x["delta"] for x in col])), "gained": g,
                            "lost": l, "n": sum(x["n"] for x in col), "p": cm.mcnemar_p(g, l)})
  curves = [r.get("L_over_steps") or [] for r in per_seed]
  if curves[0] and all([p[0] for p in c] == [p[0] for p in curves[0]] for c in curves):
    out["L_over_steps"] = [[p[0], np.mean([c[i][1] for c in curves], axis=0).round(4).tolist()]
                           for i, p in enumerate(curves[0])]
  out["offload_score"] = per_seed[0]["offload_score"]
  out["cloud_calls_sum"] = int(sum(r["cloud_calls"] for r in per_seed))
  usage = [r.get("cloud_usage") or {} for r in per_seed]
  out["cloud_usage_sum"] = {k: sum(u.get(k, 0) for u in usage) for k in usage[0]}
  out["per_seed"] = per_seed
  return out


def keep_informative_groups(ro, group: int, keep: int):
  """The first `keep` groups of a rollout whose rewards or costs differ within the group (a
  group where every row agrees has zero advantage, so no gradient), topped up in draw order
  with uninformative ones when too few differ."""
  r, c = ro.reward.reshape(-1, group), ro.cost.reshape(-1, group)
  informative = (r.std(1) > 0) | (c.std(1) > 0)
  groups = np.argsort(~informative, kind="stable")[:keep]
  rows = (groups[:, None] * group + np.arange(group)[None]).reshape(-1)
  pick = lambda x: x[rows] if isinstance(x, np.ndarray) else [x[i] for i in rows]
  return dataclasses.replace(
      ro, prompt_ids=[ro.prompt_ids[g] for g in groups],
      **{f.name: pick(getattr(ro, f.name)) for f in dataclasses.fields(ro)
         if f.name not in ("prompt_ids", "faults")})


def run_dagrpo(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  parallel.make_mesh(tuple(config.mesh.shape) or None)   # a bad mesh shape fails before any work
  tasks = [build_task(t) for t in config.stream.tasks]
  results = {"tasks": [t.name for t in tasks],
             "warmstart_tasks": [t.name for t in sd.warmstart_tasks(config, tasks)],
             "budget": float(config.budget.tau),
             "cloud": describe_cloud(config.cloud),
             "seeds": [int(x) for x in config.seeds],
             "seed_varies": sd.seed_varies(config),
             "eval_split": "eval (disjoint from every training pool; dacl.data.splits)",
             "data": {}, "algorithms": {}}
  for seed in config.seeds:   # the data of a seed is shared by every algorithm
    seed = int(seed)
    held = sd.eval_sets(config, tasks, seed)
    seen = {t.name for t in sd.warmstart_tasks(config, tasks)}
    results["data"][f"s{seed}"] = {
        t.name: sd.data_report(t, {
            "warmstart": sd.warmstart_pool(config, t, seed) if t.name in seen else [],
            "rl": sd.rl_pool(config, t, k, seed),
            **({"self_knowledge": sd.self_knowledge_pool(config, t, k, seed)}
               if t.name in seen and uses_self_knowledge(config) else {})},
            held[k],
            space_draws=int(config.stream.space_draws))
        for k, t in enumerate(tasks)}
  for algo in config.algorithms:
    per_seed = []
    for seed in config.seeds:
      per_seed.append(run_one(config, os.path.join(workdir, "runs", f"{algo}_s{seed}"), algo,
                              int(seed), workdir))
    results["algorithms"][algo] = aggregate(per_seed)
    write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results


def eval_runs(config, workdir: str, step=None) -> dict:
  """`dacl eval` for an RL run directory: restore each (algorithm, seed) run's checkpoint
  (latest, or `step`) and evaluate every stream task (R, R_cap, L, U). Strict restore."""
  from dacl.train.checkpoint import CheckpointError
  tau = float(config.budget.tau)
  tasks = [build_task(t) for t in config.stream.tasks]
  out = {"tasks": [t.name for t in tasks], "budget": tau, "runs": {}}
  for algo in config.algorithms:
    spec = get_algorithm(algo)
    for seed in config.seeds:
      run_dir = os.path.join(workdir, "runs", f"{algo}_s{seed}")
      ckdir = os.path.join(run_dir, "checkpoints")
      if not os.path.isdir(ckdir):
        raise CheckpointError(f"no checkpoints to evaluate: {ckdir} does not exist")
      model, tok = build_model_and_tokenizer(config.model, int(seed), lora=config.get("lora"))
      tx = make_optimizer(config.rl.lr, 1, 0)
      graphdef, state = init_train_state(model, tx, int(seed))
      ck = Checkpointer(ckdir)
      state, rec, got = ck.restore(state, step)
      ck.close()
      sampler = Sampler(state_model(graphdef, state), tok, max_cache_len=config.model.max_seq_len)
      bridge = bridge_from_config(config.cloud, workdir)
      if "bridge" in rec:
        bridge.import_state(rec["bridge"])
      router = None
      if spec.route == "router":   # refit on the restored policy, as the trainer does per task
        router = Router(tau)
        k = min(rec["task_index"], len(tasks) - 1)
        fmt = lambda p: format_prompt(tok, p, config.task_chat)
        calib = sd.router_calibration(config, tasks[k], k, int(seed))
        o = sampler([fmt(e.prompt) for e in calib], jax.random.key(int(seed)), SamplingParams(
            max_new_tokens=config.rl.max_new_tokens, temperature=0.0,
            marker_ids=marker_ids(config, tok), ban_marker=True))
        failed = np.array([1.0 - tasks[k].score(t, e) for t, e in zip(o.texts, calib)])
        feats = prompt_features(sampler, [e.prompt for e in calib], fmt)
        router.fit(feats[: len(calib) // 2], failed[: len(calib) // 2], feats[len(calib) // 2:])
      rows = [evaluate_collab(sampler, t, ev, spec, bridge, tau, router, config, tok, int(seed))
              for t, ev in zip(tasks, sd.eval_sets(config, tasks, int(seed)))]
      for r in rows:
        r.pop("local_scores")
      bridge.close()
      out["runs"][f"{algo}_s{seed}"] = {"step": got, "per_task": rows}
  write_json_atomic(os.path.join(workdir, "eval.json"), out)
  return out

"""The AdaSwitch job: `dacl train --config=configs/adaswitch_arith.py --workdir=DIR`.

Per seed, in WORKDIR/runs/s<seed>/ (every stage resumable; a rerun skips finished stages):
  stage1/  self-practice SFT on gold trajectories of train-split problems (Observations masked)
  stage2/  collaborative examination: the stage-1 model solves other train-split problems, the
           rule check flags its first wrong step, the cloud corrects it, repeatedly
           (trajectories.jsonl, stats.json)
  stage3/  reflective SFT (from stage 1) on those trajectories plus gold ones
  eval/    one JSON per evaluated setting: the four modes, the threshold sweep, the ablations
Evaluation is on eval-split problems, disjoint from both training pools (checked). results.json
holds the mean over seeds with `_std` (ddof = 1) and every seed's figures.
"""
from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl import parallel
from dacl.adaswitch import engine as eng
from dacl.adaswitch import training as trn
from dacl.adaswitch import trajectories as tj
from dacl.build import build_model_and_tokenizer, build_task
from dacl.cloud.config import bridge_from_config, describe as describe_cloud
from dacl.continual.metrics import auroc, mean_std
from dacl.continual.stream import data_report, eval_data_seed
from dacl.data.splits import derive_seed
from dacl.metrics import read_json_shared, write_json_atomic
from dacl.sampling import Sampler
from dacl.train.sft import BatchStream, fit, full_params, init_train_state, make_optimizer, state_model

log = logging.getLogger("dacl")

MODES = ("local", "self_reflection", "adaswitch", "cloud")
ABLATIONS = ("no_cloud", "no_reflection", "no_reflective_learning")


def _golden(task, split, n, seed, distinct=None):
  """(example, gold trajectory) pairs: examples whose solution converts to verified steps."""
  exs = task.examples(split, n, seed=seed, distinct=distinct)
  pairs = [(e, tj.gold_for(e)) for e in exs]
  return [(e, g) for e, g in pairs if g is not None], len(exs)


def _eval_tasks(config):
  return [build_task(t) for t in (config.eval_tasks if len(config.eval_tasks) else config.tasks)]


def _eval_size(config, tc) -> int:
  return int(tc.get("eval_size", 0) or 0) or int(config.eval.num_examples)


def eval_sets(config, seed):
  tcs = list(config.eval_tasks) if len(config.eval_tasks) else list(config.tasks)
  out = []
  for t, tc in zip(_eval_tasks(config), tcs):
    pairs, n = _golden(t, "eval", _eval_size(config, tc), eval_data_seed(config, seed))
    out.append((t, pairs))
  return out


def training_pools(config, tasks, seed):
  """(stage-1 pairs, stage-2 pairs, coverage): (example, gold) pairs from the train split, each
  pool at its own data seed; coverage says how many drawn problems had a verified gold
  trajectory."""
  pool1, pool2, coverage = [], [], {}
  for k, t in enumerate(tasks):
    p, n = _golden(t, "train", config.stage1.examples_per_task, derive_seed(seed, "adaswitch-sft", k))
    q, m = _golden(t, "train", config.stage2.questions_per_task, derive_seed(seed, "adaswitch-exam", k))
    pool1 += p
    pool2 += q
    coverage[t.name] = {"stage1": f"{len(p)}/{n}", "stage2": f"{len(q)}/{m}"}
  return pool1, pool2, coverage


def engine_config(config, seed: int, **kw) -> eng.EngineConfig:
  a = config.adaswitch
  base = dict(max_steps=a.max_steps, step_max_tokens=a.step_max_tokens, threshold=a.threshold,
              max_fixes_per_step=a.max_fixes_per_step, temperature=a.temperature,
              cloud_max_tokens=config.cloud.max_tokens, cloud_attempts=config.stage2.cloud_attempts,
              drop_flagged=bool(a.drop_flagged), seed=seed)
  base.update(kw)
  return eng.EngineConfig(**base)


def run_mode(sampler, tok, config, bridge, pairs, mode, seed, chat, **kw) -> list:
  """All (example, gold) pairs through the engine in batches of adaswitch.batch_rows."""
  e = eng.StepEngine(sampler, tok, engine_config(config, seed, **kw), bridge=bridge, chat=chat,
                     context_limit=config.model.max_seq_len)
  rows, B = [], int(config.adaswitch.batch_rows)
  for i in range(0, len(pairs), B):
    chunk = pairs[i:i + B]
    rows += e.run(e.new_rows([x for x, _ in chunk], [g for _, g in chunk]), mode)
  return rows


def summarise(rows, local_params: int, cloud_params: float) -> dict:
  """accuracy, cloud calls, local/cloud tokens, FLOPs (2·params·tokens per model: the local
  model over every token it processed, prefill included; the cloud over its prompt and
  completion tokens), steps written by each side, and the switch rate."""
  n = max(1, len(rows))
  local_tokens = sum(r.local_tokens for r in rows)
  processed = sum(r.local_processed for r in rows)
  cloud_tokens = sum(r.cloud_prompt_tokens + r.cloud_completion_tokens for r in rows)
  judged = sum(1 for r in rows for x in r.records if x.p_yes is not None)
  steps = {"local": sum(r.steps_by.get("local", 0) for r in rows),
           "cloud": sum(r.steps_by.get("cloud", 0) for r in rows)}
  return {"accuracy": float(np.mean([r.correct for r in rows])) if rows else 0.0, "n": len(rows),
          "cloud_calls": int(sum(r.cloud_calls for r in rows)),
          "cloud_faults": int(sum(r.cloud_faults for r in rows)),
          "local_tokens": int(local_tokens), "local_tokens_processed": int(processed),
          "cloud_tokens": int(cloud_tokens),
          "flops": float(2 * local_params * processed + 2 * cloud_params * cloud_tokens),
          "steps_local": steps["local"], "steps_cloud": steps["cloud"],
          "switches": int(sum(r.switches for r in rows)),
          "switch_rate": float(sum(r.switches for r in rows) / judged) if judged else 0.0,
          "cloud_tokens_per_problem": cloud_tokens / n}


def reflection_quality(rows, switch_budget: float = 1.0) -> dict:
  """How well P("Yes") separates wrong local steps from right ones, on trajectories run without
  acting on it: each row's steps up to its first wrong one (by the rule check), labelled wrong /
  right. AUROC, and the threshold maximising Youden's J = TPR - FPR with its TPR and FPR, among
  the cuts whose predicted switch rate is at most `switch_budget`.

  The predicted switch rate of a cut is the fraction of *all* judged local steps (whole
  trajectories) it flags. A switched step costs the cloud about what cloud-only pays for that
  step, so the switch rate predicts adaswitch's share of cloud-only's cloud tokens; the budget
  holds that share without looking at the evaluation split."""
  ys, ps, every = [], [], []
  for r in rows:
    bad = tj.first_wrong_step(r.records, r.gold) if r.gold is not None else None
    every += [x.p_yes for x in r.records if x.p_yes is not None]
    for i, x in enumerate(r.records):
      if bad is not None and i > bad:
        break
      if x.p_yes is not None:
        ys.append(int(bad == i))
        ps.append(x.p_yes)
  ys, ps, every = np.asarray(ys), np.asarray(ps), np.sort(np.asarray(every))
  out = {"n_steps": int(len(ys)), "n_wrong": int(ys.sum()), "auroc": None, "threshold": None,
         "tpr": None, "fpr": None, "predicted_switch_rate": None,
         "switch_budget": float(switch_budget), "youden_threshold": None}
  flag_rate = lambda t: float(len(every) - np.searchsorted(every, t, side="left")) / len(every)
  if 0 < ys.sum() < len(ys):
    out["auroc"] = auroc(ps, ys)
    best, free = None, None
    for t in np.unique(ps):   # a cut at t flags P(Yes) >= t
      flag = ps >= t
      tpr, fpr = flag[ys == 1].mean(), flag[ys == 0].mean()
      cand = (tpr - fpr, float(t), float(tpr), float(fpr))
      if free is None or cand[0] > free[0]:
        free = cand
      if flag_rate(t) <= switch_budget and (best is None or cand[0] > best[0]):
        best = cand
    best = best or (0.0, float(np.nextafter(max(ps.max(), every.max()), np.inf)), 0.0, 0.0)
    # "P(Yes) > threshold" switches: the cut sits just below the chosen value
    out.update(threshold=float(np.nextafter(best[1], -np.inf)), tpr=best[2], fpr=best[3],
               predicted_switch_rate=flag_rate(best[1]),
               youden_threshold=float(np.nextafter(free[1], -np.inf)))
  return out


def _evaluate(name, fn, eval_dir, key=None, before_write=None):
  """Cached per setting: a rerun (or a resumed run) reuses finished evaluations whose `key` (e.g.
  the threshold they ran at) is unchanged. before_write(): called before a result is written."""
  path = os.path.join(eval_dir, f"{name}.json")
  out = read_json_shared(path)
  if out is not None and out.get("key") == key:
    return out
  t = time.perf_counter()
  out = fn()
  out["wall_s"] = round(time.perf_counter() - t, 2)
  if key is not None:
    out["key"] = key
  if before_write is not None:
    before_write()
  write_json_atomic(path, out)
  log.info("eval %s: accuracy %.3f, cloud tokens %d", name, out["accuracy"], out["cloud_tokens"])
  return out


def _stage_opt(sc, config, steps):
  oc = config.optim
  return make_optimizer(sc.lr, steps, sc.warmup_steps, oc.weight_decay, oc.b1, oc.b2, oc.clip_norm,
                        0.1)


def run_seed(config, run_dir: str, seed: int, workdir: str) -> dict:
  os.makedirs(run_dir, exist_ok=True)
  chat = bool(config.task_chat)
  # one device: a 1-device mesh; on several (config.mesh.shape), parameters and optimizer state
  # by the logical-axis rules, trajectory batches and sampler rows over ('data', 'fsdp')
  mesh = parallel.make_mesh(tuple(config.mesh.shape) or None)
  dp = parallel.data_parallel_size(mesh)
  # with lora.rank > 0: adapters on a frozen base; both stages train the adapters only
  model, tok = build_model_and_tokenizer(config.model, seed, mesh, config.get("lora"))
  local_params = model.cfg.num_params()
  cloud_params = float(config.adaswitch.cloud_params)
  tasks = [build_task(t) for t in config.tasks]
  s1, s2, s3 = config.stage1, config.stage2, config.stage3

  # -- data: two training pools and the held-out sets, disjoint by split ------------------
  pool1, pool2, coverage = training_pools(config, tasks, seed)
  held = eval_sets(config, seed)
  trained = {t.name: {"stage1": [e for e, _ in pool1 if e.task == t.name],
                      "stage2": [e for e, _ in pool2 if e.task == t.name]} for t in tasks}
  data = {t.name: data_report(t, trained.get(t.name, {}), [e for e, _ in pairs],
                              space_draws=int(config.adaswitch.space_draws))
          for t, pairs in held}
  for t, pairs in held:
    data[t.name]["gold_coverage"] = {**coverage.get(t.name, {}), "eval": len(pairs)}

  # -- stage 1: self-practice --------------------------------------------------------------
  qtext = lambda e: eng.question_text(tok, e.prompt, chat)
  items1 = [trn.trajectory_tokens(tok, qtext(e), g.records(), "self_practice", chat)
            for e, g in pool1]
  tx1 = _stage_opt(s1, config, s1.steps)
  graphdef, state = init_train_state(model, tx1, seed)
  st1 = BatchStream(items1, s1.batch_size, seed)
  state = fit(graphdef, state, tx1, lambda i: trn.make_trajectory_batch(st1.batch(i), tok, s1.seq_len,
                                                                       pack=bool(s1.pack),
                                                                       row_multiple=dp),
              s1.steps, os.path.join(run_dir, "stage1", "checkpoints"),
              desc=f"stage 1 self-practice (seed {seed})", record={"stage": 1, "seed": seed},
              save_every=config.train.save_every, mesh=mesh)
  params1, frozen = state.params, state.frozen   # frozen: the LoRA base (None without LoRA)
  # the sampler's state for trained parameters (adapters merged with the base, no copy)
  model_state = lambda p: nnx.state(nnx.merge(graphdef, full_params(p, frozen)))
  sampler = Sampler(state_model(graphdef, state), tok, max_cache_len=config.model.max_seq_len,
                    min_bucket=int(config.adaswitch.min_bucket),
                    min_rows=int(config.adaswitch.min_rows), mesh=mesh)
  bridge = bridge_from_config(config.cloud, workdir)
  # the bridge's counters, saved before each finished stage or evaluation is written (a crash
  # in between counts the calls it repeats, as they are paid twice), so a resumed run reports
  # the whole run's cloud usage, not only its own
  usage_path = os.path.join(run_dir, "cloud_usage.json")
  saved = read_json_shared(usage_path)
  if saved is not None:
    bridge.import_state(saved)
  save_usage = lambda: write_json_atomic(
      usage_path, {k: v for k, v in bridge.export_state().items() if k != "cache"})

  # -- stage 2: collaborative examination -----------------------------------------------------
  s2dir = os.path.join(run_dir, "stage2")
  os.makedirs(s2dir, exist_ok=True)
  tpath = os.path.join(s2dir, "trajectories.jsonl")
  traj = trn.read_jsonl_shared(tpath)   # every decision on run files: process 0's view
  if traj is None:
    t0 = time.perf_counter()
    rows = run_mode(sampler, tok, config, bridge, pool2, "oracle", seed, chat,
                    temperature=float(s2.temperature))
    out = [{"task": r.example.task, "prompt": r.example.prompt, "failed": r.failed,
            "records": [trn.record_to_json(x) for x in r.records]} for r in rows]
    n_steps = sum(1 for r in rows for x in r.records if x.author == "local")
    n_wrong = sum(1 for r in rows for x in r.records if x.author == "local" and x.wrong)
    stats = {"questions": len(rows), "failed": int(sum(r.failed for r in rows)),
             "solved_alone": int(sum(1 for r in rows if r.correct and r.switches == 0)),
             "local_steps": n_steps, "wrong_local_steps": n_wrong,
             "local_step_accuracy": 1 - n_wrong / max(1, n_steps),
             "cloud_calls": int(sum(r.cloud_calls for r in rows)),
             "wall_s": round(time.perf_counter() - t0, 1)}
    save_usage()
    write_json_atomic(os.path.join(s2dir, "stats.json"), stats)
    trn.write_jsonl(tpath, out)   # written last: its presence marks the stage done
    traj = out
  stats2 = read_json_shared(os.path.join(s2dir, "stats.json"))
  exam = [r for r in traj if not r["failed"]]

  # -- stage 3: reflective learning -------------------------------------------------------------
  items3 = [trn.trajectory_tokens(tok, eng.question_text(tok, r["prompt"], chat),
                                  [trn.record_from_json(x) for x in r["records"]], "reflective", chat)
            for r in exam]
  n_gold = int(round(len(items3) * s3.gold_fraction / max(1e-9, 1 - s3.gold_fraction)))
  rng = np.random.default_rng([seed, 3])
  items3 += [items1[i] for i in rng.choice(len(items1), size=min(n_gold, len(items1)), replace=False)]
  tx3 = _stage_opt(s3, config, s3.steps)
  # a copy: the train step donates its state, and params1 is evaluated again (an ablation)
  model1 = nnx.merge(graphdef, full_params(jax.tree.map(jnp.copy, params1), frozen))
  graphdef, state = init_train_state(model1, tx3, seed)
  st3 = BatchStream(items3, s3.batch_size, seed + 3)
  state = fit(graphdef, state, tx3, lambda i: trn.make_trajectory_batch(st3.batch(i), tok, s3.seq_len,
                                                                       pack=bool(s3.pack),
                                                                       row_multiple=dp),
              s3.steps, os.path.join(run_dir, "stage3", "checkpoints"),
              desc=f"stage 3 reflective learning (seed {seed})", record={"stage": 3, "seed": seed},
              save_every=config.train.save_every, mesh=mesh)
  params3 = state.params

  # -- evaluation ------------------------------------------------------------------------------
  eval_dir = os.path.join(run_dir, "eval")
  os.makedirs(eval_dir, exist_ok=True)
  pairs = [p for _, ps in held for p in ps]

  def evaluate(params, mode, **kw):
    sampler.update_state(model_state(params))
    rows = run_mode(sampler, tok, config, bridge, pairs, mode, seed, chat, **kw)
    out = summarise(rows, local_params, cloud_params)
    out["per_task"] = {t.name: summarise([r for r in rows if r.example.task == t.name],
                                         local_params, cloud_params) for t, _ in held}
    if kw.get("probe"):
      out["reflection"] = reflection_quality(rows)
    return out

  # The switching threshold: adaswitch.threshold, or (-1) the one that best separates wrong from
  # right steps on train-split calibration problems (never the eval split) among those predicted
  # to switch at most adaswitch.switch_budget of the steps. A saved calibration made under
  # another budget is redone.
  calib_path = os.path.join(run_dir, "stage3", "calibration.json")
  budget = float(config.adaswitch.switch_budget)
  calibration = read_json_shared(calib_path)
  if calibration is None or calibration.get("switch_budget") != budget:
    cal = []
    for k, t in enumerate(tasks):
      p, _ = _golden(t, "train", int(config.adaswitch.calib_per_task),
                     derive_seed(seed, "adaswitch-calib", k))
      cal += p
    sampler.update_state(model_state(params3))
    rows = run_mode(sampler, tok, config, bridge, cal, "self_reflection", seed, chat, threshold=1.01)
    calibration = {**reflection_quality(rows, budget), "problems": len(cal)}
    save_usage()
    write_json_atomic(calib_path, calibration)
  thr = float(config.adaswitch.threshold)
  if thr < 0:
    thr = calibration["threshold"] if calibration["threshold"] is not None else 0.5
  cached = lambda name, fn, key=None: _evaluate(name, fn, eval_dir, key, save_usage)
  modes = {}
  for mode in MODES:   # local mode also reads P(Yes) without acting on it (uncounted): a probe
    modes[mode] = cached(mode, lambda: evaluate(params3, mode, threshold=thr,
                                                probe=(mode == "local")),
                         key={"threshold": thr} if mode == "adaswitch" else None)
  probe = modes["local"]["reflection"]
  sweep = []
  for th in config.adaswitch.thresholds:   # the chosen threshold's run is adaswitch mode itself
    r = modes["adaswitch"] if float(th) == thr else cached(
        f"adaswitch_thr{th:g}", lambda: evaluate(params3, "adaswitch", threshold=float(th)))
    sweep.append({"threshold": float(th), **{k: r[k] for k in ("accuracy", "cloud_tokens",
                                                              "cloud_calls", "switch_rate", "flops")}})
  rate = modes["adaswitch"]["switch_rate"]
  ablations = {
      "no_cloud": cached("no_cloud", lambda: evaluate(params3, "resample", threshold=thr),
                         key={"threshold": thr}),
      "no_reflection": cached("no_reflection", lambda: evaluate(
          params3, "random", random_rate=max(rate, 1e-3)), key={"rate": rate}),
      "no_reflective_learning": cached("no_reflective_learning",
                                       lambda: evaluate(params1, "adaswitch", threshold=thr),
                                       key={"threshold": thr})}
  bridge_stats = bridge.summary()
  bridge.close()
  result = {"seed": seed, "modes": modes, "ablations": ablations, "threshold": thr,
            "calibration": calibration, "reflection_eval": probe,
            "threshold_sweep": sweep, "stage2": stats2, "data": data,
            "local_params": local_params, "cloud_params": cloud_params,
            "stage_examples": {"stage1": len(items1), "stage3": len(items3),
                               "stage3_examination": len(exam)},
            "cloud_usage": {k: (round(v, 8) if isinstance(v, float) else v)
                            for k, v in bridge_stats.items()}}
  write_json_atomic(os.path.join(run_dir, "run_results.json"), result)
  return result


_SUMMARY_KEYS = ("accuracy", "cloud_calls", "local_tokens", "cloud_tokens", "flops",
                 "switch_rate", "steps_local", "steps_cloud")


def _mean_block(blocks: list) -> dict:
  out = {}
  for k in _SUMMARY_KEYS:
    if k in blocks[0]:
      m, s = mean_std([b[k] for b in blocks])
      out[k] = int(round(m)) if k in ("cloud_calls", "local_tokens", "cloud_tokens",
                                      "steps_local", "steps_cloud") else m
      out[k + "_std"] = s
  if "per_task" in blocks[0]:
    out["per_task"] = {t: {"accuracy": mean_std([b["per_task"][t]["accuracy"] for b in blocks])[0]}
                       for t in blocks[0]["per_task"]}
  return out


def aggregate(per_seed: list) -> dict:
  modes = {m: _mean_block([r["modes"][m] for r in per_seed]) for m in MODES}
  abl = {a: _mean_block([r["ablations"][a] for r in per_seed]) for a in ABLATIONS}
  sweep = []
  for i, s in enumerate(per_seed[0]["threshold_sweep"]):
    blk = _mean_block([r["threshold_sweep"][i] for r in per_seed])
    sweep.append({"threshold": s["threshold"], **blk})
  loc, cl, ada = modes["local"]["accuracy"], modes["cloud"]["accuracy"], modes["adaswitch"]["accuracy"]
  goal = {"beats_local": ada > loc,
          "beats_self_reflection": ada > modes["self_reflection"]["accuracy"],
          "gap_closed": (ada - loc) / (cl - loc) if cl != loc else None,
          "cloud_token_share": (modes["adaswitch"]["cloud_tokens"] / modes["cloud"]["cloud_tokens"]
                                if modes["cloud"]["cloud_tokens"] else None)}
  reflection = {"threshold": mean_std([r["threshold"] for r in per_seed]),
                "calibration_auroc": [r["calibration"]["auroc"] for r in per_seed],
                "eval_auroc": [r["reflection_eval"]["auroc"] for r in per_seed],
                "eval_wrong_steps": [r["reflection_eval"]["n_wrong"] for r in per_seed],
                "eval_steps": [r["reflection_eval"]["n_steps"] for r in per_seed]}
  return {"modes": modes, "ablations": abl, "threshold_sweep": sweep, "goal": goal,
          "reflection": reflection, "n_seeds": len(per_seed)}


def run_adaswitch(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  results = {"algorithm": "adaswitch",
             "tasks": [build_task(t).name for t in config.tasks],
             "eval_tasks": [t.name for t in _eval_tasks(config)],
             "cloud": describe_cloud(config.cloud), "seeds": [int(s) for s in config.seeds],
             "seed_varies": ["model initialisation", "training data"] + (
                 ["evaluation data"] if int(config.eval.get("data_seed", -1)) < 0 else []),
             "threshold_setting": float(config.adaswitch.threshold),
             "eval_split": "eval (disjoint from both training pools; dacl.data.splits)"}
  per_seed = [run_seed(config, os.path.join(workdir, "runs", f"s{int(s)}"), int(s), workdir)
              for s in config.seeds]
  results.update(aggregate(per_seed))
  results["per_seed"] = per_seed
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results


def eval_adaswitch(config, workdir: str, step=None) -> dict:
  """`dacl eval` of an AdaSwitch run directory: each seed's stage-3 checkpoint (latest, or
  `step`; strict restore) in the four modes on the config's evaluation tasks, with the
  configured cloud (e.g. --config.cloud.backend=openai against `dacl serve`)."""
  from dacl.train.checkpoint import CheckpointError, Checkpointer
  chat = bool(config.task_chat)
  out = {"algorithm": "adaswitch", "eval_tasks": [t.name for t in _eval_tasks(config)],
         "cloud": describe_cloud(config.cloud), "runs": {}}
  for seed in config.seeds:
    seed = int(seed)
    ckdir = os.path.join(workdir, "runs", f"s{seed}", "stage3", "checkpoints")
    if not os.path.isdir(ckdir):
      raise CheckpointError(f"no AdaSwitch checkpoints to evaluate: {ckdir} does not exist")
    mesh = parallel.make_mesh(tuple(config.mesh.shape) or None)
    model, tok = build_model_and_tokenizer(config.model, seed, mesh, config.get("lora"))
    graphdef, state = init_train_state(model, make_optimizer(1e-3, 1), seed)
    state = parallel.place(state, mesh)   # the restore target carries the mesh's layout
    ck = Checkpointer(ckdir)
    state, _, got = ck.restore(state, step)
    ck.close()
    sampler = Sampler(state_model(graphdef, state), tok, max_cache_len=config.model.max_seq_len,
                      min_bucket=int(config.adaswitch.min_bucket),
                      min_rows=int(config.adaswitch.min_rows), mesh=mesh)
    bridge = bridge_from_config(config.cloud, workdir)
    held = eval_sets(config, seed)
    pairs = [p for _, ps in held for p in ps]
    modes = {}
    try:
      for mode in MODES:
        rows = run_mode(sampler, tok, config, bridge, pairs, mode, seed, chat)
        modes[mode] = summarise(rows, model.cfg.num_params(), float(config.adaswitch.cloud_params))
        modes[mode]["per_task"] = {t.name: summarise(
            [r for r in rows if r.example.task == t.name], model.cfg.num_params(),
            float(config.adaswitch.cloud_params)) for t, _ in held}
        modes[mode]["steps_by_answer"] = [r.steps_by for r in rows[:8]]
    finally:
      bridge.close()
    out["runs"][f"s{seed}"] = {"step": got, "modes": modes}
  write_json_atomic(os.path.join(workdir, "eval.json"), out)
  return out

"""The data of a task stream: which problems each phase of a run sees, from one place.

Every pool below is drawn at its own derived data seed (`derive_seed(run seed, purpose, ...)`),
so pools of different purposes and run seeds are independent draws; every training pool comes
from the `train` split and every evaluation set from the `eval` split, which are disjoint by
construction (`dacl.data.splits`). `data_report` re-checks it on the actual sets of a run.

What a run seed varies: model initialisation, rollout sampling, the training pools, and the
held-out sets unless `eval.data_seed` fixes them (then they are the same for every seed).
"""
from __future__ import annotations

from dacl.data.splits import derive_seed, in_calib_part


def eval_data_seed(config, seed: int) -> int:
  ds = int(config.eval.get("data_seed", -1))
  return int(seed) if ds < 0 else ds


def eval_size(config, task_cfg) -> int:
  n = int(task_cfg.get("eval_size", 0) or 0)
  return n or int(config.eval.num_examples)


def eval_sets(config, tasks, seed: int) -> list:
  """Held-out problems per stream task (distinct, from the eval split)."""
  s = eval_data_seed(config, seed)
  return [t.examples("eval", eval_size(config, tc), seed=s)
          for t, tc in zip(tasks, config.stream.tasks)]


def calib_fraction(config) -> float:
  """`warmstart.calib_fraction`: the share of each task's train split kept out of the warm
  start's demonstrations (`dacl.data.splits.in_calib_part`). 0 = none."""
  f = float(config.warmstart.get("calib_fraction", 0.0))
  if not 0.0 <= f < 1.0:
    raise ValueError(f"warmstart.calib_fraction must be in [0, 1), got {f}")
  return f


def _part(config, calib: bool):
  """The `keep` filter of the calibration part (calib=True) or of the rest of the train split;
  None when the config has no calibration part."""
  f = calib_fraction(config)
  if f == 0.0:
    return None
  return (lambda c: in_calib_part(c, f)) if calib else (lambda c: not in_calib_part(c, f))


def _distinct(config) -> bool:
  """`stream.distinct_pools`: RL's prompts and the self-knowledge labels are distinct problems,
  drawn as the held-out sets are. A generator that draws the digit count first puts half its
  draws on ~100 one-digit problems; distinct sets are mostly the large two-digit part, so i.i.d.
  training pools and distinct held-out sets describe different problem mixes (BUILD_NOTES F8)."""
  return bool(config.stream.get("distinct_pools", False))


def warmstart_pool(config, task, seed: int) -> list:
  """The warm start's demonstrations: train-split problems outside the calibration part."""
  return task.examples("train", int(config.warmstart.examples_per_task),
                       seed=derive_seed(seed, "warmstart"), keep=_part(config, calib=False))


def warmstart_tasks(config, tasks) -> list:
  """The stream tasks whose demonstrations the warm start sees: `warmstart.coverage` "all"
  (every task: RL then shifts a distribution the model has seen) or "first" (the first task
  only: later tasks arrive unseen)."""
  cov = str(config.warmstart.get("coverage", "all"))
  if cov not in ("all", "first"):
    raise ValueError(f"warmstart.coverage must be 'all' or 'first', got {cov!r}")
  return list(tasks) if cov == "all" else list(tasks[:1])


def rl_pool(config, task, k: int, seed: int) -> list:
  """RL's prompts for stream task k: from the calibration part when `stream.rl_on_calib` (the
  problems the warm start never saw), else from the whole train split."""
  on_calib = bool(config.stream.get("rl_on_calib", False))
  if on_calib and calib_fraction(config) == 0.0:
    raise ValueError("stream.rl_on_calib needs warmstart.calib_fraction > 0")
  return task.examples("train", int(config.stream.train_size), seed=derive_seed(seed, "rl", k),
                       keep=_part(config, calib=True) if on_calib else None,
                       distinct=_distinct(config))


def self_knowledge_pool(config, task, k: int, seed: int) -> list:
  """Problems the warm start labels by its own failures (`warmstart.marker_on`): a train-split
  draw of its own, from the calibration part when there is one (so the labels describe the
  model on problems it has not memorised)."""
  return task.examples("train", int(config.warmstart.calib_examples),
                       seed=derive_seed(seed, "self_knowledge", k), keep=_part(config, calib=True),
                       distinct=_distinct(config))


def router_calibration(config, task, k: int, seed: int) -> list:
  """The router baseline's fitting set (eval.num_examples problems): train-split problems, from
  the calibration part when there is one (as self-knowledge labels), distinct where the split
  has that many (a small file task repeats rows)."""
  from dacl.data.splits import SplitTooSmallError
  n, s, keep = int(config.eval.num_examples), derive_seed(seed, "router", k), _part(config, True)
  try:
    return task.examples("train", n, seed=s, distinct=True, keep=keep)
  except SplitTooSmallError:
    return task.examples("train", n, seed=s, keep=keep)


def seed_varies(config) -> list:
  out = ["model initialisation", "rollout sampling", "training data"]
  if int(config.eval.get("data_seed", -1)) < 0:
    out.append("evaluation data")
  return out


def data_report(task, train_pools: dict, held_out: list, space_draws: int = 5000) -> dict:
  """Per task: problem-space size (Chao1 estimate from draws; exact for files), the training
  pools' sizes and distinct problems, the held-out size, and their measured overlap (0)."""
  trained = set()
  pools = {}
  for name, pool in train_pools.items():
    cans = {e.canonical for e in pool}
    trained |= cans
    pools[name] = {"n": len(pool), "distinct": len(cans)}
  held = {e.canonical for e in held_out}
  ws = {e.canonical for e in train_pools.get("warmstart", [])}
  for name, pool in train_pools.items():   # how much of each pool the warm start has seen
    if name != "warmstart" and ws:
      cans = {e.canonical for e in pool}
      pools[name]["seen_by_warmstart"] = round(len(cans & ws) / max(1, len(cans)), 4)
  overlap = len(held & trained)
  if overlap:   # impossible by construction; fail loudly rather than report memorisation
    raise AssertionError(f"task {task.name}: {overlap} held-out problems are in a training pool")
  return {"space": task.space(draws=space_draws), "train_pools": pools,
          "eval": {"n": len(held_out), "distinct": len(held)}, "eval_train_overlap": overlap}

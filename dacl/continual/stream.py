"""The data of a task stream: which problems each phase of a run sees, from one place.

Every pool below is drawn at its own derived data seed (`derive_seed(run seed, purpose, ...)`),
so pools of different purposes and run seeds are independent draws; every training pool comes
from the `train` split and every evaluation set from the `eval` split, which are disjoint by
construction (`dacl.data.splits`). `data_report` re-checks it on the actual sets of a run.

What a run seed varies: model initialisation, rollout sampling, the training pools, and the
held-out sets unless `eval.data_seed` fixes them (then they are the same for every seed).
"""
from __future__ import annotations

from dacl.data.splits import derive_seed


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


def warmstart_pool(task, n: int, seed: int) -> list:
  return task.examples("train", n, seed=derive_seed(seed, "warmstart"))


def warmstart_tasks(config, tasks) -> list:
  """The stream tasks whose demonstrations the warm start sees: `warmstart.coverage` "all"
  (every task: RL then shifts a distribution the model has seen) or "first" (the first task
  only: later tasks arrive unseen)."""
  cov = str(config.warmstart.get("coverage", "all"))
  if cov not in ("all", "first"):
    raise ValueError(f"warmstart.coverage must be 'all' or 'first', got {cov!r}")
  return list(tasks) if cov == "all" else list(tasks[:1])


def rl_pool(task, k: int, n: int, seed: int) -> list:
  return task.examples("train", n, seed=derive_seed(seed, "rl", k))


def self_knowledge_pool(task, k: int, n: int, seed: int) -> list:
  """Problems the warm start labels by its own failures (`warmstart.marker_on = "failures"`):
  a train-split draw of its own, independent of the warm start's and RL's pools."""
  return task.examples("train", n, seed=derive_seed(seed, "self_knowledge", k))


def router_calibration(task, k: int, n: int, seed: int) -> list:
  """The router baseline's fitting set: train-split problems (never the eval split), distinct
  where the split has n of them (a small file task repeats rows)."""
  from dacl.data.splits import SplitTooSmallError
  s = derive_seed(seed, "router", k)
  try:
    return task.examples("train", n, seed=s, distinct=True)
  except SplitTooSmallError:
    return task.examples("train", n, seed=s)


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
  overlap = len(held & trained)
  if overlap:   # impossible by construction; fail loudly rather than report memorisation
    raise AssertionError(f"task {task.name}: {overlap} held-out problems are in a training pool")
  return {"space": task.space(draws=space_draws), "train_pools": pools,
          "eval": {"n": len(held_out), "distinct": len(held)}, "eval_train_overlap": overlap}

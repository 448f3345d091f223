"""Continual-learning metrics over a task stream T_1..T_K (DESIGN.md, "Continual learning").

R[k][j]: accuracy on task j after training on task k (with collaboration).
"""
from __future__ import annotations

import math

import numpy as np


def acc(R) -> float:
  """ACC = mean_j R[K][j]."""
  R = np.asarray(R, float)
  return float(R[-1].mean())


def bwt(R) -> float:
  """BWT = mean_{j<K} (R[K][j] − R[j][j]); 0 for a single task."""
  R = np.asarray(R, float)
  K = R.shape[0]
  if K < 2:
    return 0.0
  return float(np.mean([R[-1, j] - R[j, j] for j in range(K - 1)]))


def forgetting(R) -> list:
  """forgetting_j = (R[j][j] − R[K][j]) / R[j][j] per task (None where R[j][j] = 0)."""
  R = np.asarray(R, float)
  return [None if R[j, j] == 0 else float((R[j, j] - R[-1, j]) / R[j, j]) for j in range(R.shape[0])]


def post_switch_accuracy(step_rewards: list, first_m: int) -> list:
  """Mean *training-rollout* reward on each task over its first M steps (step_rewards[k] = per-step
  list). Reported as `post_switch_train_reward`; `post_switch_accuracy` itself is the greedy
  held-out accuracy after those M steps (the trainer measures it)."""
  return [float(np.mean(r[:first_m])) if len(r) else None for r in step_rewards]


def usage_last_quarter(step_usage: list) -> list:
  """Mean cloud-usage rate over the last quarter of each task's steps."""
  out = []
  for u in step_usage:
    n = len(u)
    out.append(float(np.mean(u[n - max(1, n // 4):])) if n else None)
  return out


def mean_std(values) -> tuple:
  """(mean, sample standard deviation with ddof = 1) over seeds; std is None for one value."""
  v = np.asarray(values, float)
  return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def auroc(scores, labels):
  """Area under the ROC curve of `scores` for binary `labels` (1 = positive): the probability
  that a random positive scores above a random negative, ties counting one half (rank form,
  ties averaged). None when one class is absent."""
  s, y = np.asarray(scores, float), np.asarray(labels, int)
  npos = int(y.sum())
  nneg = len(y) - npos
  if npos == 0 or nneg == 0:
    return None
  order = np.argsort(s, kind="stable")
  ranks = np.empty(len(s))
  ranks[order] = np.arange(1, len(s) + 1)
  for v in np.unique(s):   # average ranks over ties
    ranks[s == v] = ranks[s == v].mean()
  return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def paired_gain(before, after) -> dict:
  """How the local model moved between two evaluations on the same problems (F8: "is RL's
  change in local accuracy more than noise?"). before[i], after[i]: problem i's scores (right =
  1). delta: mean(after) - mean(before); gained / lost: problems wrong -> right / right -> wrong;
  p: exact two-sided McNemar test (binomial on the gained + lost discordant pairs; 1.0 when
  there are none). Pooling seeds: add gained and lost, then `mcnemar_p`."""
  b, a = np.asarray(before, float) >= 1, np.asarray(after, float) >= 1
  if b.shape != a.shape:
    raise ValueError(f"paired_gain needs the same problems: {b.shape} vs {a.shape}")
  gained, lost = int((a & ~b).sum()), int((b & ~a).sum())
  return {"delta": float(np.mean(after) - np.mean(before)) if len(b) else 0.0,
          "gained": gained, "lost": lost, "n": int(len(b)), "p": mcnemar_p(gained, lost)}


def mcnemar_p(gained: int, lost: int) -> float:
  """Exact two-sided McNemar p-value: P(a split at least as uneven as gained / lost | the
  discordant pairs are a fair coin)."""
  n = gained + lost
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1))
  return float(min(1.0, 2 * tail / 2 ** n))


def acc_at_budget(local, cloud, scores, tau: float) -> dict:
  """Accuracy when exactly k = floor(tau * n) of n problems go to the cloud.

  local[i], cloud[i]: the local and the cloud answer's scores on problem i (a faulted cloud
  answer scores as the local one). policy: the k highest `scores` (the method's own offload
  score; ties by index); random: the expectation over uniformly random k-subsets; oracle: the k
  largest gains cloud - local (it knows both answers; never below policy or random)."""
  local, cloud = np.asarray(local, float), np.asarray(cloud, float)
  n = len(local)
  k = int(np.floor(tau * n))
  gain = cloud - local
  pick = lambda idx: float((local.sum() + gain[idx].sum()) / n)
  top = np.argsort(-np.asarray(scores, float), kind="stable")[:k]
  return {"policy": pick(top),
          "random": float(local.mean() + (k / n) * gain.mean()) if n else 0.0,
          "oracle": pick(np.argsort(-gain, kind="stable")[:k]), "k": k, "n": n}

"""Mutual learning of two models, as one jitted computation per phase.

Losses are pure functions returning (sum, denominator). A *pair step* updates model A and model
B on the same step:
  token KD (shared vocabulary): loss_A = CE_A + α_A · T² · KL(p_B^T ‖ p_A^T), and symmetrically
    for B, on one batch; each model's teacher is the other, held fixed (stop_gradient);
  sequence KD (different vocabularies): each model trains on its own batch, whose rows are the
    gold answers (weight 1) and the other model's generated answers (weight α), tokenised its
    own way; no logits cross.
A phase of S steps is `lax.scan` over S stacked batches inside one jit, with both train states
donated. train_a / train_b switch updates off for one-way distillation and single-model phases.
On a mesh (`shardings`: the states' `parallel.state_shardings`) the new states keep the input
layout, the decoder's activations get their constraints, and the caller splits the batches'
B axis over ('data', 'fsdp') (`parallel.shard_batch(..., batch_axis=1)`).

Shapes: batches [S, B, T]; logits [B, T, V].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dacl.train.sft import TrainState, make_sft_batch, token_logprobs


def ce_loss(logits, targets, weights):
  """(Σ w·NLL, Σ w) over tokens; weights [B, T] float (0 = no loss)."""
  lp = token_logprobs(logits, targets)
  return -(lp * weights).sum(), weights.sum()


def kd_kl(student_logits, teacher_logits, weights, temperature: float):
  """(Σ w·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), Σ w) over tokens."""
  t = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = (jnp.exp(t) * (t - s)).sum(-1) * temperature ** 2
  return (kl * weights).sum(), weights.sum()


def _logits(graphdef, params, b):
  return nnx.merge(graphdef, params)(b["tokens"], None, b["mask"])[0]


def _jit_on(run, donate, shardings, n_metrics: int = 1):
  """jax.jit(run) with `donate` donated; on a mesh (shardings: the donated states' shardings)
  the states come back in the same layout and tracing happens under `activation_mesh`."""
  from dacl import parallel
  if shardings is None:
    return jax.jit(run, donate_argnums=donate)
  mesh = parallel.mesh_of(shardings)

  def traced(*args):
    with parallel.activation_mesh(mesh):
      return run(*args)
  return jax.jit(traced, donate_argnums=donate, out_shardings=(*shardings, *([None] * n_metrics)))


def make_pair_scan(graphdef_a, tx_a, graphdef_b, tx_b, *, token_kd: bool,
                   temperature: float = 2.0, train_a: bool = True, train_b: bool = True,
                   confidence: bool = False, shardings=None):
  """-> jitted run(state_a, state_b, batches, alpha_a=0., alpha_b=0.) -> (state_a, state_b,
  metrics [S]).

  batches: token_kd: {"tokens", "targets", "weights", "mask"} [S, B, T] shared by both;
  otherwise {"a": {...}, "b": {...}}, each model's own. alpha_*: weight of that model's KD term
  (token KD only; for sequence KD the weights live in the batch rows). The alphas are traced
  arguments, so one compiled phase serves every weighting (one-way, mutual, CE only).
  confidence (token KD): each token's KL term is weighted by the teacher's probability of the
  gold token, so a model is pulled toward its partner where the partner is right.
  shardings: (state_a's, state_b's) on a mesh, or None."""

  def losses(pa, pb, batch, alpha_a, alpha_b):
    ba, bb = (batch, batch) if token_kd else (batch["a"], batch["b"])
    la, lb = _logits(graphdef_a, pa, ba), _logits(graphdef_b, pb, bb)
    ce_a, na = ce_loss(la, ba["targets"], ba["weights"])
    ce_b, nb = ce_loss(lb, bb["targets"], bb["weights"])
    out = {"ce_a": ce_a / jnp.maximum(na, 1.0), "ce_b": ce_b / jnp.maximum(nb, 1.0)}
    loss_a, loss_b = ce_a, ce_b
    if token_kd:
      la_t, lb_t = jax.lax.stop_gradient(la), jax.lax.stop_gradient(lb)
      wa, wb = ba["weights"], bb["weights"]
      if confidence:   # the teacher's p(gold token), at temperature 1
        wa = wa * jnp.exp(token_logprobs(lb_t, ba["targets"]))
        wb = wb * jnp.exp(token_logprobs(la_t, bb["targets"]))
      kl_a, _ = kd_kl(la, lb_t, wa, temperature)
      kl_b, _ = kd_kl(lb, la_t, wb, temperature)
      loss_a, loss_b = ce_a + alpha_a * kl_a, ce_b + alpha_b * kl_b
      out.update(kl_a=kl_a / jnp.maximum(na, 1.0), kl_b=kl_b / jnp.maximum(nb, 1.0))
    # each model's gradient comes from its own loss only (the other is a fixed teacher)
    total = loss_a / jnp.maximum(na, 1.0) * train_a + loss_b / jnp.maximum(nb, 1.0) * train_b
    return total, out

  def update(state: TrainState, grads, tx):
    updates, opt = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt, state.step + 1, state.rng)

  def step(carry, batch, alphas):
    sa, sb = carry
    grads, m = jax.grad(losses, argnums=(0, 1), has_aux=True)(sa.params, sb.params, batch, *alphas)
    if train_a:
      sa = update(sa, grads[0], tx_a)
    if train_b:
      sb = update(sb, grads[1], tx_b)
    return (sa, sb), m

  def run(sa, sb, batches, alpha_a=0.0, alpha_b=0.0):
    alphas = (jnp.float32(alpha_a), jnp.float32(alpha_b))
    (sa, sb), metrics = jax.lax.scan(lambda c, b: step(c, b, alphas), (sa, sb), batches)
    return sa, sb, metrics

  return _jit_on(run, (0, 1), shardings)


def make_single_scan(graphdef, tx, shardings=None):
  """-> jitted run(state, batches) -> (state, metrics [S]): CE-only updates (no partner).
  shardings: the state's on a mesh, or None."""

  def step(state, batch):
    def loss(p):
      s, n = ce_loss(_logits(graphdef, p, batch), batch["targets"], batch["weights"])
      return s / jnp.maximum(n, 1.0)
    l, g = jax.value_and_grad(loss)(state.params)
    updates, opt = tx.update(g, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt, state.step + 1,
                      state.rng), {"ce": l}

  def run(state, batches):
    return jax.lax.scan(step, state, batches)

  return _jit_on(run, 0, None if shardings is None else (shardings,))


def qa_batch(rows, tokenizer, seq_len: int, row_multiple: int = 1) -> dict:
  """Next-token batch from (prompt, target text, weight) rows: loss on the target (and its EOS)
  with that row's weight. [B, seq_len] tokens / targets / weights (float32) / mask.
  row_multiple: B is padded up to a multiple of it (a mesh's data-parallel size) with copies of
  the first row at weight 0, which add nothing to any loss or its denominator."""
  from dacl.data.tasks import Example
  rows = list(rows) + [(rows[0][0], rows[0][1], 0.0)] * (-len(rows) % row_multiple)
  b = make_sft_batch([Example(p, "", t, "") for p, t, _ in rows], tokenizer, seq_len)
  w = b["loss_mask"].astype(np.float32) * np.asarray([r[2] for r in rows], np.float32)[:, None]
  return {"tokens": b["tokens"], "targets": b["targets"], "weights": w, "mask": b["mask"]}


def stack(batches: list) -> dict:
  """[S] batch dicts (possibly nested {"a": ..., "b": ...}) -> one dict of [S, ...] arrays."""
  if isinstance(batches[0], dict) and "tokens" not in batches[0]:
    return {k: stack([b[k] for b in batches]) for k in batches[0]}
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}

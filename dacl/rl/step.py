"""Jitted DA-GRPO / GRPO update: advantages from [B, G] rewards and costs, then the clipped
surrogate (+ k3 KL) over micro-batches with exact (sum, denominator) accumulation."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dacl.rl import kernels
from dacl.train.sft import TrainState, full_params, jit_state_step, token_logprobs


@functools.partial(jax.jit, static_argnames=("scale", "shaped"))
def compute_advantages(reward, cost, lam, gamma, *, scale: str = "none", shaped: bool = False):
  """reward, cost [B, G] -> sequence advantages [B, G].

  DA-GRPO: A^r − λ·A^c (grpo_local has c ≡ 0, so this is A^r). shaped: advantages of r − γ·c.
  """
  if shaped:
    return kernels.group_advantages(kernels.shaped_reward(reward, cost, gamma), scale)
  return kernels.dual_advantage(kernels.group_advantages(reward, scale),
                                kernels.group_advantages(cost, scale), lam)


def make_rl_step(graphdef, tx, *, eps_low=0.2, eps_high=None, beta=0.0,
                 aggregation="token-mean", ban_id: int = -1, state_shardings=None,
                 decision_weight: float = 1.0):
  """(state, batch, ref_params) -> (state, metrics); batch fields [A, b, ...], adv [A, b].

  ban_id >= 0: the rollouts were sampled with that token banned (the offload marker, for routes
  where the policy may not offload), so the policy being optimised is the banned one: its
  log-probs renormalise over the other tokens, as the sampler's old_logp do. Without this the
  on-policy ratio was 1 − p(marker) instead of 1 and clipped some updates at step one.
  state_shardings: as in `dacl.train.sft.make_train_step` (the state's layout on a mesh).
  decision_weight: weight of each row's first generated token (`kernels.grpo_loss`)."""

  def policy_logits(p, frozen, mb):
    logits, _ = nnx.merge(graphdef, full_params(p, frozen))(mb["tokens"], mb["positions"], mb["mask"])
    if ban_id >= 0:
      logits = jnp.where(jnp.arange(logits.shape[-1]) == ban_id, -1e30, logits)
    return logits

  def loss_fn(params, frozen, mb, ref_params):
    logp = token_logprobs(policy_logits(params, frozen, mb), mb["targets"])
    ref_logp = None
    if beta:
      ref_logp = jax.lax.stop_gradient(token_logprobs(policy_logits(ref_params, frozen, mb),
                                                  mb["targets"]))
    s, d, aux = kernels.grpo_loss(logp, mb["old_logp"], ref_logp, mb["adv"], mb["loss_mask"],
                                  eps_low=eps_low, eps_high=eps_high, beta=beta,
                                  aggregation=aggregation, decision_weight=decision_weight)
    return s, (d, aux)

  def step(state: TrainState, batch, ref_params):
    def micro(carry, mb):
      gsum, lsum, dsum, kl, clip = carry
      (l, (d, aux)), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.frozen, mb,
                                                                  ref_params)
      return (jax.tree.map(jnp.add, gsum, g), lsum + l, dsum + d, kl + aux["kl"],
              clip + aux["clip_frac"]), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (gsum, lsum, dsum, kl, clip), _ = jax.lax.scan(micro, (zeros, 0.0, 0.0, 0.0, 0.0), batch)
    denom = jnp.maximum(dsum, 1.0)
    grads = jax.tree.map(lambda g: g / denom, gsum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": lsum / denom, "kl": kl / denom, "clip_frac": clip / denom,
               "grad_norm": optax.tree.norm(grads), "loss_tokens": dsum}
    return TrainState(params, opt_state, state.step + 1, state.rng, state.frozen), metrics

  return jit_state_step(step, state_shardings)

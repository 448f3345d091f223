"""DA-GRPO maths as small pure `jnp` functions over [B, G] / [B*G, T] arrays.

Registries map config strings to functions (`ADVANTAGE_SCALES`, `AGGREGATIONS`). Losses return
(sum, denominator) so micro-batches combine into exact means.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def group_advantages(values, scale: str = "none", eps: float = 1e-6):
  """Group-relative advantages of values [B, G] (one row per prompt, G rollouts each).

  none:  (v - mean_g) * G / (G - 1)   (unbiased leave-one-out form of the group baseline)
  group: (v - mean_g) / (std_g + eps)
  batch: (v - mean_g) / (std over the whole batch + eps)
  A group whose values are all equal gets zero advantage under every scale.
  """
  G = values.shape[-1]
  centred = values - values.mean(-1, keepdims=True)
  if scale == "none":
    return centred * (G / max(G - 1, 1))
  if scale == "group":
    return centred / (values.std(-1, keepdims=True) + eps)
  if scale == "batch":
    return centred / (values.std() + eps)
  raise ValueError(f"unknown advantage scale {scale!r}; use one of {ADVANTAGE_SCALES}")


ADVANTAGE_SCALES = ("none", "group", "batch")


def dual_advantage(adv_reward, adv_cost, lam):
  """The DA-GRPO advantage Â = A^r − λ·A^c (any matching shapes; λ a scalar)."""
  return adv_reward - lam * adv_cost


def dual_ascent(lam, usage, tau, lr):
  """Projected dual ascent on the budget constraint E[c] <= τ: λ ← max(0, λ + η(Ĵ_c − τ))."""
  return jnp.maximum(0.0, lam + lr * (usage - tau))


def pi_lagrangian(integral, usage, tau, ki, kp):
  """PI-controlled multiplier (Stooke et al., 2020): the integral term is the projected dual
  ascent above, I ← max(0, I + K_i(Ĵ_c − τ)); the proportional term reacts to the current error,
  λ = max(0, I + K_p(Ĵ_c − τ)). With K_p = 0, λ = I is plain dual ascent. The P term damps the
  overshoot that pure integration gets when the policy lags λ. Returns (λ, I), scalars.
  """
  err = usage - tau
  integral = dual_ascent(integral, usage, tau, ki)
  return jnp.maximum(0.0, integral + kp * err), integral


def shaped_reward(reward, cost, gamma):
  """Fixed-penalty baseline: r − γ·c."""
  return reward - gamma * cost


def clipped_surrogate(logp, old_logp, adv, eps_low: float = 0.2, eps_high=None):
  """Per-token PPO/GRPO surrogate loss [N, T] (to minimise) and clip indicator [N, T].

  logp, old_logp: [N, T] log-probs of the taken tokens; adv: [N] sequence advantages.
  ratio ρ = exp(logp − old_logp); loss = −min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A).
  """
  eps_high = eps_low if eps_high is None else eps_high
  ratio = jnp.exp(logp - old_logp)
  a = adv[:, None]
  unclipped = ratio * a
  clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * a
  loss = -jnp.minimum(unclipped, clipped)
  return loss, (clipped < unclipped).astype(jnp.float32)


def k3_kl(logp, ref_logp):
  """k3 estimator of KL(π_θ‖π_ref) per token: exp(r) − r − 1 with r = ref_logp − logp (>= 0)."""
  r = ref_logp - logp
  return jnp.exp(r) - r - 1.0


def token_mean(per_token, mask):
  """(sum over all masked tokens, number of masked tokens)."""
  m = mask.astype(jnp.float32)
  return (per_token * m).sum(), m.sum()


def sequence_mean(per_token, mask):
  """(sum over sequences of each sequence's token mean, number of non-empty sequences)."""
  m = mask.astype(jnp.float32)
  n = m.sum(-1)
  per_seq = (per_token * m).sum(-1) / jnp.maximum(n, 1.0)
  return per_seq.sum(), (n > 0).sum().astype(jnp.float32)


AGGREGATIONS = {"token-mean": token_mean, "sequence-mean": sequence_mean}


def policy_mask(completion_mask, cloud_token_mask):
  """Tokens that carry gradient: generated locally (the offload marker included), never the
  cloud's tokens. Both [N, T] bool."""
  return completion_mask & ~cloud_token_mask


def first_token(mask):
  """[N, T] bool: each row's first masked token (the policy's first generated token: the
  offload marker, or the first token of a local answer)."""
  return mask & (jnp.cumsum(mask.astype(jnp.int32), -1) == 1)


def grpo_loss(logp, old_logp, ref_logp, adv, mask, *, eps_low=0.2, eps_high=None, beta=0.0,
              aggregation="token-mean", decision_weight=1.0):
  """(loss sum, denominator, aux sums) of the clipped surrogate + β·k3 KL on masked tokens.

  decision_weight: the surrogate of each row's first generated token (where the policy decides
  between the offload marker and a local answer) counts this many times. Under token-mean an
  offloaded row has one policy token and a local row about as many as its answer is long, so with
  long answers (scratchpads) the decision gets a small share of the gradient; the denominator is
  unchanged, so w > 1 adds weight to the decision without shrinking the answer's."""
  agg = AGGREGATIONS[aggregation]
  surr, clipped = clipped_surrogate(logp, old_logp, adv, eps_low, eps_high)
  per_tok = surr
  if decision_weight != 1.0:
    per_tok = jnp.where(first_token(mask), decision_weight * surr, surr)
  kl = k3_kl(logp, ref_logp) if ref_logp is not None else jnp.zeros_like(logp)
  if beta:
    per_tok = per_tok + beta * kl
  s, d = agg(per_tok, mask)
  kl_s, _ = agg(kl, mask)
  clip_s, _ = agg(clipped, mask)
  return s, d, {"kl": kl_s, "clip_frac": clip_s}

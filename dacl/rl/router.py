"""The `router` baseline: logistic regression on the SLM's mean-pooled final hidden state of the
prompt predicts local failure; its threshold is the (1 − τ) quantile of predicted failure on
held-out data, so about a τ fraction is offloaded."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pooled(graphdef, state, tokens, mask):
  model = nnx.merge(graphdef, state)
  positions = jnp.maximum(jnp.cumsum(mask, 1) - 1, 0)
  h, _ = model(tokens, positions, mask, return_hidden=True)
  m = mask[..., None].astype(h.dtype)
  return (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def prompt_features(sampler, prompts, format_prompt) -> np.ndarray:
  """[N, d_model] mean-pooled final hidden states of the formatted prompts, computed where the
  sampler's parameters live: on its mesh, rows split over ('data', 'fsdp') (padded with empty
  rows to the data-parallel size) and activations constrained as in training."""
  from dacl import parallel
  ids = sampler.encode_prompts([format_prompt(p) for p in prompts])
  P = max(len(x) for x in ids)
  P = 1 << (P - 1).bit_length()
  n = len(ids)
  rows = n if sampler.mesh is None else n + (-n % parallel.data_parallel_size(sampler.mesh))
  toks = np.zeros((rows, P), np.int32)
  mask = np.zeros((rows, P), bool)
  for i, x in enumerate(ids):
    toks[i, P - len(x):], mask[i, P - len(x):] = x, True
  with parallel.activation_mesh(sampler.mesh):
    out = _pooled(sampler.graphdef, sampler.state, sampler._put(toks), sampler._put(mask))
  return parallel.to_host(out)[:n]   # gathered when a multi-process run shards the output


class Router:
  def __init__(self, tau: float, l2: float = 1e-2, steps: int = 300, lr: float = 0.5):
    self.tau, self.l2, self.steps, self.lr = tau, l2, steps, lr
    self.w = None
    self.b = 0.0
    self.mu = self.sd = None
    self.threshold = 1.0

  def fit(self, feats: np.ndarray, failed: np.ndarray, heldout_feats: np.ndarray) -> None:
    """Fit on (features, local failure in {0,1}); set the threshold on held-out features."""
    self.mu, self.sd = feats.mean(0), feats.std(0) + 1e-6
    x = jnp.asarray((feats - self.mu) / self.sd)
    y = jnp.asarray(failed, jnp.float32)

    def loss(p):
      z = x @ p["w"] + p["b"]
      return jnp.mean(jnp.logaddexp(0.0, z) - y * z) + self.l2 * jnp.sum(p["w"] ** 2)

    p = {"w": jnp.zeros(x.shape[1]), "b": jnp.float32(0.0)}
    g = jax.jit(jax.grad(loss))
    for _ in range(self.steps):
      p = jax.tree.map(lambda a, b: a - self.lr * b, p, g(p))
    self.w, self.b = np.asarray(p["w"]), float(p["b"])
    probs = self._proba(heldout_feats)
    self.threshold = float(np.quantile(probs, 1.0 - self.tau)) if len(probs) else 1.0

  def _proba(self, feats):
    z = ((feats - self.mu) / self.sd) @ self.w + self.b
    return 1.0 / (1.0 + np.exp(-z))

  def predict_proba(self, sampler, prompts, format_prompt) -> np.ndarray:
    if self.w is None:
      return np.zeros(len(prompts))
    return self._proba(prompt_features(sampler, prompts, format_prompt))

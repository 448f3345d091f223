"""Llama-family decoder in Flax NNX (Llama, Qwen2 with qkv bias, Qwen3 with q/k norm).

Every parameter carries logical axis names (metadata `logical_axes`) that `dacl.parallel` maps
onto a mesh.

The forward is a pure function of (state, tokens, positions, mask, cache); see `forward`.
Shapes: B batch, T new tokens, S cache slots, L layers, H query heads, K kv heads, D head dim.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from dacl.models.config import ModelConfig, as_dtype
from dacl.parallel import constrain, gather_fsdp


class KVCache(NamedTuple):
  """Static-size key/value cache.

  k: tuple of L arrays [B, K, D, S] (keys stored transposed), v: tuple of L arrays [B, K, S, D],
  in the compute dtype. One array per layer, so each layer's update is an in-place
  dynamic_update_slice in the decode loop (a stacked [L, ...] array was rewritten whole every
  step). The layouts are the two attention matmuls' own (q.k contracts D, w.v contracts S, both
  batched over B and K), so reading the cache needs no transpose: with [B, S, K, D] for both,
  XLA CPU re-laid out the whole cache of every layer on every decode step (BUILD_NOTES.md).
  mask: [B, S] bool, True where a slot holds a real (non-padding) token.
  index: [] int32, the next slot to write, shared by all rows (prompts are left-padded); or
    [B] int32, one per row (the serving engine's slots, which start and stop independently).
  """
  k: jax.Array
  v: jax.Array
  mask: jax.Array
  index: jax.Array


def init_cache(cfg: ModelConfig, batch: int, size: int) -> KVCache:
  K, D, dt = cfg.n_kv_heads, cfg.head_dim, as_dtype(cfg.dtype)
  zeros = lambda shape: tuple(jnp.zeros(shape, dt) for _ in range(cfg.n_layers))
  return KVCache(zeros((batch, K, D, size)), zeros((batch, K, size, D)),
                 jnp.zeros((batch, size), bool), jnp.zeros((), jnp.int32))


def _write_cache(c, x, index, axis: int = 1):
  """Write x into c at slot `index` of c's slot axis `axis` (x has the same rank, T slots
  there); index [] is shared by all rows, [B] is one per row."""
  x = x.astype(c.dtype)
  if index.ndim == 0:
    return jax.lax.dynamic_update_slice(c, x, tuple(index if a == axis else 0 for a in range(c.ndim)))
  row = lambda ci, xi, i: jax.lax.dynamic_update_slice(
      ci, xi, tuple(i if a == axis - 1 else 0 for a in range(c.ndim - 1)))
  return jax.vmap(row)(c, x, index)


def rms_norm(x, w, eps):
  xf = x.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return (y * w.astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """[D/2] inverse frequencies, with optional Llama-3 scaling (as in HF `_compute_llama3_parameters`)."""
  d = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  sc = cfg.rope_scaling_dict
  if sc and sc.get("rope_type", sc.get("type")) == "llama3":
    factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
    old = sc["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wl = 2 * math.pi / inv
    inv_l = jnp.where(wl > lo_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = (wl >= hi_wl) & (wl <= lo_wl)
    inv = jnp.where(medium, smoothed, inv_l)
  elif sc and sc.get("rope_type", sc.get("type")) not in (None, "default"):
    raise NotImplementedError(f"rope scaling {sc} is not supported")
  return inv


def apply_rope(x, positions, inv_freq):
  """x: [B, T, N, D]; positions: [B, T]. HF rotate-half layout."""
  ang = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
  cos, sin = jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _param(rngs, shape, axes, dtype, std=None, value=None):
  if value is not None:
    arr = jnp.full(shape, value, dtype)
  else:
    arr = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
  return nnx.Param(arr, logical_axes=axes)


def _weight(module, name, rngs, shape, axes, dtype, std, scale_axis):
  """A matmul weight; with cfg.weight_quant == "int8", zeros in int8 plus `<name>_scale`
  ([shape[scale_axis]] f32 ones), to be filled by dacl.models.quant.quantize_state."""
  if module.cfg.weight_quant == "int8":
    setattr(module, name, nnx.Param(jnp.zeros(shape, jnp.int8), logical_axes=axes))
    setattr(module, name + "_scale", nnx.Param(jnp.ones((shape[scale_axis],), jnp.float32),
                                               logical_axes=(axes[scale_axis],)))
  else:
    setattr(module, name, _param(rngs, shape, axes, dtype, std=std))
  cfg = module.cfg
  if cfg.lora_rank and name in cfg.lora_targets:   # A ~ N(0, 1/in), B = 0: starts at W exactly
    r = cfg.lora_rank
    a = jax.random.normal(rngs.params(), (shape[0], r), jnp.float32) / math.sqrt(shape[0])
    setattr(module, name + "_lora_a", nnx.LoRAParam(a, logical_axes=(axes[0], None)))
    setattr(module, name + "_lora_b", nnx.LoRAParam(jnp.zeros((r, shape[1]), jnp.float32),
                                                    logical_axes=(None, axes[1])))


def _matmul(module, x, name):
  """x @ W in the compute dtype; an int8 W is scaled per output channel after the matmul; a
  LoRA adapter adds (x @ A) @ B * alpha / r (never merged into W, so W can stay int8/bf16)."""
  cfg = module.cfg
  dt = as_dtype(cfg.dtype)
  y = x @ getattr(module, name)[...].astype(dt)
  if cfg.weight_quant == "int8":
    y = y * getattr(module, name + "_scale")[...].astype(dt)
  if cfg.lora_rank and name in cfg.lora_targets:
    a, b = getattr(module, name + "_lora_a")[...], getattr(module, name + "_lora_b")[...]
    y = y + ((x @ a.astype(dt)) @ b.astype(dt)) * (cfg.lora_alpha / cfg.lora_rank)
  return y


class Block(nnx.Module):
  """Pre-norm transformer block: GQA attention (RoPE, optional qkv bias / q-k norm) + SwiGLU.

  Layers are separate modules (not stacked under lax.scan): XLA on CPU copies every dynamic
  slice of a stacked weight, which made decode 1.85x slower at batch 32 (BUILD_NOTES.md).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd, s = as_dtype(cfg.param_dtype), cfg.init_std
    Dm, F = cfg.d_model, cfg.ffn_dim
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out_std = s / math.sqrt(2 * cfg.n_layers)
    _weight(self, "wq", rngs, (Dm, q), ("embed", "q_heads"), pd, s, 1)
    _weight(self, "wk", rngs, (Dm, kv), ("embed", "kv_heads"), pd, s, 1)
    _weight(self, "wv", rngs, (Dm, kv), ("embed", "kv_heads"), pd, s, 1)
    _weight(self, "wo", rngs, (q, Dm), ("q_heads", "embed"), pd, out_std, 1)
    if cfg.qkv_bias:
      self.bq = _param(rngs, (q,), ("q_heads",), pd, value=0.0)
      self.bk = _param(rngs, (kv,), ("kv_heads",), pd, value=0.0)
      self.bv = _param(rngs, (kv,), ("kv_heads",), pd, value=0.0)
    if cfg.qk_norm:
      self.q_norm = _param(rngs, (cfg.head_dim,), (None,), pd, value=1.0)
      self.k_norm = _param(rngs, (cfg.head_dim,), (None,), pd, value=1.0)
    self.attn_norm = _param(rngs, (Dm,), (None,), pd, value=1.0)
    self.mlp_norm = _param(rngs, (Dm,), (None,), pd, value=1.0)
    _weight(self, "w_gate", rngs, (Dm, F), ("embed", "mlp"), pd, s, 1)
    _weight(self, "w_up", rngs, (Dm, F), ("embed", "mlp"), pd, s, 1)
    _weight(self, "w_down", rngs, (F, Dm), ("mlp", "embed"), pd, out_std, 1)

  def __call__(self, x, positions, inv_freq, attn_ok, kc=None, vc=None, index=None, kv_len=None):
    """x [B,T,d] -> (x, kc, vc). kc [B,K,D,S] / vc [B,K,S,D] are this layer's cache (None: no
    cache); attention reads its first kv_len slots only (None: all S)."""
    cfg = self.cfg
    dt = as_dtype(cfg.dtype)
    B, T, _ = x.shape
    x = constrain(x, ("batch", None, None))
    h = rms_norm(x, self.attn_norm[...], cfg.norm_eps)
    q = _matmul(self, h, "wq")
    k = _matmul(self, h, "wk")
    v = _matmul(self, h, "wv")
    if cfg.qkv_bias:
      q = q + self.bq[...].astype(dt)
      k = k + self.bk[...].astype(dt)
      v = v + self.bv[...].astype(dt)
    q = constrain(q.reshape(B, T, cfg.n_heads, cfg.head_dim), ("batch", None, "q_heads", None))
    k = constrain(k.reshape(B, T, cfg.n_kv_heads, cfg.head_dim), ("batch", None, "kv_heads", None))
    v = constrain(v.reshape(B, T, cfg.n_kv_heads, cfg.head_dim), ("batch", None, "kv_heads", None))
    if cfg.qk_norm:
      q = rms_norm(q, self.q_norm[...], cfg.norm_eps)
      k = rms_norm(k, self.k_norm[...], cfg.norm_eps)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    if kc is None:
      out = _gqa_attention(q, k, v, attn_ok, cfg)
    else:
      kc = _write_cache(kc, k.transpose(0, 2, 3, 1), index, axis=3)   # [B, K, D, T] at slot index
      vc = _write_cache(vc, v.transpose(0, 2, 1, 3), index, axis=2)   # [B, K, T, D]
      kt, vv = (kc, vc) if kv_len is None else (kc[..., :kv_len], vc[:, :, :kv_len])
      out = _cached_attention(q, kt, vv, attn_ok, cfg)
    x = x + _matmul(self, out.reshape(B, T, -1), "wo")
    h = rms_norm(x, self.mlp_norm[...], cfg.norm_eps)
    g = constrain(jax.nn.silu(_matmul(self, h, "w_gate")) * _matmul(self, h, "w_up"),
                  ("batch", None, "mlp"))
    return constrain(x + _matmul(self, g, "w_down"), ("batch", None, None)), kc, vc


class Decoder(nnx.Module):
  """Token embedding, L pre-norm blocks, final norm, LM head (tied to the embedding or not)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = as_dtype(cfg.param_dtype)
    _weight(self, "embed", rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), pd,
            cfg.init_std, 0)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.final_norm = _param(rngs, (cfg.d_model,), (None,), pd, value=1.0)
    if not cfg.tie_embeddings:
      _weight(self, "lm_head", rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), pd,
              cfg.init_std, 1)

  def __call__(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None, cache: Optional[KVCache] = None,
               return_hidden: bool = False, last_only: bool = False,
               segment_ids: Optional[jax.Array] = None, kv_len: Optional[int] = None):
    """tokens [B, T] int32 -> (logits [B, T, V] float32, cache or None).

    positions [B, T]: RoPE positions (default 0..T-1). mask [B, T]: True for real tokens
    (default all). Without a cache, attention is causal over the T tokens. With a cache, the T
    tokens are written at slots index..index+T-1 and attend to every earlier valid slot.
    With return_hidden, the final-norm hidden states [B, T, d_model] replace the logits.
    With last_only, logits are computed for the last position only ([B, 1, V]; prefill).
    segment_ids [B, T] int (no cache only): packed rows; a token attends only to earlier tokens
    of its own segment (give positions restarting at 0 per segment too).
    kv_len (static, with a cache): attend over the first kv_len slots only, when the caller knows
    every row's keys lie there (the serving engine's bucket of the filled part of its cache).
    """
    cfg = self.cfg
    dt = as_dtype(cfg.dtype)
    B, T = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    if mask is None:
      mask = jnp.ones((B, T), bool)
    mask = mask.astype(bool)
    x = jnp.take(gather_fsdp(self.embed[...], ("vocab", "embed")), tokens, axis=0).astype(dt)
    if cfg.weight_quant == "int8":
      x = x * jnp.take(self.embed_scale[...], tokens, axis=0)[..., None].astype(dt)
    inv_freq = rope_inv_freq(cfg)
    if cache is None:
      q_slot, k_slot, key_valid = jnp.arange(T)[None], jnp.arange(T), mask
    else:
      q_slot = (cache.index[:, None] if cache.index.ndim else cache.index) + jnp.arange(T)[None]
      key_valid = _write_cache(cache.mask, mask, cache.index)
      k_slot = jnp.arange(kv_len or cache.mask.shape[1])
    # [B, 1, 1, T, S]: causal in slot order, and the key must be a real token.
    attn_ok = (k_slot[None, None, :] <= q_slot[:, :, None]) & key_valid[:, None, :k_slot.shape[0]]
    if segment_ids is not None:
      if cache is not None:
        raise ValueError("segment_ids are for packed training rows, not cached decoding")
      attn_ok = attn_ok & (segment_ids[:, :, None] == segment_ids[:, None, :])
    attn_ok = attn_ok[:, None, None]
    ks, vs = [], []
    for i, layer in enumerate(self.layers):
      if cache is None and cfg.remat != "none":
        x = _remat_block(layer, x, positions, inv_freq, attn_ok)
      elif cache is None:
        x, _, _ = layer(x, positions, inv_freq, attn_ok)
      else:
        x, kc, vc = layer(x, positions, inv_freq, attn_ok, cache.k[i], cache.v[i], cache.index,
                          kv_len)
        ks.append(kc)
        vs.append(vc)
    new_cache = None if cache is None else KVCache(tuple(ks), tuple(vs), key_valid, cache.index + T)
    if last_only:
      x, T = x[:, -1:], 1
    x = rms_norm(x, self.final_norm[...], cfg.norm_eps)
    if return_hidden:
      return x, new_cache
    # A plain 2-D matmul: on XLA CPU the einsum with preferred_element_type took 13x longer.
    logits = x.reshape(B * T, -1) @ self.head_weight(scaled=False)
    if cfg.weight_quant == "int8":   # one scale per vocabulary row, after the matmul
      logits = logits * self.head_scale().astype(dt)
    return logits.astype(jnp.float32).reshape(B, T, -1), new_cache

  def head_weight(self, scaled: bool = True) -> jax.Array:
    """The LM head as a [d_model, V] matrix in the compute dtype (the tied embedding, transposed).
    For int8 weights, scaled=False gives the raw int8 values cast (scale with `head_scale`)."""
    dt = as_dtype(self.cfg.dtype)
    w = self.embed[...].astype(dt).T if self.cfg.tie_embeddings else self.lm_head[...].astype(dt)
    if scaled and self.cfg.weight_quant == "int8":
      w = w * self.head_scale().astype(dt)[None]
    return w

  def head_scale(self) -> jax.Array:
    """[V] per-row scales of an int8 LM head."""
    return self.embed_scale[...] if self.cfg.tie_embeddings else self.lm_head_scale[...]


def _remat_block(layer, x, positions, inv_freq, attn_ok):
  """One block whose activations are recomputed in the backward pass instead of stored: only
  its input x is kept. Not jax.checkpoint: XLA CPU drops its optimization barriers and CSEs the
  recomputation back into the forward pass (every activation stays live, and the compiled step
  grew); here the recomputation takes a dependence on the incoming cotangent, which no backend
  can hoist. Gradients are those of the plain block (tested)."""
  graphdef, state = nnx.split(layer)
  return _recompute_in_backward(graphdef, state, x, positions, inv_freq, attn_ok)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recompute_in_backward(graphdef, state, x, positions, inv_freq, attn_ok):
  return nnx.merge(graphdef, state)(x, positions, inv_freq, attn_ok)[0]


def _recompute_fwd(graphdef, state, x, positions, inv_freq, attn_ok):
  y = nnx.merge(graphdef, state)(x, positions, inv_freq, attn_ok)[0]
  return y, (state, x, positions, inv_freq, attn_ok)


def _recompute_bwd(graphdef, res, ct):
  state, x, positions, inv_freq, attn_ok = res
  x = x + 0.0 * ct[:1, :1, :1].sum().astype(x.dtype)   # schedule the recomputation after ct
  f = lambda st, h: nnx.merge(graphdef, st)(h, positions, inv_freq, attn_ok)[0]
  d_state, d_x = jax.vjp(f, state, x)[1](ct)
  return d_state, d_x, None, None, None


_recompute_in_backward.defvjp(_recompute_fwd, _recompute_bwd)


def _attention_weights(s, attn_ok):
  """Softmax over the keys (last axis) of float32 scores s, where attn_ok. Rows with no valid
  key at all (padding queries) would average garbage: their weights are zero."""
  w = jax.nn.softmax(jnp.where(attn_ok, s, jnp.finfo(jnp.float32).min), axis=-1)
  return jnp.where(attn_ok.any(-1, keepdims=True), w, 0.0)


def _gqa_attention(q, k, v, attn_ok, cfg: ModelConfig):
  """q [B,T,H,D], k/v [B,S,K,D], attn_ok [B,1,1,T,S] -> [B,T,H,D]. Softmax in float32."""
  B, T, H, D = q.shape
  G = H // cfg.n_kv_heads
  qg = q.reshape(B, T, cfg.n_kv_heads, G, D)
  s = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) / math.sqrt(D)
  w = _attention_weights(s, attn_ok)
  o = jnp.einsum("bkgts,bskd->btkgd", w.astype(v.dtype), v)
  return o.reshape(B, T, H, D)


def _cached_attention(q, kt, v, attn_ok, cfg: ModelConfig):
  """q [B,T,H,D], kt [B,K,D,S] (keys transposed), v [B,K,S,D], attn_ok [B,1,1,T,S] ->
  [B,T,H,D]: `_gqa_attention` over the cache's layouts. Softmax in float32.

  Both matmuls are dot_generals batched over (B, K) with the cache as the right-hand operand,
  contracting its second-to-last axis: the plain GEMM layout XLA CPU hands to XNNPACK. (As
  einsums, XLA put the value cache on the left, contracting its S axis, and ran them as slower
  generic dots.) For one row and one query they are product-sums instead: XLA CPU drops the
  dots' size-1 batch axis and duplicates the cache write into a second fusion for it, copying
  the layer's cache on every step; a product-sum reads it in place and costs nothing there."""
  B, T, H, D = q.shape
  K = cfg.n_kv_heads
  G = H // K
  qm = q.reshape(B, T, K, G, D).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, D)
  batch = ((0, 1), (0, 1))
  if B * T == 1:
    s = jnp.sum(qm[..., None].astype(jnp.float32) * kt[:, :, None].astype(jnp.float32), axis=3)
  else:
    s = jax.lax.dot_general(qm, kt, (((3,), (2,)), batch), preferred_element_type=jnp.float32)
  s = s.reshape(B, K, G, T, -1) / math.sqrt(D)                      # [B, K, G, T, S]
  w = _attention_weights(s, attn_ok).reshape(B, K, G * T, -1)
  if B * T == 1:   # summed in float32 (a bf16 cache too), as the dot accumulates
    o = jnp.sum(w[..., None] * v[:, :, None].astype(jnp.float32), axis=3).astype(v.dtype)
  else:
    o = jax.lax.dot_general(w.astype(v.dtype), v, (((3,), (2,)), batch))
  return o.reshape(B, K, G, T, D).transpose(0, 3, 1, 2, 4).reshape(B, T, H, D)


def forward(graphdef, state, tokens, positions=None, mask=None, cache=None, segment_ids=None):
  """Pure functional forward: (graphdef, state, ...) -> (logits float32 [B,T,V], cache)."""
  return nnx.merge(graphdef, state)(tokens, positions, mask, cache, segment_ids=segment_ids)


def create_model(cfg: ModelConfig, seed: int = 0) -> Decoder:
  return Decoder(cfg, rngs=nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig) -> Decoder:
  """A Decoder whose parameters are ShapeDtypeStructs (no memory); for loaders and restore."""
  return nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(params=0)))


def model_from_values(cfg: ModelConfig, values: dict, what: str = "model") -> Decoder:
  """A Decoder of `cfg` whose every variable is taken from `values` (flat path -> array); a
  variable without a value is a ValueError naming it."""
  new = abstract_model(cfg)
  flat = nnx.to_flat_state(nnx.state(new))
  missing = [p for p, _ in flat if p not in values]
  if missing:
    raise ValueError(f"no value for {missing[:3]} in the {what}")
  nnx.update(new, nnx.from_flat_state([(p, var.replace(values[p])) for p, var in flat]))
  return new

"""Supervised fine-tuning: loss-masked next-token cross-entropy, AdamW with warmup + cosine decay,
global-norm clipping, exact gradient accumulation, and a jitted step with donated state."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class TrainState(NamedTuple):
  params: Any            # nnx.State of the trained nnx.Param variables (LoRA: the adapters only)
  opt_state: Any
  step: jax.Array        # [] int32
  rng: jax.Array         # [2] uint32 (raw key data; checkpointable)
  frozen: Any = None     # LoRA: the frozen base (nnx.State); never in the optimizer or checkpoints


def make_optimizer(lr: float, total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.0,
                   b1: float = 0.9, b2: float = 0.95, clip_norm: float = 1.0,
                   end_lr_ratio: float = 0.1) -> optax.GradientTransformation:
  sched = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else lr, peak_value=lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * end_lr_ratio)
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm and clip_norm > 0 else []
  parts.append(optax.adamw(sched, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


def init_train_state(model, tx: optax.GradientTransformation, seed: int):
  """(graphdef, TrainState). A model with LoRA adapters (`dacl.models.lora`) trains its
  nnx.LoRAParam variables only; the rest of its parameters go to `state.frozen`."""
  graphdef, params = nnx.split(model, nnx.Param)
  frozen = None
  if model.cfg.lora_rank:
    params, frozen = nnx.split_state(params, nnx.LoRAParam, ...)
  state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32),
                     jax.random.key_data(jax.random.key(seed)), frozen)
  return graphdef, state


def full_params(params, frozen=None):
  """The model's whole parameter state: `params` with the frozen base (if any) merged in."""
  return params if frozen is None else nnx.merge_state(frozen, params)


def state_model(graphdef, state: TrainState):
  """The Decoder a train state describes (adapters and frozen base together)."""
  return nnx.merge(graphdef, full_params(state.params, state.frozen))


def token_logprobs(logits, targets):
  """log p(target) per position: logits [B,T,V] float32, targets [B,T] -> [B,T]."""
  logz = jax.nn.logsumexp(logits, axis=-1)
  tgt = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return tgt - logz


def chunked_token_logprobs(hidden, head, targets, chunk: int):
  """log p(target) per position without materialising the [B, T, V] logits.

  hidden [B, T, D] (final-norm states), head [D, V], targets [B, T] -> [B, T] float32. The
  sequence is cut into chunks of `chunk` positions; each chunk's logits [B, chunk, V] are made,
  reduced to log-probs and dropped, and rematerialised in the backward pass (`jax.checkpoint`),
  so neither pass holds more than one chunk of logits. Equal to `token_logprobs` of the full
  logits up to float summation order."""
  B, T, D = hidden.shape
  n = -(-T // chunk)
  pad = n * chunk - T
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(B, n, chunk, D).swapaxes(0, 1)
  t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(B, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(ht):
    hc, tc = ht
    logits = (hc.reshape(B * chunk, D) @ head).astype(jnp.float32).reshape(B, chunk, -1)
    return token_logprobs(logits, tc)

  return jax.lax.map(one, (h, t)).swapaxes(0, 1).reshape(B, n * chunk)[:, :T]


def sft_loss(graphdef, params, batch, loss_chunk: int = 0):
  """(sum of masked token NLL, number of masked tokens). batch: tokens/targets/loss_mask/mask [B,T],
  and for packed rows (`pack_sequences`) positions/segment_ids [B,T]. loss_chunk > 0: the
  cross-entropy is computed `loss_chunk` positions at a time (`chunked_token_logprobs`), for
  large vocabularies where the [B, T, V] float32 logits dominate a step's memory."""
  model = nnx.merge(graphdef, params)
  args = (batch["tokens"], batch.get("positions"), batch["mask"])
  if loss_chunk and loss_chunk < batch["tokens"].shape[1]:
    hidden, _ = model(*args, return_hidden=True, segment_ids=batch.get("segment_ids"))
    lp = chunked_token_logprobs(hidden, model.head_weight(), batch["targets"], loss_chunk)
  else:
    logits, _ = model(*args, segment_ids=batch.get("segment_ids"))
    lp = token_logprobs(logits, batch["targets"])
  w = batch["loss_mask"].astype(jnp.float32)
  return -(lp * w).sum(), w.sum()


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_fn=sft_loss,
                    state_shardings=None):
  """A jitted (state, batch) -> (state, metrics) with the state donated.

  batch fields are [A, b, T]: A micro-batches whose gradients of the *summed* loss are
  accumulated, then divided by the total denominator, so the update equals the full-batch mean.
  state_shardings (`dacl.parallel.state_shardings`): the new state keeps the input's layout on
  the mesh (FSDP / tensor-parallel parameters and optimizer state), so step after step reuses
  one compiled program; the batch is sharded by the caller (`parallel.shard_batch`).
  """

  def step(state: TrainState, batch):
    def micro(carry, mb):
      gsum, lsum, dsum = carry
      (l, d), g = jax.value_and_grad(
          lambda p: loss_fn(graphdef, full_params(p, state.frozen), mb), has_aux=True)(state.params)
      return (jax.tree.map(jnp.add, gsum, g), lsum + l, dsum + d), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (gsum, lsum, dsum), _ = jax.lax.scan(micro, (zeros, 0.0, 0.0), batch)
    denom = jnp.maximum(dsum, 1.0)
    grads = jax.tree.map(lambda g: g / denom, gsum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": lsum / denom, "grad_norm": optax.tree.norm(grads), "tokens": dsum}
    return TrainState(params, opt_state, state.step + 1, state.rng, state.frozen), metrics

  return jit_state_step(step, state_shardings)


def _no_frozen(tree):
  return tree._replace(frozen=None) if isinstance(tree, TrainState) else tree


class jit_state_step:
  """jax.jit of a (state, ...) -> (state, metrics) step with the state donated and, on a mesh,
  the output state pinned to the input state's shardings. A LoRA state's frozen base is an
  input only, never donated: it stays valid for whoever else holds it (the sampler, a
  reference policy), and the new state gets the same arrays back. On a mesh the step is traced
  under `parallel.activation_mesh`, so the decoder's activations get their constraints too."""

  def __init__(self, step, state_shardings=None):
    from dacl import parallel
    mesh = None if state_shardings is None else parallel.mesh_of(state_shardings)

    def inner(state, frozen, *args):
      with parallel.activation_mesh(mesh):
        new, metrics = step(state._replace(frozen=frozen), *args)
      return new._replace(frozen=None), metrics
    out = None if state_shardings is None else (_no_frozen(state_shardings), None)
    self._jit = jax.jit(inner, donate_argnums=0, **({} if out is None else {"out_shardings": out}))

  def __call__(self, state: TrainState, *args):
    new, metrics = self._jit(state._replace(frozen=None), state.frozen, *args)
    return new._replace(frozen=state.frozen), metrics

  def lower(self, state: TrainState, *args):
    return self._jit.lower(state._replace(frozen=None), state.frozen, *args)

  def _cache_size(self) -> int:
    return self._jit._cache_size()


def fit(graphdef, state: TrainState, tx, batch_fn, steps: int, ckpt_dir: str, *, desc: str,
        record: dict = None, save_every: int = 0, postfix_every: int = 50,
        mesh=None) -> TrainState:
  """A resumable SFT phase: `steps` updates on batch_fn(i) (0-based step -> numpy batch dict
  [b, T]), checkpointed in ckpt_dir every `save_every` steps and at the end. A finished phase
  is restored, not rerun; batches depend only on i, so a resumed phase equals an uninterrupted
  one. mesh: the state is placed by the logical-axis rules and batches split over
  ('data', 'fsdp')."""
  from dacl import parallel
  from dacl.metrics import progress
  from dacl.train.checkpoint import Checkpointer
  shardings = None
  put = lambda b: b
  if mesh is not None:
    shardings = parallel.state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    put = lambda b: parallel.shard_batch(b, mesh, batch_axis=1)
  ck = Checkpointer(ckpt_dir, save_every or steps, 1)
  start = 0
  if ck.latest_step() is not None:
    state, _, start = ck.restore(state)
  if start < steps:
    step_fn = make_train_step(graphdef, tx, state_shardings=shardings)
    bar = progress(steps, initial=start, desc=desc)
    for s in range(start + 1, steps + 1):
      raw = batch_fn(s - 1)
      state, m = step_fn(state, put({k: v[None] for k, v in raw.items()
                                     if isinstance(v, np.ndarray)}))
      bar.update(1)
      if s % postfix_every == 0:
        bar.set_postfix(loss=f"{float(m['loss']):.3f}")
      if save_every and s % save_every == 0 and s < steps:
        ck.save(s, state, dict(record or {}, step=s))
    bar.close()
    ck.save(steps, state, dict(record or {}, step=steps))
  ck.close()
  return state


def make_sft_batch(examples: Sequence, tokenizer, seq_len: int, add_bos=None,
                   chat: bool = False) -> dict:
  """Right-padded next-token batch. Loss only on the demonstration (and its EOS).

  Returns numpy tokens, targets, loss_mask, mask: [B, seq_len], and `truncated`: how many rows
  were longer than seq_len and lost their end. add_bos None: the tokenizer's default, as the
  sampler encodes prompts; a chat-templated prompt never gets an extra BOS (the template has it).
  """
  B = len(examples)
  tokens = np.full((B, seq_len), tokenizer.pad_id, np.int32)
  targets = np.full((B, seq_len), tokenizer.pad_id, np.int32)
  loss_mask = np.zeros((B, seq_len), bool)
  mask = np.zeros((B, seq_len), bool)
  truncated = 0
  for b, ex in enumerate(examples):
    prompt = ex.prompt
    if chat:
      prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    p = tokenizer.encode(prompt, add_bos=False if chat else add_bos)
    t = tokenizer.encode(ex.solution, add_bos=False) + [tokenizer.eos_id]
    seq = (p + t)[: seq_len + 1]
    truncated += len(p) + len(t) > seq_len + 1
    n = len(seq) - 1
    tokens[b, :n] = seq[:-1]
    targets[b, :n] = seq[1:]
    mask[b, :n] = True
    loss_mask[b, max(len(p) - 1, 0):n] = True
  return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "mask": mask,
          "truncated": truncated}


class BatchStream:
  """Deterministic batches from a fixed pool: batch i depends only on (seed, i), so resuming at
  step i needs nothing but i (the data position)."""

  def __init__(self, pool: Sequence, batch_size: int, seed: int):
    if not pool:
      raise ValueError("empty training pool")
    self.pool, self.batch_size, self.seed = list(pool), batch_size, seed

  def batch(self, i: int) -> list:
    n = len(self.pool)
    start = i * self.batch_size
    out = []
    while len(out) < self.batch_size:
      epoch, off = divmod(start + len(out), n)
      perm = np.random.default_rng([self.seed, epoch]).permutation(n)
      take = min(self.batch_size - len(out), n - off)
      out.extend(self.pool[j] for j in perm[off:off + take])
    return out


def pack_sequences(items: Sequence, pad_id: int, seq_len: int, bucket: int = 64,
                   row_multiple: int = 4) -> dict:
  """Packs (ids, weights) pairs (weight[i] applies to ids[i] as a target) into fewer rows.

  Each sequence gives len(ids) - 1 (input, target) slots, truncated at seq_len. Rows are T slots,
  T = the longest sequence rounded up to `bucket` (at most seq_len), filled first-fit in
  decreasing length; the row count is rounded up to `row_multiple` (empty rows are padding), so
  few shapes compile. Returns numpy tokens/targets/loss_mask/mask/positions/segment_ids [R, T]
  (segment 0 is padding; positions restart at 0 in each segment) and `truncated`. With the
  segment-aware attention of the decoder, every sequence's logits and its (sum, count) loss are
  those of the unpacked batch (tested), at fewer padded slots.
  """
  seqs, truncated = [], 0
  for ids, w in items:
    truncated += len(ids) > seq_len + 1
    seqs.append((list(ids[:seq_len + 1]), list(w[:seq_len + 1])))
  longest = max(len(ids) for ids, _ in seqs) - 1
  T = min(seq_len, -(-longest // bucket) * bucket)
  order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
  rows, free = [], []       # rows: lists of sequence indices; free: slots left per row
  for i in order:
    n = len(seqs[i][0]) - 1
    r = next((j for j, f in enumerate(free) if f >= n), None)
    if r is None:
      rows.append([])
      free.append(T)
      r = len(rows) - 1
    rows[r].append(i)
    free[r] -= n
  R = -(-len(rows) // row_multiple) * row_multiple
  out = {k: np.zeros((R, T), np.int32) for k in ("positions", "segment_ids")}
  out["tokens"] = np.full((R, T), pad_id, np.int32)
  out["targets"] = np.full((R, T), pad_id, np.int32)
  out["loss_mask"] = np.zeros((R, T), bool)
  out["mask"] = np.zeros((R, T), bool)
  for r, members in enumerate(rows):
    at = 0
    for s, i in enumerate(members, start=1):
      ids, w = seqs[i]
      n = len(ids) - 1
      sl = slice(at, at + n)
      out["tokens"][r, sl], out["targets"][r, sl] = ids[:-1], ids[1:]
      out["loss_mask"][r, sl] = np.asarray(w[1:], float) > 0
      out["mask"][r, sl] = True
      out["positions"][r, sl] = np.arange(n)
      out["segment_ids"][r, sl] = s
      at += n
  out["truncated"] = truncated
  return out

"""SFT loss masking, exact gradient accumulation, and that training learns."""
import pytest
import numpy as np
import jax
import jax.numpy as jnp
import optax

from dacl.data.tasks import Example
from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.tokenizers import ByteTokenizer
from dacl.train.sft import (BatchStream, init_train_state, make_optimizer, make_sft_batch,
                            make_train_step, sft_loss)


def _ex(p, s):
  return Example(prompt=p, answer=s, solution=s, task="t")


def test_batch_masks_only_the_demonstration():
  tok = ByteTokenizer()
  b = make_sft_batch([_ex("1+2=", "3"), _ex("10+20=", "30")], tok, seq_len=12)
  # row 0: <bos> 1 + 2 = 3 <eos>; targets shifted; loss on "3" and <eos>.
  assert b["loss_mask"][0].sum() == 2 and b["mask"][0].sum() == 6
  assert tok.decode(b["targets"][0][b["loss_mask"][0]], skip_special=False) == "3<eos>"
  assert b["truncated"] == 0
  b2 = make_sft_batch([_ex("1234567890=", "x" * 10)], tok, seq_len=8)
  assert b2["truncated"] == 1


def test_grad_accumulation_equals_full_batch():
  tok = ByteTokenizer()
  cfg = get_preset("tiny", n_layers=1)
  exs = [_ex(f"{i}+{i}=", str(2 * i) * (1 + i % 3)) for i in range(8)]   # unequal lengths
  raw = make_sft_batch(exs, tok, 16)
  arrays = {k: v for k, v in raw.items() if isinstance(v, np.ndarray)}
  outs = []
  for accum in (1, 4):
    # SGD(1): the update is exactly the (accumulated) gradient, so params compare gradients.
    tx = optax.sgd(1.0)
    gd, st = init_train_state(create_model(cfg, seed=0), tx, 0)
    step = make_train_step(gd, tx)
    b = {k: jnp.asarray(v.reshape(accum, 8 // accum, *v.shape[1:])) for k, v in arrays.items()}
    st, m = step(st, b)
    outs.append((jax.tree.leaves(st.params), float(m["loss"])))
  assert abs(outs[0][1] - outs[1][1]) < 1e-5
  for a, b in zip(outs[0][0], outs[1][0]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def test_loss_is_sum_and_denominator():
  tok = ByteTokenizer()
  cfg = get_preset("tiny", n_layers=1)
  gd, st = init_train_state(create_model(cfg), make_optimizer(1e-3, 1), 0)
  b = {k: jnp.asarray(v) for k, v in make_sft_batch([_ex("1=", "22")], tok, 8).items()
       if isinstance(v, np.ndarray)}
  s, d = sft_loss(gd, st.params, b)
  assert float(d) == 3.0 and float(s) / 3.0 > 5.0   # ~log(272) per token at init


def test_training_reduces_loss_on_a_fixed_batch():
  tok = ByteTokenizer()
  cfg = get_preset("tiny", n_layers=2)
  tx = make_optimizer(3e-3, 60, 5)
  gd, st = init_train_state(create_model(cfg), tx, 0)
  step = make_train_step(gd, tx)
  raw = make_sft_batch([_ex(f"{i}+1=", str(i + 1)) for i in range(16)], tok, 12)
  b = {k: jnp.asarray(v[None]) for k, v in raw.items() if isinstance(v, np.ndarray)}
  first = None
  for _ in range(60):
    st, m = step(st, b)
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.3 * first and int(st.step) == 60


def test_batch_stream_is_a_function_of_step():
  s = BatchStream(list(range(10)), 4, seed=1)
  assert s.batch(3) == BatchStream(list(range(10)), 4, seed=1).batch(3)
  seen = s.batch(0) + s.batch(1) + s.batch(2)[:2]   # first epoch covers every item once
  assert sorted(seen) == list(range(10))


def test_packed_batch_gives_the_unpacked_loss_and_gradient():
  """Packing is only a layout: segment-aware attention and per-segment positions give every
  sequence its unpacked logits, so the (sum, count) loss and the update match; and a token of
  one segment cannot see another segment."""
  from dacl.train.sft import pack_sequences
  tok = ByteTokenizer()
  cfg = get_preset("tiny", n_layers=2)
  rng = np.random.default_rng(0)
  items = []
  for n in (5, 17, 9, 30, 3, 12, 22, 7):
    ids = [int(x) for x in rng.integers(3, 200, n)]
    items.append((ids, [float(x) for x in rng.random(n) > 0.3]))
  packed = pack_sequences(items, tok.pad_id, seq_len=32, bucket=8, row_multiple=1)
  assert packed["tokens"].shape[0] < len(items)            # it did pack
  assert packed["loss_mask"].sum() == sum(sum(1 for x in w[1:] if x > 0) for _, w in items)
  unpacked = {"tokens": np.full((8, 32), tok.pad_id, np.int32), "mask": np.zeros((8, 32), bool)}
  unpacked["targets"] = unpacked["tokens"].copy()
  unpacked["loss_mask"] = np.zeros((8, 32), bool)
  for b, (ids, w) in enumerate(items):
    n = len(ids) - 1
    unpacked["tokens"][b, :n], unpacked["targets"][b, :n] = ids[:-1], ids[1:]
    unpacked["mask"][b, :n] = True
    unpacked["loss_mask"][b, :n] = np.asarray(w[1:]) > 0
  outs = []
  for raw in (unpacked, packed):
    tx = optax.sgd(1.0)
    gd, st = init_train_state(create_model(cfg, seed=0), tx, 0)
    b = {k: jnp.asarray(v)[None] for k, v in raw.items() if isinstance(v, np.ndarray)}
    st, m = make_train_step(gd, tx)(st, b)
    outs.append((jax.tree.leaves(st.params), float(m["loss"]), float(m["tokens"])))
  assert outs[0][2] == outs[1][2]
  assert abs(outs[0][1] - outs[1][1]) < 1e-5
  for a, b in zip(outs[0][0], outs[1][0]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
  # isolation: changing another segment's tokens leaves a segment's logits unchanged
  model = create_model(cfg, seed=0)
  row = int(np.argmax((packed["segment_ids"] > 0).sum(1) * (packed["segment_ids"].max(1) > 1)))
  seg = packed["segment_ids"][row]
  call = lambda t: np.asarray(model(jnp.asarray(t[row:row + 1]), jnp.asarray(packed["positions"][row:row + 1]),
                                    jnp.asarray(packed["mask"][row:row + 1]),
                                    segment_ids=jnp.asarray(packed["segment_ids"][row:row + 1]))[0])
  base, other = call(packed["tokens"]), packed["tokens"].copy()
  other[row, seg == 2] = 7
  moved = call(other)
  np.testing.assert_allclose(base[0, seg == 1], moved[0, seg == 1], atol=1e-6)
  assert not np.allclose(base[0, seg == 2], moved[0, seg == 2])


def test_chunked_cross_entropy_gives_the_full_loss_and_gradient():
  """`train.loss_chunk`: the same (sum, count) and gradient as the full [B, T, V] logits, with a
  chunk that does not divide T and an untied head; and the compiled step holds no buffer of
  the full logits' size."""
  import functools
  cfg = get_preset("tiny", n_layers=1, tie_embeddings=False, vocab_size=1024)
  rng = np.random.default_rng(0)
  B, T = 2, 23
  batch = {"tokens": rng.integers(0, 1024, (B, T)).astype(np.int32),
           "targets": rng.integers(0, 1024, (B, T)).astype(np.int32),
           "mask": np.ones((B, T), bool), "loss_mask": rng.random((B, T)) > 0.3}
  gd, st = init_train_state(create_model(cfg, seed=0), optax.sgd(1.0), 0)
  grad = lambda fn: jax.value_and_grad(lambda p: fn(gd, p, batch), has_aux=True)(st.params)
  (l0, d0), g0 = grad(sft_loss)
  chunked = functools.partial(sft_loss, loss_chunk=5)
  (l1, d1), g1 = grad(chunked)
  assert float(d0) == float(d1) and abs(float(l0) - float(l1)) < 1e-3 * abs(float(l0))
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  # memory, at a size where the logits dominate: chunking saves more than one [B, T, V] buffer
  cfg = get_preset("tiny", n_layers=1, vocab_size=8192)
  B, T, V = 2, 256, 8192
  big = {"tokens": rng.integers(0, V, (1, B, T)).astype(np.int32),
         "targets": rng.integers(0, V, (1, B, T)).astype(np.int32),
         "mask": np.ones((1, B, T), bool), "loss_mask": np.ones((1, B, T), bool)}
  gd, st = init_train_state(create_model(cfg, seed=0), optax.sgd(1.0), 0)
  mem = lambda fn: (make_train_step(gd, optax.sgd(1.0), fn).lower(st, big).compile()
                    .memory_analysis().temp_size_in_bytes)
  assert mem(sft_loss) - mem(functools.partial(sft_loss, loss_chunk=32)) > B * T * V * 4


def test_remat_keeps_the_gradient_and_shrinks_the_step():
  """`model.remat="block"` gives the same loss and gradient as storing every activation, and
  the compiled step of 4 layers holds fewer temporaries (XLA CPU undoes jax.checkpoint; this
  fails if the recomputation is merged back into the forward pass)."""
  rng = np.random.default_rng(0)
  B, T = 2, 96
  batch = {"tokens": rng.integers(0, 272, (1, B, T)).astype(np.int32),
           "targets": rng.integers(0, 272, (1, B, T)).astype(np.int32),
           "mask": np.ones((1, B, T), bool), "loss_mask": rng.random((1, B, T)) > 0.3}
  one = {k: v[0] for k, v in batch.items()}
  temp, grads = {}, {}
  for policy in ("none", "block"):
    cfg = get_preset("tiny", remat=policy)
    gd, st = init_train_state(create_model(cfg, seed=0), optax.sgd(1.0), 0)
    (l, d), g = jax.value_and_grad(lambda p: sft_loss(gd, p, one), has_aux=True)(st.params)
    grads[policy] = (float(l), jax.tree.leaves(g))
    temp[policy] = (make_train_step(gd, optax.sgd(1.0)).lower(st, batch).compile()
                    .memory_analysis().temp_size_in_bytes)
  assert grads["block"][0] == pytest.approx(grads["none"][0], rel=1e-6)
  for a, b in zip(grads["none"][1], grads["block"][1]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert temp["block"] < 0.8 * temp["none"], temp
  with pytest.raises(ValueError, match="remat must be one of"):
    get_preset("tiny", remat="all")

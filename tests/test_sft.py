"""SFT loss masking, exact gradient accumulation, and that training learns."""
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

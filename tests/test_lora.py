"""LoRA (F4 item 5): adapters only in the optimizer and checkpoints, a frozen base in f32 / bf16 /
int8, the sampler on the adapted weights, merge and export that transformers loads."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dacl.models import lora
from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.sampling import Sampler, SamplingParams
from dacl.tokenizers import ByteTokenizer
from dacl.train.checkpoint import Checkpointer
from dacl.train.sft import init_train_state, make_optimizer, make_train_step, state_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKS = jnp.asarray(np.random.default_rng(0).integers(3, 250, (2, 12)), jnp.int32)
BATCH = {"tokens": TOKS[None], "targets": jnp.roll(TOKS, -1, 1)[None],
         "loss_mask": jnp.ones((1, 2, 12), bool), "mask": jnp.ones((1, 2, 12), bool)}


def _base():
  return create_model(get_preset("tiny", n_layers=2, max_seq_len=64), seed=0)


def _flat(tree):
  return {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(tree)}


def _train(model, steps=4, lr=3e-2):
  tx = make_optimizer(lr, steps)
  gd, st = init_train_state(model, tx, 0)
  step = make_train_step(gd, tx)
  losses = []
  for _ in range(steps):
    st, m = step(st, BATCH)
    losses.append(float(m["loss"]))
  return gd, st, losses, step


def test_only_adapters_train_and_the_base_stays_frozen():
  base = _base()
  ref_logits = np.asarray(base(TOKS)[0])
  m = lora.add_lora(base, rank=4, alpha=8.0, targets=("wq", "wv", "w_down"))
  np.testing.assert_array_equal(np.asarray(m(TOKS)[0]), ref_logits)   # B = 0 at the start
  n = lora.count(m)
  assert n["adapter"] == 2 * (4 * (128 + 128) + 4 * (128 + 64) + 4 * (384 + 128))
  frozen0 = _flat(nnx.state(m, nnx.Not(nnx.LoRAParam)))
  gd, st, losses, step = _train(m)
  names = {p[-1] for p in _flat(st.params)}
  assert names == {f"{t}_lora_{ab}" for t in ("wq", "wv", "w_down") for ab in "ab"}
  # the optimizer holds two Adam moments of the adapters, nothing of the base
  opt_size = sum(x.size for x in jax.tree.leaves(st.opt_state) if x.ndim)
  assert opt_size == 2 * n["adapter"]
  assert losses[-1] < losses[0]
  for p, v in _flat(st.frozen).items():
    np.testing.assert_array_equal(v, frozen0[p])      # bitwise: the base never moved
  assert np.abs(_flat(st.params)[("layers", 0, "wq_lora_b")]).max() > 0
  assert step._cache_size() == 1


@pytest.mark.parametrize("base_dtype,tol", [("bfloat16", 0.02), ("int8", 0.03)])
def test_low_precision_base(base_dtype, tol):
  base = _base()
  m = lora.add_lora(base, rank=4, base_dtype=base_dtype)
  dtypes = {str(v.dtype) for v in _flat(nnx.state(m, nnx.Not(nnx.LoRAParam))).values()}
  assert (base_dtype if base_dtype == "bfloat16" else "int8") in dtypes
  assert {str(v.dtype) for v in _flat(nnx.state(m, nnx.LoRAParam)).values()} == {"float32"}
  np.testing.assert_allclose(np.asarray(m(TOKS)[0]), np.asarray(base(TOKS)[0]), atol=tol)
  gd, st, losses, _ = _train(m)
  assert losses[-1] < losses[0]
  trained = state_model(gd, st)
  merged = lora.merge_lora(trained)     # the int8 base dequantised, adapters folded in
  assert merged.cfg.lora_rank == 0 and not merged.cfg.weight_quant
  np.testing.assert_allclose(np.asarray(merged(TOKS)[0]), np.asarray(trained(TOKS)[0]),
                             atol=1e-4)


def test_sampler_runs_the_adapters_unmerged_and_checkpoints_hold_adapters_only(tmp_path):
  gd, st, _, _ = _train(lora.add_lora(_base(), rank=4), lr=5e-2)
  trained = state_model(gd, st)
  tok = ByteTokenizer()
  prompts, params = ["12+7=", "3*4="], SamplingParams(max_new_tokens=8, temperature=0.0)
  a = Sampler(trained, tok, max_cache_len=32)(prompts, jax.random.key(0), params)
  b = Sampler(lora.merge_lora(trained), tok, max_cache_len=32)(prompts, jax.random.key(0), params)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(1, st, {"step": 1})
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path / "ck")
             for f in fs)
  full_bytes = 4 * lora.count(trained)["base"]
  assert size < full_bytes / 4, (size, full_bytes)     # adapters + moments, not the base
  fresh = init_train_state(lora.add_lora(_base(), rank=4), make_optimizer(1e-3, 1), 0)[1]
  restored, _, _ = ck.restore(fresh)
  ck.close()
  assert restored.frozen is fresh.frozen                # the base comes from the config
  for p, v in _flat(restored.params).items():
    np.testing.assert_array_equal(v, _flat(st.params)[p])


def test_grpo_step_trains_adapters_only():
  from dacl.rl.step import make_rl_step
  m = lora.add_lora(_base(), rank=4)
  tx = make_optimizer(1e-2, 4)
  gd, st = init_train_state(m, tx, 0)
  frozen0, params0 = _flat(st.frozen), _flat(st.params)
  ref = jax.tree.map(jnp.copy, st.params)            # the KL anchor: the initial adapters
  step = make_rl_step(gd, tx, beta=0.05)
  lp = jax.nn.log_softmax(m(TOKS)[0])
  old = jnp.take_along_axis(lp, BATCH["targets"][0][..., None], -1)[..., 0]
  batch = {"tokens": TOKS[None], "targets": BATCH["targets"],
           "positions": jnp.broadcast_to(jnp.arange(12), (2, 12))[None],
           "mask": BATCH["mask"], "loss_mask": BATCH["loss_mask"], "old_logp": old[None],
           "adv": jnp.array([[1.0, -1.0]])}
  for _ in range(2):
    st, met = step(st, batch, ref)
  assert float(met["kl"]) > 0
  assert any(np.abs(v - params0[p]).max() > 0 for p, v in _flat(st.params).items())
  for p, v in _flat(st.frozen).items():
    np.testing.assert_array_equal(v, frozen0[p])


def test_bad_lora_settings_are_clear_errors():
  with pytest.raises(ValueError, match="base_dtype"):
    lora.add_lora(_base(), rank=4, base_dtype="fp8")
  with pytest.raises(ValueError, match="targets"):
    lora.add_lora(_base(), rank=4, targets=("wq", "attn"))
  with pytest.raises(ValueError, match="rank"):
    lora.add_lora(_base(), rank=0)


def _dacl(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "dacl.cli", *args], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=600)


def test_cli_sft_with_lora_then_export_loads_in_transformers(tmp_path):
  """`dacl train --config.lora.rank=4` trains adapters on an int8 base; `dacl export` merges
  them into safetensors that transformers loads with the same logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from test_readme_commands import readme_lora_argv
  short = ["--config.train.steps=6", "--config.train.batch_size=16", "--config.train.log_every=3",
           "--config.train.eval_every=0", "--config.train.save_every=3",
           "--config.task.train_size=200", "--config.eval.num_examples=8",
           "--config.model.max_seq_len=32"]
  train = readme_lora_argv("train", tmp_path / "run") + short
  assert train[0] == "train" and "--config.lora.rank=8" in train and "--config=configs/sft_arith.py" in train
  r = _dacl(*train)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed" not in r.stderr
  out = tmp_path / "hf"
  r = _dacl(*readme_lora_argv("export", tmp_path / "run", out), "--config.model.max_seq_len=32")
  assert r.returncode == 0, r.stderr[-2000:]
  assert str(out) in r.stdout
  assert json.load(open(out / "config.json"))["model_type"] == "llama"
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
  # dacl's own view of the same checkpoint: the int8 base plus the trained adapters
  from configs.sft_arith import get_config
  from dacl.build import build_model_and_tokenizer
  from dacl.serve import restore_policy
  c = get_config()
  c.unlock()
  c.model.max_seq_len, c.lora.rank, c.lora.base_dtype = 32, 8, "int8"
  c.lora.targets = ("wq", "wv", "w_up")
  model, _ = build_model_and_tokenizer(c.model, 0, lora=c.lora)
  model = restore_policy(model, str(tmp_path / "run" / "checkpoints"))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(np.asarray(TOKS), dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(model(TOKS)[0]), ref, atol=1e-4, rtol=1e-4)
  assert np.abs(_flat(nnx.state(model, nnx.LoRAParam))[("layers", 0, "wq_lora_b")]).max() > 0


def test_checkpoints_from_before_the_frozen_field_restore(tmp_path):
  """A checkpoint holds (params, opt_state, step, rng), the train state's tree before LoRA's
  `frozen` field existed, so runs saved by earlier versions still resume."""
  from typing import Any, NamedTuple

  class OldTrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Any
    rng: Any
  gd, st = init_train_state(_base(), make_optimizer(1e-3, 1), 0)
  ck = Checkpointer(str(tmp_path / "ck"))
  ck.save(3, OldTrainState(*st[:4]), {"step": 3})
  restored, rec, step = ck.restore(st)
  ck.close()
  assert step == 3 and restored.frozen is None and type(restored).__name__ == "TrainState"
  for p, v in _flat(restored.params).items():
    np.testing.assert_array_equal(v, _flat(st.params)[p])


def test_adaswitch_with_lora_trains_adapters_only_and_evaluates(tmp_path):
  """AdaSwitch with --config.lora.rank: both SFT stages train adapters over the frozen base (the
  stage checkpoints hold adapters only, and stage 3 moved them), the evaluation samples from the
  adapted model, and `dacl eval` restores it."""
  from test_readme_commands import _ADA
  from configs.adaswitch_arith import get_config
  from dacl.build import build_model_and_tokenizer
  wd = tmp_path / "run"
  args = [f"--config={os.path.join(ROOT, 'configs', 'adaswitch_arith.py')}", f"--workdir={wd}",
          *_ADA, "--config.lora.rank=4"]
  r = _dacl("train", *args)
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.load(open(wd / "results.json"))
  assert res["modes"]["local"]["local_tokens"] > 0
  c = get_config()
  c.lora.rank = 4
  model, _ = build_model_and_tokenizer(c.model, 0, lora=c.lora)
  gd, fresh = init_train_state(model, make_optimizer(1e-3, 1), 0)
  stages = {}
  for s in ("stage1", "stage3"):
    ck = Checkpointer(str(wd / "runs" / "s0" / s / "checkpoints"))
    stages[s] = _flat(ck.restore(fresh)[0].params)
    ck.close()
  assert set(stages["stage1"]) == set(_flat(fresh.params))          # adapters only
  assert all("lora" in str(p[-1]) for p in stages["stage1"])
  assert any(np.abs(stages["stage3"][p] - stages["stage1"][p]).max() > 0 for p in stages["stage1"])
  r = _dacl("eval", *args)
  assert r.returncode == 0, r.stderr[-2000:]
  ev = json.load(open(wd / "eval.json"))["runs"]["s0"]["modes"]["local"]
  assert ev["accuracy"] == pytest.approx(res["modes"]["local"]["accuracy"])
  assert ev["local_tokens"] == res["modes"]["local"]["local_tokens"]


"""Co-PLMs: distillation losses against hand-computed values, the pair scan (token-level and
sequence-level paths), the proxy message and what crosses the edge-cloud boundary, Rouge-L
against the reference package."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from dacl.coplms import learning as lrn
from dacl.coplms import metrics as qm
from dacl.coplms.protocol import ProxyMessage, Transport, flatten, nbytes, unflatten_into
from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.tokenizers import ByteTokenizer
from dacl.train.sft import init_train_state, make_optimizer


def test_kd_kl_matches_hand_computation():
  s = jnp.log(jnp.asarray([[[0.7, 0.2, 0.1]]]))
  t = jnp.log(jnp.asarray([[[0.5, 0.3, 0.2]]]))
  w = jnp.ones((1, 1))
  got, n = lrn.kd_kl(s, t, w, 1.0)
  want = sum(p * np.log(p / q) for p, q in zip([0.5, 0.3, 0.2], [0.7, 0.2, 0.1]))
  assert float(got) == pytest.approx(want, rel=1e-5) and float(n) == 1
  same, _ = lrn.kd_kl(s, s, w, 2.0)
  assert float(same) == pytest.approx(0.0, abs=1e-6)
  # temperature: T^2 * KL of the softened distributions
  T = 2.0
  sp, tp = np.exp(np.log([0.7, 0.2, 0.1]) / T), np.exp(np.log([0.5, 0.3, 0.2]) / T)
  sp, tp = sp / sp.sum(), tp / tp.sum()
  got, _ = lrn.kd_kl(s, t, w, T)
  assert float(got) == pytest.approx(T * T * (tp * np.log(tp / sp)).sum(), rel=1e-5)
  ce, n = lrn.ce_loss(s, jnp.asarray([[0]]), jnp.asarray([[2.0]]))
  assert float(ce) == pytest.approx(-2 * np.log(0.7), rel=1e-5) and float(n) == 2.0


def _party(preset, seed, lr=3e-3):
  m = create_model(get_preset(preset, n_layers=1), seed)
  tx = make_optimizer(lr, 100)
  g, s = init_train_state(m, tx, seed)
  return g, s, tx


def _batches(tok, steps=4):
  rows = [(f"reverse: {w}=", w[::-1], 1.0) for w in ("apple", "table", "river", "stone")]
  return lrn.stack([lrn.qa_batch(rows, tok, 32) for _ in range(steps)])


def test_pair_scan_without_kd_equals_single_model_training():
  tok = ByteTokenizer()
  ga, sa, txa = _party("micro", 0)
  gb, sb, txb = _party("micro", 1)
  b = _batches(tok)
  single = lrn.make_single_scan(ga, txa)
  s1, _ = single(jax.tree.map(jnp.copy, sa), b)
  pair = lrn.make_pair_scan(ga, txa, gb, txb, token_kd=True, train_b=False)
  s2, sb2, _ = pair(jax.tree.map(jnp.copy, sa), jax.tree.map(jnp.copy, sb), b, 0.0, 0.0)
  for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  for x, y in zip(jax.tree.leaves(sb.params), jax.tree.leaves(sb2.params)):   # B frozen
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_mutual_learning_pulls_two_models_together():
  """Pure distillation (no labels: weights on, CE swamped by a large α): the two models'
  predictive distributions on the batch get closer in both directions."""
  tok = ByteTokenizer()
  ga, sa, txa = _party("micro", 0, lr=1e-2)
  gb, sb, txb = _party("tiny", 1, lr=1e-2)
  b = _batches(tok, steps=1)
  one = jax.tree.map(lambda x: x[0], b)

  def kl():
    la = nnx.merge(ga, sa.params)(one["tokens"], None, one["mask"])[0]
    lb = nnx.merge(gb, sb.params)(one["tokens"], None, one["mask"])[0]
    return float(lrn.kd_kl(la, lb, one["weights"], 1.0)[0]), float(lrn.kd_kl(lb, la, one["weights"], 1.0)[0])
  before = kl()
  pair = lrn.make_pair_scan(ga, txa, gb, txb, token_kd=True)
  sa, sb, m = pair(sa, sb, _batches(tok, steps=20), alpha_a=50.0, alpha_b=50.0)
  after = kl()
  assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
  assert {"ce_a", "ce_b", "kl_a", "kl_b"} <= set(m)


def test_confidence_weights_token_kd_by_the_teachers_p_gold():
  from dacl.train.sft import token_logprobs
  tok = ByteTokenizer()
  ga, sa, txa = _party("micro", 0)
  gb, sb, txb = _party("tiny", 1)
  b = _batches(tok, steps=1)
  one = jax.tree.map(lambda x: x[0], b)
  la = nnx.merge(ga, sa.params)(one["tokens"], None, one["mask"])[0]
  lb = nnx.merge(gb, sb.params)(one["tokens"], None, one["mask"])[0]
  p_gold = jnp.exp(token_logprobs(lb, one["targets"]))
  want = float(lrn.kd_kl(la, lb, one["weights"] * p_gold, 2.0)[0] / one["weights"].sum())
  got = {}
  for conf in (True, False):
    pair = lrn.make_pair_scan(ga, txa, gb, txb, token_kd=True, train_a=False, train_b=False,
                              confidence=conf)
    _, _, m = pair(jax.tree.map(jnp.copy, sa), jax.tree.map(jnp.copy, sb), b, 1.0, 1.0)
    got[conf] = float(m["kl_a"][0])
  assert got[True] == pytest.approx(want, rel=1e-4)
  assert got[True] < 0.5 * got[False]     # an untrained teacher is rarely sure of the gold token


def test_sequence_kd_batches_weight_teacher_rows():
  tok = ByteTokenizer()
  rows = [("reverse: cat=", "tac", 1.0), ("reverse: cat=", "tca", 0.25)]
  b = lrn.qa_batch(rows, tok, 24)
  w = b["weights"]
  assert set(np.unique(w[0])) == {0.0, 1.0} and set(np.unique(w[1])) == {0.0, 0.25}
  assert (w[0] > 0).sum() == len("tac") + 1   # the answer and its EOS


def test_proxy_message_carries_parameters_only():
  m = create_model(get_preset("micro"), 0)
  params = nnx.state(m, nnx.Param)
  flat = flatten(params)
  t = Transport(keep_payloads=True)
  got = t.send("up", ProxyMessage("edge0", 3, flat))
  assert (got.edge, got.round) == ("edge0", 3) and set(got.params) == set(flat)
  assert all(np.array_equal(got.params[k], flat[k]) for k in flat)
  assert t.log[0]["bytes"] >= nbytes(params) and t.log[0]["bytes"] < nbytes(params) + 4096
  back = unflatten_into(params, {k: v * 0 for k, v in got.params.items()})
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(back))
  with pytest.raises(TypeError):
    t.send("up", {"params": flat, "examples": ["reverse: cat="]})
  with pytest.raises(ValueError, match="shape"):
    unflatten_into(params, {**flat, "embed": flat["embed"][:2]})


def test_rouge_l_is_the_reference_package():
  from rouge_score import rouge_scorer
  ref = rouge_scorer.RougeScorer(["rougeL"])
  for pred, gold in (("got, amount, cure", "got, cure, amount"), ("a b c d", "a c d"), ("x", "y")):
    assert qm.rouge_l(pred, gold) == pytest.approx(ref.score(gold, pred)["rougeL"].fmeasure)
  assert qm.exact_match(" tac ", "tac") == 1.0 and qm.exact_match("Tac", "tac") == 0.0
  assert qm.answer_of("tac\nmore") == "tac"


def test_llm_warm_start_is_computed_once_and_shared(tmp_path):
  """coplms.llm_warm_steps: CE updates of the LLM on the public set, saved once per seed and
  restored (not recomputed) for the next method; 0 turns it off."""
  import sys, os
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs.coplms_domains import get_config
  from dacl.build import build_task
  from dacl.coplms import job
  c = get_config()
  with c.unlocked():
    c.coplms.private_size, c.coplms.public_per_domain, c.eval.num_examples = 16, 16, 4
    c.coplms.batch_size, c.coplms.llm_warm_steps = 4, 6
  tasks = [build_task(t) for t in c.coplms.domains]
  runner = job.Runner(c, job.domain_data(c, tasks, 0), 0)
  first = job.warm_llm_params(c, runner, 0, str(tmp_path / "warm"))
  init = job.build_party("llm", c.coplms.llm, 0, 6, c.optim).state.params
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), first, init)
  assert max(jax.tree.leaves(moved)) > 0
  runner.alone = lambda *a, **k: pytest.fail("a saved warm start must be restored, not recomputed")
  again = job.warm_llm_params(c, runner, 0, str(tmp_path / "warm"))
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), first, again))
  with c.unlocked():
    c.coplms.llm_warm_steps = 0
  assert job.warm_llm_params(c, runner, 0, str(tmp_path / "off")) is None

"""DA-GRPO kernels against hand-computed values."""
import numpy as np
import pytest
import jax.numpy as jnp

from dacl.rl import kernels as K
from dacl.continual import metrics as cm


def test_group_advantages_none_has_unbiased_factor():
  r = jnp.asarray([[1.0, 0.0, 0.0, 1.0]])   # mean 0.5, G/(G-1) = 4/3
  np.testing.assert_allclose(K.group_advantages(r, "none"), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]], rtol=1e-6)


def test_group_and_batch_scales():
  r = jnp.asarray([[1.0, 0.0], [3.0, 3.0]])
  # group: (1-0.5)/0.5 = 1 ; equal group -> 0
  np.testing.assert_allclose(K.group_advantages(r, "group"), [[1.0, -1.0], [0.0, 0.0]], atol=1e-5)
  # batch: centred per group, divided by the batch std of [1,0,3,3] = sqrt(1.6875)
  sd = np.std([1.0, 0.0, 3.0, 3.0])
  np.testing.assert_allclose(K.group_advantages(r, "batch"), [[0.5 / sd, -0.5 / sd], [0, 0]], atol=1e-5)
  with pytest.raises(ValueError):
    K.group_advantages(r, "nope")


@pytest.mark.parametrize("scale", ["none", "group", "batch"])
def test_equal_rewards_give_zero_advantage(scale):
  r = jnp.full((3, 5), 0.7)
  assert float(jnp.abs(K.group_advantages(r, scale)).max()) == 0.0


def test_dual_advantage_hand_values():
  # group of 4: rewards r = [1, 1, 0, 0], costs c = [1, 0, 0, 0]; λ = 0.5
  r = jnp.asarray([[1.0, 1.0, 0.0, 0.0]])
  c = jnp.asarray([[1.0, 0.0, 0.0, 0.0]])
  ar = K.group_advantages(r, "none")            # (r - 0.5) * 4/3 = [2/3, 2/3, -2/3, -2/3]
  ac = K.group_advantages(c, "none")            # (c - 0.25) * 4/3 = [1, -1/3, -1/3, -1/3]
  a = K.dual_advantage(ar, ac, 0.5)
  np.testing.assert_allclose(a, [[2 / 3 - 0.5, 2 / 3 + 1 / 6, -2 / 3 + 1 / 6, -2 / 3 + 1 / 6]], rtol=1e-6)
  # the offloaded correct row is now worth less than the local correct row
  assert a[0, 0] < a[0, 1]


def test_projected_dual_ascent():
  assert float(K.dual_ascent(0.2, 0.5, 0.3, 1.0)) == pytest.approx(0.4)   # usage above τ: rises
  assert float(K.dual_ascent(0.2, 0.1, 0.3, 0.5)) == pytest.approx(0.1)   # below τ: falls
  assert float(K.dual_ascent(0.05, 0.0, 0.3, 1.0)) == 0.0                 # projected at 0


def test_pi_lagrangian():
  # K_p = 0 is plain projected dual ascent: λ = I
  lam, i = K.pi_lagrangian(0.2, 0.5, 0.3, 1.0, 0.0)
  assert float(lam) == pytest.approx(0.4) and float(i) == pytest.approx(0.4)
  # I = 0.2 + 0.5·0.2 = 0.3; λ = 0.3 + 2·0.2 = 0.7
  lam, i = K.pi_lagrangian(0.2, 0.5, 0.3, 0.5, 2.0)
  assert float(i) == pytest.approx(0.3) and float(lam) == pytest.approx(0.7)
  # below τ the P term pulls λ under I at once: I = 0.5 − 0.1·0.2 = 0.48; λ = 0.48 − 2·0.2 = 0.08
  lam, i = K.pi_lagrangian(0.5, 0.1, 0.3, 0.1, 2.0)
  assert float(i) == pytest.approx(0.48) and float(lam) == pytest.approx(0.08)
  # both projected at 0
  lam, i = K.pi_lagrangian(0.01, 0.0, 0.3, 0.1, 2.0)
  assert float(i) == 0.0 and float(lam) == 0.0


def test_shaped_reward():
  np.testing.assert_allclose(K.shaped_reward(jnp.asarray([1.0, 1.0, 0.0]), jnp.asarray([1.0, 0.0, 1.0]), 0.3),
                             [0.7, 1.0, -0.3], rtol=1e-6)


def test_clipped_surrogate_hand_values():
  logp = jnp.log(jnp.asarray([[1.5, 0.5, 1.1]]))   # ratios 1.5, 0.5, 1.1 against old = 0
  old = jnp.zeros((1, 3))
  pos, clip_pos = K.clipped_surrogate(logp, old, jnp.asarray([2.0]), 0.2)
  # A > 0: min(ρA, clip(ρ)A) = [1.2*2, 0.5*2, 1.1*2]
  np.testing.assert_allclose(-pos, [[2.4, 1.0, 2.2]], rtol=1e-6)
  np.testing.assert_allclose(clip_pos, [[1.0, 0.0, 0.0]])
  neg, _ = K.clipped_surrogate(logp, old, jnp.asarray([-1.0]), 0.2)
  # A < 0: min(-ρ, -clip(ρ)) = [-1.5, -0.8, -1.1]
  np.testing.assert_allclose(-neg, [[-1.5, -0.8, -1.1]], rtol=1e-6)
  hi, _ = K.clipped_surrogate(logp, old, jnp.asarray([2.0]), 0.2, eps_high=0.28)
  np.testing.assert_allclose(-hi, [[2.56, 1.0, 2.2]], rtol=1e-6)   # ε_high widens the upper clip


def test_k3_kl():
  lp = jnp.log(jnp.asarray([0.5, 0.2]))
  ref = jnp.log(jnp.asarray([0.25, 0.2]))
  r = np.log([0.5, 1.0])
  np.testing.assert_allclose(K.k3_kl(lp, ref), np.exp(r) - r - 1, rtol=1e-6)
  assert float(K.k3_kl(lp, ref)[1]) == 0.0


def test_aggregations_and_masks():
  x = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
  m = jnp.asarray([[True, True, True], [True, False, False]])
  s, d = K.token_mean(x, m)
  assert (float(s), float(d)) == (10.0, 4.0)
  s, d = K.sequence_mean(x, m)
  assert (float(s), float(d)) == (2.0 + 4.0, 2.0)
  local = jnp.asarray([[True, True, True, False]])     # ... marker is the last local token
  cloud = jnp.asarray([[False, False, True, False]])
  assert K.policy_mask(local, cloud).tolist() == [[True, True, False, False]]


def test_grpo_loss_micro_batches_combine_exactly():
  rng = np.random.default_rng(0)
  lp = jnp.asarray(rng.normal(size=(4, 5)) * 0.1)
  old = jnp.asarray(rng.normal(size=(4, 5)) * 0.1)
  adv = jnp.asarray(rng.normal(size=4))
  mask = jnp.asarray(rng.random((4, 5)) > 0.3)
  s, d, _ = K.grpo_loss(lp, old, None, adv, mask)
  s1, d1, _ = K.grpo_loss(lp[:2], old[:2], None, adv[:2], mask[:2])
  s2, d2, _ = K.grpo_loss(lp[2:], old[2:], None, adv[2:], mask[2:])
  assert float(s / d) == pytest.approx(float((s1 + s2) / (d1 + d2)), rel=1e-6)


def test_decision_weight_scales_only_each_rows_first_token():
  # row 0: prompt, then a 3-token local answer; row 1: prompt, the marker, then cloud tokens
  mask = jnp.asarray([[False, True, True, True], [False, True, False, False]])
  assert K.first_token(mask).tolist() == [[False, True, False, False], [False, True, False, False]]
  lp = jnp.zeros((2, 4))
  adv = jnp.asarray([1.0, -2.0])
  s1, d1, _ = K.grpo_loss(lp, lp, None, adv, mask)               # ratio 1: token loss = -A
  s4, d4, _ = K.grpo_loss(lp, lp, None, adv, mask, decision_weight=4.0)
  assert float(d1) == float(d4) == 4.0
  assert float(s1) == pytest.approx(-(3 * 1.0) + 2.0)
  assert float(s4) == pytest.approx(-(4 * 1.0 + 2 * 1.0) + 4 * 2.0)


def test_continual_metrics():
  R = [[0.8, 0.1, 0.0], [0.6, 0.9, 0.2], [0.4, 0.7, 0.5]]
  assert cm.acc(R) == pytest.approx((0.4 + 0.7 + 0.5) / 3)
  assert cm.bwt(R) == pytest.approx(((0.4 - 0.8) + (0.7 - 0.9)) / 2)
  assert cm.forgetting(R) == pytest.approx([0.5, 0.2 / 0.9, 0.0])
  assert cm.post_switch_accuracy([[1, 0, 1, 1], [0.5]], 2) == [0.5, 0.5]
  assert cm.usage_last_quarter([[0, 0, 0, 1, 1, 1, 1, 1]]) == [1.0]


def test_auroc_against_pair_counting():
  rng = np.random.default_rng(0)
  s = rng.integers(0, 5, 40).astype(float)     # many ties
  y = rng.random(40) < 0.4
  pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
  assert cm.auroc(s, y) == pytest.approx(np.mean(pairs))
  assert cm.auroc([0.1, 0.9], [0, 1]) == 1.0 and cm.auroc([0.9, 0.1], [0, 1]) == 0.0
  assert cm.auroc([0.3, 0.4], [1, 1]) is None


def test_paired_gain_counts_moves_and_mcnemar_matches_the_binomial():
  before = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], float)
  after = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 0], float)
  g = cm.paired_gain(before, after)
  assert (g["gained"], g["lost"], g["n"]) == (4, 1, 10)
  assert g["delta"] == pytest.approx(0.3)
  # two-sided exact test on 5 discordant pairs split 4 / 1: 2 * P(X <= 1), X ~ Bin(5, 1/2)
  assert g["p"] == pytest.approx(2 * 6 / 32)
  assert cm.mcnemar_p(0, 0) == 1.0 and cm.mcnemar_p(3, 3) == 1.0
  assert cm.mcnemar_p(20, 0) == pytest.approx(2 * 0.5 ** 20)
  assert cm.paired_gain([1, 1], [1, 1])["p"] == 1.0
  with pytest.raises(ValueError, match="same problems"):
    cm.paired_gain([1, 0], [1, 0, 1])


def test_acc_at_budget_policy_random_oracle():
  local = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 1], float)
  cloud = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], float)
  good = 1.0 - local                               # ranks the locally wrong problems first
  r = cm.acc_at_budget(local, cloud, good + 0.01 * np.arange(10), tau=0.3)   # k = 3
  assert r["k"] == 3
  assert r["oracle"] == pytest.approx(0.9)         # 6 right + 3 fixable sent
  assert r["policy"] == pytest.approx(0.8)         # sends 7, 4, 2: the cloud fails on 2
  assert r["random"] == pytest.approx(0.6 + 0.3 * 0.2)   # mean gain 0.2 per sent problem
  bad = cm.acc_at_budget(local, cloud, local, tau=0.3)     # sends 0, 3, 5: right already
  assert bad["policy"] == pytest.approx(0.6) and bad["policy"] < bad["random"] < bad["oracle"]
  # the random figure is the expectation over k-subsets
  sims = [local.sum() + (cloud - local)[np.random.default_rng(i).permutation(10)[:3]].sum()
          for i in range(4000)]
  assert np.mean(sims) / 10 == pytest.approx(r["random"], abs=0.01)


def test_budget_marks_cap_the_failures_at_the_budget_least_confident_first():
  """Self-knowledge SFT under `marker_on="budget"`: the failures, at most ⌊τ·n⌋, the lowest
  greedy log-probability first; right answers never."""
  from dacl.rl.warmstart import budget_marks
  failed = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 0], float)
  logp = np.array([-1.0, -9.0, -3.0, -0.1, -2.0, -5.0, -0.2, -0.3, -0.4, -0.5])
  # fewer failures than the budget: all three, and no right answer fills the rest
  assert np.flatnonzero(budget_marks(failed, logp, 0.5)).tolist() == [0, 2, 4]
  # more failures than the budget: the two least probable failures (indices 2 and 4)
  assert np.flatnonzero(budget_marks(failed, logp, 0.2)).tolist() == [2, 4]
  assert not budget_marks(failed, logp, 0.0).any()
  assert np.flatnonzero(budget_marks(failed, logp, 1.0)).tolist() == [0, 2, 4]


def test_dynamic_sampling_keeps_groups_whose_rows_differ_in_draw_order():
  from dacl.rl.rollout import Rollout
  from dacl.rl.trainer import keep_informative_groups
  G, N = 2, 10
  reward = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 1], float)   # groups: same, differ, same, differ, same
  cost = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], float)     # group 4 differs in cost only
  arr = lambda: np.arange(N * 3).reshape(N, 3)
  ro = Rollout(prompt_ids=[[g] for g in range(5)], tokens=arr(), old_logp=arr() * 0.5,
               mask=arr() > 2, reward=reward, cost=cost, offload=cost > 0, cloud_ok=cost > 0,
               local_correct=reward, faults=3, texts=[f"t{i}" for i in range(N)])
  out = keep_informative_groups(ro, G, 3)
  assert out.prompt_ids == [[1], [3], [4]] and out.faults == 3
  assert out.texts == ["t2", "t3", "t6", "t7", "t8", "t9"]
  np.testing.assert_array_equal(out.tokens, ro.tokens[[2, 3, 6, 7, 8, 9]])
  np.testing.assert_array_equal(out.reward, reward[[2, 3, 6, 7, 8, 9]])
  # too few informative groups: topped up with the first uninformative ones, in draw order
  assert keep_informative_groups(ro, G, 5).prompt_ids == [[1], [3], [4], [0], [2]]

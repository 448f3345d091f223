"""GRPO's parts, composed as `dacl.rl.trainer` composes them (collaborative rollout -> group
advantages -> training batch -> clipped-surrogate step -> sampler refresh), raise the reward of a
toy task that a random policy gets about half right. The kernel tests check each part's maths;
this checks that the parts line up (rows, prompts, advantages and log-probs of one rollout in
one order). Shuffling the advantages across rows, or taking them from the wrong group, makes it
fail (checked by hand when written)."""
import types

import jax
import numpy as np
from flax import nnx

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.rl.rollout import PendingRollout, collaborative_rollout, finish_rollout, training_batch
from dacl.rl.step import compute_advantages, make_rl_step
from dacl.sampling import Sampler
from dacl.tokenizers import ByteTokenizer
from dacl.train.sft import init_train_state, make_optimizer, state_model


class EvenFirstByte:
  """Reward 1 when the completion's first character has an even code point."""

  def score_many(self, texts, examples):
    return [float(bool(t) and ord(t[0]) % 2 == 0) for t in texts]


def test_grpo_raises_the_reward_of_a_toy_task():
  B, G, steps = 8, 8, 20
  task = EvenFirstByte()
  tok = ByteTokenizer()
  tx = make_optimizer(3e-2, steps)
  graphdef, state = init_train_state(create_model(get_preset("nano"), seed=0), tx, 0)
  sampler = Sampler(state_model(graphdef, state), tok, max_cache_len=32)
  rl_step = make_rl_step(graphdef, tx)
  examples = [types.SimpleNamespace(prompt=f"{a}+{a + 3}=", answer="", task="even")
              for a in range(B)]
  rng = np.random.default_rng(0)
  rewards = []
  for s in range(steps):
    ro = collaborative_rollout(sampler, examples, lambda e: task, group=G, bridge=None,
                               max_new_tokens=2, temperature=1.0, marker_ids=(), route="local",
                               tau=0.0, key=jax.random.key(s), rng=rng)
    rewards.append(float(ro.reward.mean()))
    adv = compute_advantages(ro.reward.reshape(B, G), ro.cost.reshape(B, G), np.float32(0.0),
                             np.float32(0.0))
    batch = training_batch(ro, G, tok.pad_id, 16)
    batch["adv"] = np.asarray(adv, np.float32).reshape(-1)
    state, m = rl_step(state, jax.tree.map(lambda x: x[None], batch), None)
    assert float(m["clip_frac"]) == 0.0      # on-policy: the sampler's log-probs are the policy's
    sampler.update_state(nnx.state(state_model(graphdef, state)))
  assert np.mean(rewards[:2]) < 0.7, rewards
  assert np.mean(rewards[-3:]) > 0.9, rewards


def test_partial_credit_rewards_wrong_local_answers_by_their_digits():
  """`rl.partial_credit = w`: a wrong local answer earns w x its digit places right; a right one
  1; `local_correct` (what local accuracy reports) stays exact."""
  from dacl.data.tasks import make_task
  task = make_task("chain_sum")
  ex = types.SimpleNamespace(prompt="47+85=", answer="132", task="add")
  texts = ["132", "122", "99", "x"]
  out = types.SimpleNamespace(texts=texts, tokens=np.zeros((4, 2), np.int32),
                              logprobs=np.zeros((4, 2)), mask=np.ones((4, 2), bool))
  pend = PendingRollout([ex], ["k"], [[1]], out, np.zeros(4, bool), np.ones(4, bool), False)
  exact = finish_rollout(pend, lambda e: task, 4, None)
  shaped = finish_rollout(pend, lambda e: task, 4, None, partial_credit=0.5)
  np.testing.assert_allclose(exact.reward, [1, 0, 0, 0])
  np.testing.assert_allclose(shaped.reward, [1, 0.5 * 2 / 3, 0, 0])
  np.testing.assert_allclose(shaped.local_correct, [1, 0, 0, 0])

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
from dacl.rl.rollout import collaborative_rollout, training_batch
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

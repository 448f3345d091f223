"""Co-PLMs' main run: one cloud LLM ("tiny", byte-level) and three edge SLMs of different
architectures ("micro" Llama-style, "micro_qwen2" with qkv bias, "micro_qwen3" with q/k norm on
SmolLM2's BPE vocabulary), each with private QA data of its own domain (reverse a word, sort
words, add two numbers), co-tuned through distilled proxy models of one shared architecture
("nano"). The cloud has a public set drawn from all three domains. Co-PLMs and its baselines, one
code path. Sized for 2 CPU cores: the SLMs are small enough for ~800 updates each per method
(a "tiny" SLM step cost 10x a "micro" one), which is what they need to learn their domains.

  dacl train --config=configs/coplms_domains.py --workdir=DIR
"""
import ml_collections

from configs.base import get_base
from configs.rl_base import task

CD = ml_collections.ConfigDict


def get_config():
  c = get_base()
  c.algorithm = "coplms"
  c.seeds = (0,)
  c.coplms = CD(dict(
      domains=[
          task("spell_backward", "reverse", fmt="compact", min_word_len=3, max_word_len=5),
          task("word_sorting", "sort", fmt="compact", min_words=2, max_words=3, min_word_length=3,
               max_word_length=4),
          task("chain_sum", "add", min_terms=2, max_terms=2, min_digits=1, max_digits=2)],
      llm=CD(dict(preset="tiny", tokenizer="byte", lr=3e-3)),
      # one SLM per domain, in the order of `domains`
      slms=[CD(dict(name="slm_llama", preset="micro", tokenizer="byte", lr=3e-3)),
            CD(dict(name="slm_qwen2", preset="micro_qwen2", tokenizer="byte", lr=3e-3)),
            CD(dict(name="slm_qwen3_bpe", preset="micro_qwen3", tokenizer="smollm2", lr=3e-3))],
      dpm=CD(dict(preset="nano", tokenizer="byte", lr=3e-3)),
      methods=("coplms", "standalone", "fedavg_proxy", "direct_kd", "pooled"),
      rounds=4,
      edge_steps=200,          # per round, per edge: updates of SLM_k and DPM_k
      cloud_steps=80,          # per round, per DPM: updates of the LLM and DPM_k
      batch_size=16,
      alpha=0.5,               # weight of the distillation term (both directions)
      temperature=2.0,         # softmax temperature of the token-level KL
      kd_weighting="confidence",  # token KD weighted by the teacher's p(gold token), sequence
                               #   KD rows by the teacher's answer probability ("uniform": by 1)
      llm_warm_steps=0,        # >0: the LLM starts from this many CE updates on the public set
                               #   (once per seed, shared by every method)
      private_size=400,        # private training examples per edge
      public_per_domain=1500,  # the cloud's public set, per domain
      seq_len=48, seq_len_bpe=24, answer_tokens=20, space_draws=2000))
  c.eval.num_examples = 200    # held-out test problems per domain
  c.lock()
  return c

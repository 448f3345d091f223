"""Co-PLMs' main run: one cloud LLM ("small", byte-level) and three edge SLMs of different
architectures (Llama-style, Qwen2-style with qkv bias, Qwen3-style with q/k norm on SmolLM2's BPE
vocabulary), each with private QA data of its own domain (reverse a word, sort words, add two
numbers), co-tuned through distilled proxy models of one shared architecture ("micro"). The
cloud has a public set drawn from all three domains. Co-PLMs and its baselines, one code path.

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
          task("spell_backward", "reverse", fmt="compact", min_word_len=3, max_word_len=7),
          task("word_sorting", "sort", fmt="compact", min_words=3, max_words=3, min_word_length=3,
               max_word_length=5),
          task("chain_sum", "add", min_terms=2, max_terms=2, min_digits=1, max_digits=2)],
      llm=CD(dict(preset="small", tokenizer="byte", lr=2e-3)),
      # one SLM per domain, in the order of `domains`
      slms=[CD(dict(name="slm_llama", preset="tiny", tokenizer="byte", lr=3e-3)),
            CD(dict(name="slm_qwen2", preset="tiny_qwen2", tokenizer="byte", lr=3e-3)),
            CD(dict(name="slm_qwen3_bpe", preset="tiny_qwen3", tokenizer="smollm2", lr=3e-3))],
      dpm=CD(dict(preset="micro", tokenizer="byte", lr=3e-3)),
      methods=("coplms", "standalone", "fedavg_proxy", "direct_kd", "pooled"),
      rounds=4,
      edge_steps=40,           # per round, per edge: updates of SLM_k and DPM_k
      cloud_steps=30,          # per round, per DPM: updates of the LLM and DPM_k
      batch_size=16,
      alpha=0.5,               # weight of the distillation term (both directions)
      temperature=2.0,         # softmax temperature of the token-level KL
      private_size=400,        # private training examples per edge
      public_per_domain=1500,  # the cloud's public set, per domain
      seq_len=64, seq_len_bpe=32, answer_tokens=20, space_draws=2000))
  c.eval.num_examples = 200    # held-out test problems per domain
  c.lock()
  return c

"""SFT of a real model: the embedded SmolLM2-135M-Instruct on GSM8K-format word problems with the
chat template (no download). Defaults to the 64-row fixture shipped in dacl/data/fixtures, whose
held-out split has 7 problems; point it at a real file for a real run:

  dacl train --config=configs/sft_smollm2_gsm8k.py --workdir=DIR
  dacl train --config=configs/sft_smollm2_gsm8k.py --workdir=DIR \
      --config.task.path=/path/to/gsm8k_train.jsonl --config.eval.num_examples=256

A row's split is the hash of its question (dacl.data.splits), so a file's rows are divided into
train / eval / test by dacl, whatever file they came from.
"""
import ml_collections

from configs.base import get_base


def get_config():
  c = get_base()
  c.model.weights = "smollm2-135m-instruct"
  c.model.max_seq_len = 512
  c.task = ml_collections.ConfigDict(dict(
      name="gsm8k_jsonl", prompt_format="question", path="", chat=True, train_size=2000,
      kwargs=ml_collections.ConfigDict()))
  c.train.update(dict(steps=40, batch_size=4, seq_len=160, log_every=5, eval_every=0,
                      save_every=20))
  c.optim.update(dict(lr=2e-5, warmup_steps=5, weight_decay=0.0))
  c.eval.update(dict(num_examples=7, batch_size=8, max_new_tokens=128))
  c.lock()
  return c

"""Shared defaults. Experiment configs start from `get_base()` and change what they need."""
import ml_collections


def get_base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.algorithm = "sft"
  c.model = ml_collections.ConfigDict(dict(
      preset="tiny",          # dacl/models/config.py PRESETS
      weights="",             # HF dir, .gguf path or "smollm2-135m-instruct"; overrides preset
      dtype="float32", param_dtype="float32",
      decode_dtype="float32",  # serving and `dacl eval`: "float32", "bfloat16" or "int8"
                               # (weight-only, per-channel; dacl/models/quant.py)
      max_seq_len=256,        # KV cache / sequence limit
      remat="none",           # training memory: "none" or "block" (ModelConfig.remat)
      n_layers=0))            # 0: the weights' / preset's depth; N: only the first N blocks
                              # (a shallow smoke-test model from real weights; the tests use it)
  c.task = ml_collections.ConfigDict(dict(
      name="chain_sum", prompt_format="expression", path="", chat=False,
      train_size=20000, kwargs=ml_collections.ConfigDict()))
  c.train = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=64, grad_accum=1, seq_len=32,
      log_every=10, eval_every=250, save_every=200, keep=3,
      loss_chunk=0))   # > 0: cross-entropy over this many positions at a time (large vocabularies)
  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-3, warmup_steps=50, weight_decay=0.01, b1=0.9, b2=0.95, clip_norm=1.0,
      end_lr_ratio=0.1))
  # eval.data_seed: -1 = the run seed (each seed draws its own held-out set, so a std over seeds
  # includes evaluation-data variance); an int fixes one held-out set across seeds.
  c.eval = ml_collections.ConfigDict(dict(num_examples=256, batch_size=128, max_new_tokens=8,
                                          data_seed=-1))
  c.mesh = ml_collections.ConfigDict(dict(shape=()))   # () = all devices on the 'data' axis
  # LoRA (SFT and DA-GRPO): rank > 0 trains adapters on `targets` only (alpha/rank scaling);
  # the frozen base in base_dtype "float32", "bfloat16" or "int8" (weight-only, QLoRA-style).
  c.lora = ml_collections.ConfigDict(dict(
      rank=0, alpha=16.0, targets=("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"),
      base_dtype="float32"))
  return c

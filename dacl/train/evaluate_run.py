"""`dacl eval`: a checkpoint of a run directory on its config's task (strict restore)."""
from __future__ import annotations

import os


from dacl.build import build_model_and_tokenizer, build_task
from dacl.evaluation import evaluate
from dacl.metrics import write_json_atomic
from dacl.sampling import Sampler
from dacl.train.checkpoint import CheckpointError, Checkpointer
from dacl.train.sft import init_train_state, make_optimizer, state_model


def run_eval(config, workdir: str, step=None) -> dict:
  ckdir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckdir):
    raise CheckpointError(f"no checkpoints to evaluate: {ckdir} does not exist")
  model, tok = build_model_and_tokenizer(config.model, config.seed, lora=config.get("lora"))
  oc = config.optim
  tx = make_optimizer(oc.lr, config.train.steps, oc.warmup_steps, oc.weight_decay, oc.b1, oc.b2,
                      oc.clip_norm, oc.end_lr_ratio)
  graphdef, state = init_train_state(model, tx, config.seed)
  ck = Checkpointer(ckdir)
  state, record, step = ck.restore(state, step)
  task = build_task(config.task)
  from dacl.continual.stream import eval_data_seed
  examples = task.examples("eval", config.eval.num_examples, seed=eval_data_seed(config, config.seed))
  from dacl.models.quant import for_decode
  model = for_decode(state_model(graphdef, state), config.model.get("decode_dtype", "float32"))
  sampler = Sampler(model, tok, max_cache_len=config.model.max_seq_len)
  ev = evaluate(sampler, task, examples, batch_size=config.eval.batch_size,
                max_new_tokens=config.eval.max_new_tokens, chat=config.task.chat, seed=config.seed)
  out = {"task": task.name, "accuracy": ev["accuracy"], "steps": int(step),
         "algorithm": record.get("algorithm", "?"), "model": config.model.weights or config.model.preset,
         "eval_examples": ev["n"],
         "examples": [{"prompt": p, "completion": c, "gold": g, "score": s}
                      for p, c, g, s in ev["samples"][:8]]}
  out["decode_dtype"] = config.model.get("decode_dtype", "float32")
  write_json_atomic(os.path.join(workdir, f"eval_step{step}.json"), out)
  return out

"""The SFT training loop: `dacl train --config=configs/sft_arith.py --workdir=DIR`.

Reads config.{model, task, train, optim, eval}; writes WORKDIR/{checkpoints, metrics.jsonl, tb,
results.json, plots}. Rerunning the same command resumes from the latest checkpoint.
"""
from __future__ import annotations

import functools
import logging
import os
import time

import jax
import numpy as np
from flax import nnx

from dacl import parallel
from dacl.build import build_model_and_tokenizer, build_task
from dacl.continual.stream import data_report, eval_data_seed
from dacl.evaluation import evaluate
from dacl.metrics import MetricsWriter, progress, write_json_atomic
from dacl.sampling import Sampler
from dacl.train.checkpoint import Checkpointer
from dacl.train.sft import (BatchStream, init_train_state, make_optimizer, make_sft_batch,
                            make_train_step, sft_loss, state_model)

log = logging.getLogger("dacl")


def _stack_micro(batch: dict, accum: int) -> dict:
  return {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()
          if isinstance(v, np.ndarray)}


def run_sft(config, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  tc, oc, ec = config.train, config.optim, config.eval
  mesh = parallel.make_mesh(tuple(config.mesh.shape) or None)
  model, tok = build_model_and_tokenizer(config.model, config.seed, mesh, config.get("lora"))
  task = build_task(config.task)
  pool = task.examples("train", config.task.train_size, seed=config.seed)
  eval_set = task.examples("eval", ec.num_examples, seed=eval_data_seed(config, config.seed))
  data = data_report(task, {"train": pool}, eval_set)
  stream = BatchStream(pool, tc.batch_size * tc.grad_accum, seed=config.seed)
  tx = make_optimizer(oc.lr, tc.steps, oc.warmup_steps, oc.weight_decay, oc.b1, oc.b2,
                      oc.clip_norm, oc.end_lr_ratio)
  graphdef, state = init_train_state(model, tx, config.seed)
  shardings = parallel.state_shardings(state, mesh)   # FSDP / tensor axes by the logical rules
  state = jax.device_put(state, shardings)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), tc.save_every, tc.keep)
  writer = MetricsWriter(workdir)
  start = 0
  if ckpt.latest_step() is not None:
    state, record, start = ckpt.restore(state)
    log.info("resumed from %s/checkpoints/%d (data position %s)", workdir, start, record["data_position"])
    writer.truncate_after(start)
  step_fn = make_train_step(graphdef, tx, functools.partial(sft_loss, loss_chunk=int(tc.loss_chunk)),
                            state_shardings=shardings)
  sampler = Sampler(state_model(graphdef, state), tok,
                    max_cache_len=config.model.max_seq_len, mesh=mesh)

  def run_eval():
    sampler.update_state(nnx.state(state_model(graphdef, state)))
    return evaluate(sampler, task, eval_set, batch_size=ec.batch_size,
                    max_new_tokens=ec.max_new_tokens, chat=config.task.chat, seed=config.seed)

  bar = progress(tc.steps, initial=start)
  t_last, tokens_acc, truncated = time.perf_counter(), 0.0, 0
  for step in range(start + 1, tc.steps + 1):
    raw = make_sft_batch(stream.batch(step - 1), tok, tc.seq_len, chat=config.task.chat)
    truncated += raw["truncated"]
    batch = parallel.shard_batch(_stack_micro(raw, tc.grad_accum), mesh, batch_axis=1)
    state, m = step_fn(state, batch)
    bar.update(1)
    if step % tc.log_every == 0 or step == tc.steps:
      m = jax.device_get(m)
      dt = time.perf_counter() - t_last
      tokens_acc += float(m["tokens"])
      row = {"task": task.name, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]),
             "steps_per_s": tc.log_every / max(dt, 1e-9),
             "tokens_per_s": float(m["tokens"]) * tc.log_every / max(dt, 1e-9),
             "truncated_rows": truncated}
      if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
        row["eval_accuracy"] = run_eval()["accuracy"]
      writer.write(step, row)
      bar.set_postfix(loss=f"{row['loss']:.3f}", **({"acc": f"{row['eval_accuracy']:.2f}"}
                                                     if "eval_accuracy" in row else {}))
      t_last = time.perf_counter()
    if ckpt.should_save(step) or step == tc.steps:
      ckpt.save(step, state, {"data_position": step * tc.batch_size * tc.grad_accum,
                              "task": task.name, "algorithm": "sft"})
  bar.close()
  final = run_eval()
  results = {"task": task.name, "accuracy": final["accuracy"], "steps": int(tc.steps),
             "algorithm": "sft", "model": config.model.weights or config.model.preset,
             "eval_examples": final["n"], "seed": int(config.seed), "data": data,
             "examples": [{"prompt": p, "completion": c, "gold": g, "score": s}
                          for p, c, g, s in final["samples"][:8]]}
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  writer.close()
  ckpt.close()
  return results

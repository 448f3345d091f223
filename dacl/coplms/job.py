"""The Co-PLMs job: `dacl train --config=configs/coplms_domains.py --workdir=DIR`.

One cloud LLM, K edge SLMs of different architectures (one with a different tokenizer), each
with private QA data of its own domain, and one distilled proxy model (DPM) architecture shared
by the edges. Each round, for method "coplms":
  edge k   SLM_k <-> DPM_k mutual learning on private data (token-level KL both ways when the
           vocabularies match, sequence-level KD through generated answers when they do not)
  up       DPM_k's parameters, as a ProxyMessage (the only thing that crosses)
  cloud    LLM <-> DPM_k mutual learning on the public set, for every k
  down     DPM_k back to edge k
Baselines on the same data and step budget, one code path (`coplms.methods`):
  standalone    each SLM on its private data alone; the LLM on the public set alone
  fedavg_proxy  DPMs learn only from private data (CE) and are averaged at the cloud (FedAvg);
                each SLM distils one way from the returned average; the LLM on the public set
  direct_kd     SLM <-> LLM logit distillation on the public set for SLMs sharing the LLM's
                vocabulary (the others train alone); no proxies, whole SLMs exchanged
  pooled        one model of the LLM's architecture on all private data plus the public set
                (breaks privacy: an upper reference)
Every participant's state is checkpointed after each round (rerunning resumes). Metrics: EM and
Rouge-L per domain for every SLM (its own domain) and for the LLM (every domain), bytes moved per
round against sending the SLMs whole, and wall time per phase.
Every party lives on the config's mesh (`mesh.shape`; one device: a 1-device mesh): parameters
and optimizer state by the logical-axis rules, phase batches split over ('data', 'fsdp') with
zero-weight rows padding them to the data-parallel size, sampling on the mesh too.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dacl import parallel
from dacl.build import build_task, refuse_lora
from dacl.continual.metrics import mean_std
from dacl.continual.stream import data_report, eval_data_seed
from dacl.coplms import learning as lrn
from dacl.coplms import metrics as qm
from dacl.coplms.protocol import ProxyMessage, Transport, flatten, nbytes, unflatten_into
from dacl.data.splits import derive_seed
from dacl.metrics import MetricsWriter, progress, write_json_atomic
from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.sampling import Sampler, SamplingParams
from dacl.train.checkpoint import Checkpointer
from dacl.train.sft import BatchStream, init_train_state, make_optimizer

log = logging.getLogger("dacl")
METHODS = ("coplms", "standalone", "fedavg_proxy", "direct_kd", "pooled")


# ----------------------------------------------------------------------------- participants

_TOKENIZERS: dict = {}


def tokenizer(name: str):
  """"byte" (dacl's byte tokenizer) or "smollm2" (the BPE vocabulary of the embedded
  SmolLM2 GGUF, read from its metadata; no weights)."""
  if name not in _TOKENIZERS:
    if name == "byte":
      from dacl.tokenizers import ByteTokenizer
      _TOKENIZERS[name] = ByteTokenizer()
    elif name == "smollm2":
      from dacl.models.weights import gguf_tokenizer, smollm2_gguf_path
      _TOKENIZERS[name] = gguf_tokenizer(smollm2_gguf_path())
    else:
      raise ValueError(f"unknown tokenizer {name!r}; use 'byte' or 'smollm2'")
  return _TOKENIZERS[name]


@dataclasses.dataclass
class Party:
  name: str
  tok_name: str
  tok: object
  graphdef: object
  state: object          # TrainState
  tx: object
  n_params: int

  @property
  def model(self):
    return nnx.merge(self.graphdef, self.state.params)


def build_party(name: str, pc, seed: int, steps: int, oc, mesh=None) -> Party:
  """A participant; mesh: its train state placed by the logical-axis rules."""
  tok = tokenizer(pc.tokenizer)
  cfg = get_preset(pc.preset, vocab_size=tok.vocab_size, max_seq_len=512)
  model = create_model(cfg, seed=derive_seed(seed, "init", name) % (2 ** 31))
  tx = make_optimizer(pc.lr, steps, min(20, steps // 10), oc.weight_decay, oc.b1, oc.b2,
                      oc.clip_norm, 0.1)
  graphdef, state = init_train_state(model, tx, seed)
  if mesh is not None:
    state = parallel.place(state, mesh)
  return Party(name, pc.tokenizer, tok, graphdef, state, tx, cfg.num_params())


# ----------------------------------------------------------------------------- data

def domain_data(config, tasks, seed: int) -> dict:
  """Private train data per edge, the cloud's public set (train split, its own draws), and the
  held-out test sets (eval split) per domain."""
  cc = config.coplms
  private = [t.examples("train", cc.private_size, seed=derive_seed(seed, "private", k))
             for k, t in enumerate(tasks)]
  public = [e for k, t in enumerate(tasks)
            for e in t.examples("train", cc.public_per_domain, seed=derive_seed(seed, "public", k))]
  held = [t.examples("eval", config.eval.num_examples, seed=eval_data_seed(config, seed))
          for t in tasks]
  return {"private": private, "public": public, "test": held}


def _rows(examples, w: float = 1.0):
  return [(e.prompt, e.answer, w) for e in examples]


# ----------------------------------------------------------------------------- phases

class Runner:
  """Compiled phase functions, cached by (participants' graphdefs, flags), the data streams, and
  the mesh every party lives on (None: default device placement)."""

  def __init__(self, config, data, seed, mesh=None):
    self.c, self.cc, self.data, self.seed = config, config.coplms, data, seed
    self.mesh = mesh
    self.dp = 1 if mesh is None else parallel.data_parallel_size(mesh)
    self._scans: dict = {}
    self.private_streams = [BatchStream(_rows(p), self.cc.batch_size, derive_seed(seed, "ps", k) % (2 ** 31))
                            for k, p in enumerate(data["private"])]
    self.public_stream = BatchStream(_rows(data["public"]), self.cc.batch_size,
                                     derive_seed(seed, "pub") % (2 ** 31))

  def _shardings(self, *parties):
    if self.mesh is None:
      return None
    return tuple(parallel.state_shardings(p.state, self.mesh) for p in parties)

  def place(self, tree):
    """A tree computed or received off the mesh (a proxy's parameters back from the wire, an
    average), placed by the logical-axis rules; unchanged without a mesh."""
    return tree if self.mesh is None else parallel.place(tree, self.mesh)

  def shard(self, batches: dict) -> dict:
    """Stacked [S, B, T] batches (or {"a": ..., "b": ...} of them) with B split over the mesh."""
    if self.mesh is None:
      return batches
    if "tokens" not in batches:
      return {k: self.shard(v) for k, v in batches.items()}
    return parallel.shard_batch(batches, self.mesh, batch_axis=1)

  def scan(self, a: Party, b: Party, **flags):
    key = (a.graphdef, id(a.tx), b.graphdef, id(b.tx), tuple(sorted(flags.items())))
    if key not in self._scans:
      self._scans[key] = lrn.make_pair_scan(a.graphdef, a.tx, b.graphdef, b.tx,
                                            temperature=float(self.cc.temperature),
                                            confidence=self.kd_weighting() == "confidence",
                                            shardings=self._shardings(a, b), **flags)
    return self._scans[key]

  def batches(self, rows_fn, tok, steps: int, offset: int) -> dict:
    """[steps, B, T] batches of rows_fn(offset + i), tokenised by tok, on the mesh."""
    rows = [rows_fn(offset + i) for i in range(steps)]
    T = self.seq_len(tok, rows)
    return self.shard(lrn.stack([lrn.qa_batch(r, tok, T, self.dp) for r in rows]))

  def seq_len(self, tok, rows: list) -> int:
    """The phase's padded length: its longest row (prompt + answer + EOS) rounded up to 16, at
    most coplms.seq_len (seq_len_bpe for a BPE vocabulary). Short domains cost less, and a phase
    has one shape for every step (few compiled shapes)."""
    cap = int(self.cc.seq_len_bpe if getattr(tok, "vocab_size", 0) > 1000 else self.cc.seq_len)
    longest = max(len(tok.encode(p)) + len(tok.encode(a, add_bos=False)) + 1
                  for r in rows for p, a, _ in r)
    return min(cap, -(-longest // 16) * 16)

  def answers(self, party: Party, prompts: list) -> tuple[list, list]:
    """Greedy answers and each one's confidence: the geometric-mean probability of its
    generated tokens, exp(mean log pi), in (0, 1]."""
    s = Sampler(party.model, party.tok, max_cache_len=512, min_bucket=32, mesh=self.mesh)
    out, conf = [], []
    for i in range(0, len(prompts), 128):
      o = s(prompts[i:i + 128], jax.random.key(0), SamplingParams(
          max_new_tokens=int(self.cc.answer_tokens), temperature=0.0))
      out += [qm.answer_of(t) for t in o.texts]
      m = o.mask.astype(np.float64)
      conf += list(np.exp((o.logprobs * m).sum(1) / np.maximum(m.sum(1), 1.0)))
    return out, conf

  def kd_weighting(self) -> str:
    mode = str(self.cc.get("kd_weighting", "uniform"))
    if mode not in ("uniform", "confidence"):
      raise ValueError(f"coplms.kd_weighting must be 'uniform' or 'confidence', got {mode!r}")
    return mode

  def teacher_answers(self, party: Party, prompts: list) -> dict:
    """{prompt: (answer, row weight multiplier)} for sequence-level KD. Weighting
    "confidence" scales each teacher row by the teacher's confidence in its answer, so a
    teacher that is still guessing (early rounds) adds little noise; "uniform" gives 1."""
    ans, conf = self.answers(party, prompts)
    w = conf if self.kd_weighting() == "confidence" else [1.0] * len(ans)
    return {p: (a, float(c)) for p, a, c in zip(prompts, ans, w)}

  def pair(self, a: Party, b: Party, rows_fn, steps: int, offset: int, *, alpha_a: float,
           alpha_b: float, train_a=True, train_b=True) -> dict:
    """A mutual (or one-way) phase of `steps` updates of a and b on rows_fn(step) rows."""
    alpha = float(self.cc.alpha)
    if a.tok_name == b.tok_name:
      run = self.scan(a, b, token_kd=True, train_a=train_a, train_b=train_b)
      batches = self.batches(rows_fn, a.tok, steps, offset)
      a.state, b.state, m = run(a.state, b.state, batches, alpha * alpha_a, alpha * alpha_b)
      return {k: float(np.mean(v)) for k, v in jax.device_get(m).items()}
    # sequence-level KD: each learns from the other's generated answers. Teacher rows are always
    # present (weight 0, gold text, when a direction is off) so every phase has one shape.
    rows = [rows_fn(offset + i) for i in range(steps)]
    prompts = sorted({p for r in rows for p, _, _ in r})
    ans_a = self.teacher_answers(a, prompts) if alpha_b else {}
    ans_b = self.teacher_answers(b, prompts) if alpha_a else {}

    def with_teacher(r, ans, w):
      return r + [(p, *((ans[p][0], w * ans[p][1]) if p in ans else (g, 0.0))) for p, g, _ in r]
    ra = [with_teacher(r, ans_b, alpha * alpha_a) for r in rows]
    rb = [with_teacher(r, ans_a, alpha * alpha_b) for r in rows]
    Ta, Tb = self.seq_len(a.tok, ra), self.seq_len(b.tok, rb)
    ba = [lrn.qa_batch(r, a.tok, Ta, self.dp) for r in ra]
    bb = [lrn.qa_batch(r, b.tok, Tb, self.dp) for r in rb]
    run = self.scan(a, b, token_kd=False, train_a=train_a, train_b=train_b)
    a.state, b.state, m = run(a.state, b.state, self.shard({"a": lrn.stack(ba), "b": lrn.stack(bb)}))
    return {k: float(np.mean(v)) for k, v in jax.device_get(m).items()}

  def alone(self, a: Party, rows_fn, steps: int, offset: int) -> dict:
    """CE-only updates of `a` on rows_fn(step) rows (one jitted scan)."""
    key = (a.graphdef, id(a.tx), "alone")
    if key not in self._scans:
      sh = self._shardings(a)
      self._scans[key] = lrn.make_single_scan(a.graphdef, a.tx, None if sh is None else sh[0])
    a.state, m = self._scans[key](a.state, self.batches(rows_fn, a.tok, steps, offset))
    return {k: float(np.mean(v)) for k, v in jax.device_get(m).items()}


def evaluate(runner: Runner, party: Party, examples) -> dict:
  s = Sampler(party.model, party.tok, max_cache_len=512, min_bucket=32, mesh=runner.mesh)
  r = qm.evaluate_qa(s, examples, int(runner.cc.answer_tokens))
  return {"em": r["em"], "rouge_l": r["rouge_l"], "n": r["n"], "samples": r["samples"][:2]}


# ----------------------------------------------------------------------------- one run

def warm_llm_params(config, runner: Runner, seed: int, warm_dir: str):
  """The cloud LLM's starting parameters when coplms.llm_warm_steps > 0: that many CE updates on
  the public set (the cloud's own data), computed once per seed and shared by every method (saved
  in warm_dir; a rerun restores it). None when the warm start is off."""
  cc = config.coplms
  steps = int(cc.get("llm_warm_steps", 0))
  if steps <= 0:
    return None
  party = build_party("llm", cc.llm, seed, steps, config.optim, runner.mesh)
  ck = Checkpointer(warm_dir, steps, 1)
  if ck.latest_step() == steps:
    party.state, _, _ = ck.restore(party.state)
  else:
    stream = BatchStream(_rows(runner.data["public"]), cc.batch_size,
                         derive_seed(seed, "llm-warm") % (2 ** 31))
    chunk = 200
    bar = progress(steps, desc=f"LLM warm start s{seed}")
    for off in range(0, steps, chunk):
      n = min(chunk, steps - off)
      runner.alone(party, stream.batch, n, off)
      bar.update(n)
    bar.close()
    ck.save(steps, party.state, {"llm_warm_steps": steps, "seed": seed})
  ck.close()
  return party.state.params


def run_method(config, run_dir: str, method: str, seed: int, tasks, data,
               transport: Transport = None, mesh=None) -> dict:
  """One method for one seed: R rounds, checkpointed after each; rerunning resumes. All edge <->
  cloud parameter traffic goes through `transport` (a fresh one by default). mesh: default the
  config's (`mesh.shape`)."""
  if method not in METHODS:
    raise ValueError(f"unknown co-tuning method {method!r}; known: {METHODS}")
  cc, oc = config.coplms, config.optim
  R, E, C, K = int(cc.rounds), int(cc.edge_steps), int(cc.cloud_steps), len(tasks)
  os.makedirs(run_dir, exist_ok=True)
  names = [s.name for s in cc.slms]
  if len(names) != K:
    raise ValueError(f"coplms.slms has {len(names)} SLMs for {K} domains (one SLM per domain)")
  mesh = mesh if mesh is not None else parallel.make_mesh(tuple(config.mesh.shape) or None)
  llm = build_party("llm", cc.llm, seed, R * C * K * (2 if method == "pooled" else 1), oc, mesh)
  slms = [build_party(s.name, s, seed, R * E, oc, mesh) for s in cc.slms]
  dpms = [build_party(f"dpm_{k}", cc.dpm, seed, R * (E + C), oc, mesh) for k in range(K)]
  # every DPM starts from the same initialisation (one shared architecture)
  for d in dpms[1:]:   # copies: phase functions donate their states
    d.state = d.state._replace(params=jax.tree.map(jnp.copy, dpms[0].state.params))
  runner = Runner(config, data, seed, mesh)
  warm = warm_llm_params(config, runner, seed,
                         os.path.join(os.path.dirname(os.path.abspath(run_dir)), f"llm_warm_s{seed}"))
  if warm is not None:   # every method's LLM (and the pooled model) starts from the same warm start
    llm.state = llm.state._replace(params=jax.tree.map(jnp.copy, warm))
  transport = transport if transport is not None else Transport()
  ck = Checkpointer(os.path.join(run_dir, "checkpoints"), 1, 2)
  parties = {p.name: p for p in [llm, *slms, *dpms]}
  rec = {"round": 0, "rounds": [], "method": method, "seed": seed}
  if ck.latest_step() is not None:
    states, rec, _ = ck.restore({n: p.state for n, p in parties.items()})
    for n, p in parties.items():
      p.state = states[n]
    log.info("resumed %s from round %d", run_dir, rec["round"])
  writer = MetricsWriter(run_dir)
  if rec["round"]:
    writer.truncate_after(rec["round"])
  priv = lambda k: (lambda i: runner.private_streams[k].batch(i))
  pub = lambda i: runner.public_stream.batch(i)
  pooled_rows = BatchStream(_rows([e for p in data["private"] for e in p] + data["public"]),
                            cc.batch_size, seed)
  alpha_one_way = 1.0
  bar = progress(R, initial=rec["round"], desc=f"{method} s{seed}")
  for r in range(rec["round"] + 1, R + 1):
    times = {"edge": 0.0, "cloud": 0.0, "eval": 0.0}
    bytes_before = sum(x["bytes"] for x in transport.log)
    losses = {}
    t = time.perf_counter()
    if method == "pooled":
      for _ in range(2):   # the pooled model gets the edges' and the cloud's update budget
        losses["pooled"] = runner.alone(llm, lambda i: pooled_rows.batch(i), C * K,
                                        ((r - 1) * 2 + _) * C * K)
    else:
      for k in range(K):   # edge phase
        off = (r - 1) * E
        if method == "coplms":
          losses[f"edge{k}"] = runner.pair(slms[k], dpms[k], priv(k), E, off, alpha_a=1.0, alpha_b=1.0)
        elif method == "fedavg_proxy":   # DPM: CE only; SLM: one-way KD from the (averaged) DPM
          losses[f"edge{k}"] = runner.pair(slms[k], dpms[k], priv(k), E, off,
                                           alpha_a=alpha_one_way if r > 1 else 0.0, alpha_b=0.0)
        else:   # standalone, direct_kd: the SLM trains on its private data alone
          losses[f"edge{k}"] = runner.alone(slms[k], priv(k), E, off)
      times["edge"] = time.perf_counter() - t
      t = time.perf_counter()
      if method in ("coplms", "fedavg_proxy"):   # up: only DPM parameters cross
        up = [transport.send("up", ProxyMessage(f"edge{k}", r, flatten(dpms[k].state.params)))
              for k in range(K)]
        cloud_dpms = [runner.place(unflatten_into(dpms[k].state.params, m.params))
                      for k, m in enumerate(up)]
        for k in range(K):
          dpms[k].state = dpms[k].state._replace(params=cloud_dpms[k])
      for k in range(K):   # cloud phase
        off = ((r - 1) * K + k) * C
        if method == "coplms":
          losses[f"cloud{k}"] = runner.pair(llm, dpms[k], pub, C, off, alpha_a=1.0, alpha_b=1.0)
        elif method == "direct_kd" and slms[k].tok_name == llm.tok_name:
          losses[f"cloud{k}"] = runner.pair(llm, slms[k], pub, C, off, alpha_a=1.0, alpha_b=1.0)
          transport.log.append({"direction": "slm", "edge": f"edge{k}", "round": r,
                                "bytes": 2 * nbytes(slms[k].state.params), "payload": None})
        else:   # the LLM on the public set alone
          losses[f"cloud{k}"] = runner.alone(llm, pub, C, off)
      if method == "fedavg_proxy":
        avg = jax.tree.map(lambda *xs: sum(xs) / len(xs), *[d.state.params for d in dpms])
        for d in dpms:
          d.state = d.state._replace(params=runner.place(jax.tree.map(jnp.copy, avg)))
      if method in ("coplms", "fedavg_proxy"):   # down
        for k in range(K):
          back = transport.send("down", ProxyMessage(f"edge{k}", r, flatten(dpms[k].state.params)))
          dpms[k].state = dpms[k].state._replace(
              params=runner.place(unflatten_into(dpms[k].state.params, back.params)))
      times["cloud"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = None
    if method == "coplms" or r == R:
      metrics = {"slms": {}, "llm": {}}
      for k, s in enumerate(slms):
        who = llm if method == "pooled" else s
        metrics["slms"][s.name] = {"domain": tasks[k].name, **evaluate(runner, who, data["test"][k])}
      for k, t_ in enumerate(tasks):
        metrics["llm"][t_.name] = evaluate(runner, llm, data["test"][k])
    times["eval"] = time.perf_counter() - t
    entry = {"round": r, "metrics": metrics, "bytes": sum(x["bytes"] for x in transport.log) - bytes_before,
             "wall_s": {k: round(v, 2) for k, v in times.items()}, "losses": losses}
    rec["rounds"].append(entry)
    rec["round"] = r
    writer.write(r, {"method": method, **{f"loss_{k}_{m}": v for k, d in losses.items() for m, v in d.items()},
                     "bytes": entry["bytes"], **{f"wall_{k}": v for k, v in times.items()},
                     **({f"em_{n}": v["em"] for n, v in metrics["slms"].items()} if metrics else {})})
    ck.save(r, {n: p.state for n, p in parties.items()}, rec)
    bar.update(1)
  bar.close()
  ck.close()
  writer.close()
  last = rec["rounds"][-1]
  result = {"method": method, "seed": seed, "rounds": rec["rounds"],
            "final": {"slms": {n: {k: v for k, v in m.items() if k != "samples"}
                               for n, m in last["metrics"]["slms"].items()},
                      "llm": {d: {k: v for k, v in m.items() if k != "samples"}
                              for d, m in last["metrics"]["llm"].items()}},
            "bytes_per_round": int(np.mean([x["bytes"] for x in rec["rounds"]])),
            "bytes_full_models": int(2 * sum(nbytes(s.state.params) for s in slms)),
            "params": {p.name: p.n_params for p in parties.values()}}
  write_json_atomic(os.path.join(run_dir, "run_results.json"), result)
  return result


# ----------------------------------------------------------------------------- all runs

def _mean_final(per_seed: list) -> dict:
  f0 = per_seed[0]["final"]
  out = {"slms": {}, "llm": {}}
  for n, m in f0["slms"].items():
    out["slms"][n] = {"domain": m["domain"]}
    for k in ("em", "rouge_l"):
      out["slms"][n][k], out["slms"][n][k + "_std"] = mean_std([r["final"]["slms"][n][k] for r in per_seed])
  for d in f0["llm"]:
    out["llm"][d] = {}
    for k in ("em", "rouge_l"):
      out["llm"][d][k], out["llm"][d][k + "_std"] = mean_std([r["final"]["llm"][d][k] for r in per_seed])
  for k in ("em", "rouge_l"):   # the goal: the mean over the SLMs, per seed, then over seeds
    vals = [np.mean([m[k] for m in r["final"]["slms"].values()]) for r in per_seed]
    out[f"slm_mean_{k}"], out[f"slm_mean_{k}_std"] = mean_std(vals)
    vals = [np.mean([m[k] for m in r["final"]["llm"].values()]) for r in per_seed]
    out[f"llm_mean_{k}"], out[f"llm_mean_{k}_std"] = mean_std(vals)
  return out


def run_coplms(config, workdir: str) -> dict:
  refuse_lora(config, "Co-PLMs")
  os.makedirs(workdir, exist_ok=True)
  cc = config.coplms
  tasks = [build_task(t) for t in cc.domains]
  methods = list(cc.methods)
  if "coplms" not in methods:
    raise ValueError("coplms.methods must include 'coplms'")
  results = {"algorithm": "coplms", "domains": [t.name for t in tasks],
             "participants": {"llm": dict(cc.llm), "slms": [dict(s) for s in cc.slms],
                              "dpm": dict(cc.dpm)},
             "seeds": [int(s) for s in config.seeds],
             "seed_varies": ["model initialisation", "private/public data"] + (
                 ["evaluation data"] if int(config.eval.get("data_seed", -1)) < 0 else []),
             "eval_split": "eval (disjoint from private and public data; dacl.data.splits)",
             "data": {}, "per_seed": {}}
  per = {m: [] for m in methods}
  for seed in config.seeds:
    seed = int(seed)
    data = domain_data(config, tasks, seed)
    results["data"][f"s{seed}"] = {
        t.name: data_report(t, {"private": data["private"][k],
                                "public": [e for e in data["public"] if e.task == t.name]},
                            data["test"][k], space_draws=int(cc.space_draws))
        for k, t in enumerate(tasks)}
    for m in methods:
      per[m].append(run_method(config, os.path.join(workdir, "runs", f"{m}_s{seed}"), m, seed,
                               tasks, data))
  co = per["coplms"]
  results["rounds"] = [{"round": i + 1,
                        "slm_mean_em": float(np.mean([np.mean([v["em"] for v in r["rounds"][i]["metrics"]["slms"].values()]) for r in co])),
                        "slm_mean_rouge_l": float(np.mean([np.mean([v["rouge_l"] for v in r["rounds"][i]["metrics"]["slms"].values()]) for r in co])),
                        "llm_mean_em": float(np.mean([np.mean([v["em"] for v in r["rounds"][i]["metrics"]["llm"].values()]) for r in co])),
                        "bytes": int(np.mean([r["rounds"][i]["bytes"] for r in co])),
                        "wall_s": {k: float(np.mean([r["rounds"][i]["wall_s"][k] for r in co]))
                                   for k in ("edge", "cloud", "eval")},
                        "per_seed": [r["rounds"][i]["metrics"] for r in co]}
                       for i in range(len(co[0]["rounds"]))]
  results["final"] = _mean_final(co)
  results["baselines"] = {m: _mean_final(per[m]) for m in methods if m != "coplms"}
  results["bytes_per_round"] = int(np.mean([r["bytes_per_round"] for r in co]))
  results["bytes_full_models"] = int(co[0]["bytes_full_models"])
  results["bytes_per_round_by_method"] = {m: int(np.mean([r["bytes_per_round"] for r in per[m]]))
                                          for m in methods}
  results["params"] = co[0]["params"]
  results["n_seeds"] = len(co)
  results["per_seed"] = {m: [{k: v for k, v in r.items() if k != "rounds"} for r in per[m]]
                         for m in methods}
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results

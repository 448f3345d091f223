"""Run by tests/test_sharding.py in a fresh process with 8 emulated CPU devices (the device count
is fixed when JAX starts, so it cannot run inside the pytest worker). Prints one JSON object.

For each mesh shape: two SFT steps and two GRPO steps with the state placed by the logical-axis
rules and the batch over ('data', 'fsdp'), and a greedy sample from the sharded parameters,
against the same computations on one device; the per-device shard shapes of a few parameters;
the jit cache sizes after the steps (one compile per step function); and an Orbax checkpoint
saved on the first mesh and restored onto (2, 2, 2); AdaSwitch's SFT stage (`fit` over trajectory
batches whose rows are padded to the data-parallel size) on (2, 2, 2) against one device;
the router baseline's prompt features from a sampler on (2, 2, 2); Co-PLMs' phases (an SLM <-> proxy token-KD pair scan, the LLM's CE scan, a proxy's parameters
through the wire and back) on (2, 2, 2) against one device.
"""
import json
import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from dacl import parallel  # noqa: E402
from dacl.models.config import get_preset  # noqa: E402
from dacl.models.decoder import create_model  # noqa: E402
from dacl.rl.step import make_rl_step  # noqa: E402
from dacl.sampling import Sampler, SamplingParams, decode, prefill  # noqa: E402
from dacl.tokenizers import ByteTokenizer  # noqa: E402
from dacl.train.checkpoint import Checkpointer  # noqa: E402
from dacl.train.sft import init_train_state, make_optimizer, make_train_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]
SHOWN = {"embed": ("embed",), "wq": ("layers", 0, "wq"), "wk": ("layers", 0, "wk"),
         "w_down": ("layers", 0, "w_down")}


def batches(rows=8, T=16, seed=0):
  r = np.random.default_rng(seed)
  tokens = r.integers(3, 200, (1, rows, T)).astype(np.int32)
  mask = np.ones((1, rows, T), bool)
  mask[:, ::3, -4:] = False
  sft = {"tokens": tokens, "targets": np.roll(tokens, -1, -1), "mask": mask,
         "loss_mask": mask & (np.arange(T) >= 4)}
  rl = dict(sft, positions=np.broadcast_to(np.arange(T, dtype=np.int32), tokens.shape).copy(),
            old_logp=-r.random((1, rows, T)).astype(np.float32) * 3,
            adv=r.normal(size=(1, rows)).astype(np.float32))
  return sft, rl


def leaf(params, path):
  x = params
  for p in path:
    x = x[p]
  return x[...] if isinstance(x, nnx.Variable) else x


def flat(params):
  return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)])


def run(mesh_shape):
  """(losses, params, tokens, shard shapes, cache sizes) on a mesh, or one device for None."""
  model = create_model(get_preset("tiny"), seed=0)
  tok = ByteTokenizer()
  tx = make_optimizer(1e-2, 10)
  graphdef, state = init_train_state(model, tx, 0)
  sft_b, rl_b = batches()
  if mesh_shape is None:
    mesh, sh = None, None
    put = lambda b: b
  else:
    mesh = parallel.make_mesh(mesh_shape)
    sh = parallel.state_shardings(state, mesh)
    state = jax.device_put(state, sh)
    put = lambda b: parallel.shard_batch(b, mesh, batch_axis=1)
  out = {"sft_loss": [], "rl_loss": []}
  sft_step = make_train_step(graphdef, tx, state_shardings=sh)
  for _ in range(2):
    state, m = sft_step(state, put(sft_b))
    out["sft_loss"].append(float(m["loss"]))
  rl_step = make_rl_step(graphdef, tx, state_shardings=sh)
  for _ in range(2):
    state, m = rl_step(state, put(rl_b), None)
    out["rl_loss"].append(float(m["loss"]))
  out["jit_cache"] = [sft_step._cache_size(), rl_step._cache_size()]
  # activation constraints (parallel.constrain / gather_fsdp) in the step's program
  text = sft_step.lower(state, put(sft_b)).as_text()
  out["constraints"] = text.count("sharding_constraint") + text.count("@Sharding")
  out["params"] = flat(state.params)
  out["shards"] = {k: [list(s.data.shape) for s in leaf(state.params, p).addressable_shards][:1]
                   + [str(getattr(leaf(state.params, p).sharding, "spec", None))]
                   for k, p in SHOWN.items()}
  sampler = Sampler(nnx.merge(graphdef, state.params), tok, max_cache_len=64, mesh=mesh)
  prompts = [f"{a}+{b}=" for a, b in zip(range(10, 18), range(40, 48))]
  res = sampler(prompts, jax.random.key(0), SamplingParams(max_new_tokens=8, temperature=0.0))
  out["tokens"] = np.asarray(res.tokens).tolist()
  # sampled, 2 per prompt: rows split over (data, fsdp) draw the one-device tokens
  res = sampler(prompts, jax.random.key(1), SamplingParams(max_new_tokens=8, temperature=1.0,
                                                           num_samples=2))
  out["sampled"] = np.asarray(res.tokens).tolist()
  jits = lambda: [prefill._cache_size(), decode._cache_size()]
  before = jits()
  sampler([f"{a}*{b}=" for a, b in zip(range(20, 28), range(50, 58))], jax.random.key(2),
          SamplingParams(max_new_tokens=8, temperature=1.0, num_samples=2))
  out["sampler_recompiled"] = jits() != before   # new prompts of the same buckets
  if mesh is not None:   # the KV cache's layout: rows over (data, fsdp), KV heads over tensor
    tokens, mask = sampler._pad(sampler.encode_prompts(prompts), 16)
    _, cache, _ = prefill(sampler.graphdef, sampler.state, sampler._put(tokens),
                          sampler._put(mask), cache_size=32, num_samples=2,
                          cache_shardings=sampler.cache_shardings)
    out["cache_shard"] = [list(cache.k[0].addressable_shards[0].data.shape),
                          str(cache.k[0].sharding.spec)]
  return out, (graphdef, state, mesh)


def adaswitch_stage(mesh_shape):
  """Parameters after 2 AdaSwitch stage steps (dacl.adaswitch.job's `fit` call) on 3 trajectories
  of different lengths: one device, or a mesh whose 4 data-parallel rows need a padding row."""
  from dacl.adaswitch.training import make_trajectory_batch
  from dacl.train.sft import fit
  model = create_model(get_preset("tiny"), seed=2)
  tok = ByteTokenizer()
  tx = make_optimizer(1e-2, 10)
  graphdef, state = init_train_state(model, tx, 0)
  r = np.random.default_rng(5)
  items = [(list(r.integers(3, 200, n)), list((r.random(n) > 0.3).astype(float))) for n in (20, 33, 12)]
  mesh = None if mesh_shape is None else parallel.make_mesh(mesh_shape)
  dp = 1 if mesh is None else parallel.data_parallel_size(mesh)
  rows = []
  state = fit(graphdef, state, tx, lambda i: rows.append(make_trajectory_batch(
      items, tok, 64, bucket=16, row_multiple=dp)) or rows[-1], 2, tempfile.mkdtemp(),
      desc="adaswitch stage", mesh=mesh)
  return flat(state.params), rows[0]["tokens"].shape[0]


def coplms_phases(mesh_shape):
  """Parameters of three Co-PLMs parties after dacl.coplms.job.Runner's phases: a mutual
  token-KD pair (slm_llama <-> proxy, 2 steps), the LLM alone (2 steps), and the proxy's
  parameters sent as a ProxyMessage and placed back. Batches of 6 rows: on (2, 2, 2) (4
  data-parallel rows) each is padded with 2 zero-weight rows. Also the proxy's wq shard shape."""
  from dacl.cli import parse_config
  from dacl.coplms import job
  from dacl.coplms.protocol import ProxyMessage, Transport, flatten, unflatten_into
  cfg, _ = parse_config([f"--config={os.path.join(ROOT, 'configs', 'coplms_domains.py')}",
                         "--workdir=/nonexistent", "--config.coplms.batch_size=6",
                         "--config.coplms.private_size=12", "--config.coplms.public_per_domain=6"])
  from dacl.build import build_task
  tasks = [build_task(t) for t in cfg.coplms.domains]
  data = job.domain_data(cfg, tasks, 0)
  mesh = None if mesh_shape is None else parallel.make_mesh(mesh_shape)
  runner = job.Runner(cfg, data, 0, mesh)
  cc = cfg.coplms
  slm = job.build_party("slm_llama", cc.slms[0], 0, 4, cfg.optim, mesh)
  dpm = job.build_party("dpm_0", cc.dpm, 0, 4, cfg.optim, mesh)
  llm = job.build_party("llm", cc.llm, 0, 4, cfg.optim, mesh)
  pair = runner.pair(slm, dpm, lambda i: runner.private_streams[0].batch(i), 2, 0,
                     alpha_a=1.0, alpha_b=1.0)
  alone = runner.alone(llm, lambda i: runner.public_stream.batch(i), 2, 0)
  back = Transport().send("up", ProxyMessage("edge0", 1, flatten(dpm.state.params)))
  dpm.state = dpm.state._replace(params=runner.place(unflatten_into(dpm.state.params, back.params)))
  pair2 = runner.pair(slm, dpm, lambda i: runner.private_streams[0].batch(i), 2, 2,
                      alpha_a=1.0, alpha_b=1.0)   # the placed proxy goes back into a phase
  wq = leaf(dpm.state.params, SHOWN["wq"])
  return ({n: flat(p.state.params) for n, p in (("slm", slm), ("dpm", dpm), ("llm", llm))},
          {"losses": [pair, alone, pair2], "wq_shard": list(wq.addressable_shards[0].data.shape),
           "rows": int(runner.batches(lambda i: runner.private_streams[0].batch(i), slm.tok, 1,
                                      0)["tokens"].shape[1]), "dp": runner.dp})


def router_features(mesh_shape):
  """The router baseline's prompt features (5 prompts: 3 padding rows on (2, 2, 2)) from a
  sampler on the mesh."""
  from dacl.rl.router import prompt_features
  model = create_model(get_preset("tiny"), seed=4)
  mesh = None if mesh_shape is None else parallel.make_mesh(mesh_shape)
  if mesh is not None:
    nnx.update(model, parallel.place(nnx.state(model), mesh))
  s = Sampler(model, ByteTokenizer(), max_cache_len=64, mesh=mesh)
  return prompt_features(s, ["1+2=", "34*5=", "7-80=", "x", "12+345*6="], lambda p: p)


def main():
  ref, _ = run(None)
  feats_ref, feats = router_features(None), router_features((2, 2, 2))
  co_ref, co_ref_info = coplms_phases(None)
  co, co_info = coplms_phases((2, 2, 2))
  ada_ref, _ = adaswitch_stage(None)
  ada, ada_rows = adaswitch_stage((2, 2, 2))
  report = {"devices": jax.device_count(), "meshes": {}}
  saved = None
  for shape in MESHES:
    got, (graphdef, state, mesh) = run(shape)
    report["meshes"][str(shape)] = {
        "sft_loss_diff": max(abs(a - b) for a, b in zip(got["sft_loss"], ref["sft_loss"])),
        "rl_loss_diff": max(abs(a - b) for a, b in zip(got["rl_loss"], ref["rl_loss"])),
        "param_diff": float(np.max(np.abs(got["params"] - ref["params"]))),
        "tokens_equal": got["tokens"] == ref["tokens"],
        "sampled_equal": got["sampled"] == ref["sampled"],
        "sampler_recompiled": got["sampler_recompiled"], "cache_shard": got["cache_shard"],
        "shards": got["shards"], "jit_cache": got["jit_cache"],
        "constraints": got["constraints"]}
    if saved is None:   # save on the first mesh, restore onto (2, 2, 2) below
      saved = tempfile.mkdtemp()
      ck = Checkpointer(saved, 1, 1)
      ck.save(2, state, {"mesh": list(shape)})
      ck.close()
      saved_params = got["params"]
  # restore onto another mesh shape: the abstract target carries the new shardings
  model = create_model(get_preset("tiny"), seed=1)
  tx = make_optimizer(1e-2, 10)
  graphdef, target = init_train_state(model, tx, 1)
  mesh = parallel.make_mesh((2, 2, 2))
  target = jax.device_put(target, parallel.state_shardings(target, mesh))
  ck = Checkpointer(saved, 1, 1)
  restored, record, step = ck.restore(target)
  ck.close()
  wq = leaf(restored.params, SHOWN["wq"])
  report["restore"] = {
      "from": record["mesh"], "step": step,
      "param_diff": float(np.max(np.abs(flat(restored.params) - saved_params))),
      "wq_spec": str(wq.sharding.spec), "wq_shard": list(wq.addressable_shards[0].data.shape),
      "mesh": dict(wq.sharding.mesh.shape)}
  # weights loaded straight onto their shards: an HF directory written from the tiny model
  from dacl.models.weights import load_hf_dir, save_hf_dir
  src = create_model(get_preset("tiny"), seed=3)
  hf_dir = tempfile.mkdtemp()
  save_hf_dir(src, hf_dir)
  loaded, _ = load_hf_dir(hf_dir, mesh=mesh)
  lw = leaf(nnx.state(loaded), SHOWN["w_down"])
  report["load"] = {
      "param_diff": float(np.max(np.abs(flat(nnx.state(loaded, nnx.Param)) -
                                        flat(nnx.state(src, nnx.Param))))),
      "w_down_spec": str(lw.sharding.spec), "w_down_shard": list(lw.addressable_shards[0].data.shape)}
  report["adaswitch"] = {"rows": ada_rows, "param_diff": float(np.max(np.abs(ada - ada_ref)))}
  report["router"] = {"shape": list(feats.shape),
                      "feat_diff": float(np.max(np.abs(feats - feats_ref)))}
  report["coplms"] = {
      "param_diff": {n: float(np.max(np.abs(co[n] - co_ref[n]))) for n in co},
      "loss_diff": max(abs(x[k] - y[k]) for x, y in zip(co_info["losses"], co_ref_info["losses"])
                       for k in x),
      "wq_shard": co_info["wq_shard"], "rows": co_info["rows"], "dp": co_info["dp"]}
  json.dump(report, sys.stdout)


if __name__ == "__main__":
  main()

"""Sharded SFT, GRPO and sampling on 8 emulated CPU devices equal one device (F4).

The check runs in a fresh process (tests/helpers/mesh_check.py): XLA's host device count is
fixed when JAX starts."""
import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# per-device shard shapes of the tiny preset's parameters (vocab 272, d_model 128, 4 heads x 32,
# 2 kv heads x 32, ffn 384) under the rules vocab/heads/mlp -> 'tensor', embed -> 'fsdp'
SHARDS = {
    "(8, 1, 1)": {"embed": [272, 128], "wq": [128, 128], "wk": [128, 64], "w_down": [384, 128]},
    "(2, 4, 1)": {"embed": [272, 32], "wq": [32, 128], "wk": [32, 64], "w_down": [384, 32]},
    "(2, 2, 2)": {"embed": [136, 64], "wq": [64, 64], "wk": [64, 32], "w_down": [192, 64]},
    "(1, 1, 8)": {"embed": [34, 128], "wq": [128, 16], "wk": [128, 8], "w_down": [48, 128]},
}


def _report():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "mesh_check.py")],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.loads(r.stdout)
  # XLA's SPMD partitioner warns when it can only reshard an array by replicating it whole
  report["involuntary_remat"] = r.stderr.count("Involuntary full rematerialization")
  return report


def _meshes_match_one_device(report):
  assert report["devices"] == 8
  assert set(report["meshes"]) == set(SHARDS)
  for shape, m in report["meshes"].items():
    # the same two SFT and two GRPO updates: losses to float summation order; parameters after
    # four AdamW steps at lr 1e-2, where g/√v amplifies the reordering of near-zero gradients
    assert m["sft_loss_diff"] < 1e-5 and m["rl_loss_diff"] < 1e-5, (shape, m)
    assert m["param_diff"] < 1e-3, (shape, m["param_diff"])
    assert m["tokens_equal"], shape      # greedy tokens from the sharded parameters
    assert m["sampled_equal"], shape     # sampled rows, split over (data, fsdp)
    assert not m["sampler_recompiled"], shape
    assert m["jit_cache"] == [1, 1], shape   # steps 2 reuse step 1's program


def _parameters_are_sharded(report):
  for shape, want in SHARDS.items():
    got = {k: v[0] for k, v in report["meshes"][shape]["shards"].items()}
    assert got == want, shape


# the key cache of 8 prompts x 2 samples, 32 slots: [rows, kv heads, head_dim, slots] per device
# (JAX prints the specs without size-1 mesh axes and trailing Nones)
CACHE = {"(8, 1, 1)": [[2, 2, 32, 32], "P('data',)"],
         "(2, 4, 1)": [[2, 2, 32, 32], "P(('data', 'fsdp'),)"],
         "(2, 2, 2)": [[4, 1, 32, 32], "P(('data', 'fsdp'), 'tensor')"],
         "(1, 1, 8)": [[16, 2, 32, 32], "P()"]}


def _kv_cache_is_split_by_rows_and_kv_heads(report):
  for shape, want in CACHE.items():   # (1, 1, 8): 8 does not divide the 2 KV heads
    assert report["meshes"][shape]["cache_shard"] == want, shape


def _checkpoint_restores_onto_another_mesh(report):
  r = report["restore"]
  assert r["from"] == [8, 1, 1] and r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert r["param_diff"] == 0.0
  assert r["wq_spec"] == "P('fsdp', 'tensor')" and r["wq_shard"] == [64, 64]


def _weights_load_onto_their_shards(report):
  r = report["load"]   # an HF safetensors directory, loaded with mesh (2, 2, 2)
  assert r["param_diff"] == 0.0
  assert r["w_down_spec"] == "P('tensor', 'fsdp')" and r["w_down_shard"] == [192, 64]


def _activations_keep_their_layout(report):
  """The decoder's activation constraints are in the sharded step's program (none on one
  device's mesh-free path), and no array is resharded by full replication: without
  `parallel.gather_fsdp` on the embedding, the lookup's gradient was on the (2,4,1) and (2,2,2)
  meshes (8 warnings)."""
  for shape, m in report["meshes"].items():
    assert m["constraints"] > 0, shape
  assert report["involuntary_remat"] == 0


def _adaswitch_stage_on_a_mesh(report):
  """AdaSwitch's SFT stages run on the config's mesh: 3 trajectories padded to 4 rows (the
  data-parallel size of (2, 2, 2)) give the one-device parameters (tolerance as above)."""
  r = report["adaswitch"]
  assert r["rows"] == 4 and r["param_diff"] < 1e-3, r


def _coplms_phases_on_a_mesh(report):
  """Co-PLMs' phases run on the config's mesh: a token-KD pair, a CE scan and a proxy placed back
  after the wire give the one-device parameters (tolerance as above) with 6-row batches padded
  to 8 zero-weight-filled rows; the proxy is really sharded (nano: d_model 32, 2 heads x 16)."""
  r = report["coplms"]
  assert r["dp"] == 4 and r["rows"] == 8, r
  assert max(r["param_diff"].values()) < 1e-3 and r["loss_diff"] < 1e-5, r
  assert r["wq_shard"] == [16, 16], r


def _router_features_on_a_mesh(report):
  """The router baseline's features from a sampler on (2, 2, 2): 5 prompts (padded to 8 rows on
  the mesh, sliced back) give one device's features."""
  r = report["router"]
  assert r["shape"] == [5, 128] and r["feat_diff"] < 1e-5, r


def test_sharding_on_8_emulated_devices():
  """One test, so the 8-device process runs once (a module fixture ran once per xdist worker)."""
  report = _report()
  _meshes_match_one_device(report)
  _parameters_are_sharded(report)
  _kv_cache_is_split_by_rows_and_kv_heads(report)
  _checkpoint_restores_onto_another_mesh(report)
  _weights_load_onto_their_shards(report)
  _activations_keep_their_layout(report)
  _adaswitch_stage_on_a_mesh(report)
  _coplms_phases_on_a_mesh(report)
  _router_features_on_a_mesh(report)

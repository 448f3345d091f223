"""Held-out means held out: train / eval / test partition every task's problems, for every
registered task and for the configs that ship, at their real sizes; run seeds vary the data."""
import glob
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from dacl.continual import stream as sd
from dacl.rl.warmstart import uses_self_knowledge
from dacl.data import splits, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TASK_KW = {
    "chain_sum": dict(prompt_format="expression", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
    "products": dict(prompt_format="expression", min_terms=2, max_terms=2, min_digits=1, max_digits=2),
    "basic_arithmetic": dict(prompt_format="expression", min_terms=3, max_terms=3, min_digits=1,
                             max_digits=1, operators=("+", "-", "*"), allow_parentheses=False),
    "gsm_symbolic": {}, "leg_counting": {}, "gsm8k_jsonl": {}, "family_relationships": {},
    "spell_backward": dict(prompt_format="compact"), "letter_counting": dict(prompt_format="compact"),
    "word_sorting": dict(prompt_format="compact", min_words=3, max_words=4),
    "fit_formula": {},
}


def _hf_file(tmp_path):
  p = tmp_path / "rows.jsonl"
  p.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i * 7 % 13}?",
                                     "answer": f"#### {i + i * 7 % 13}"}) for i in range(200)))
  return str(p)


def _sets(t, seed, n_train, n_eval, n_test):
  tr = t.examples("train", n_train, seed=seed)
  ev = t.examples("eval", n_eval, seed=seed)
  te = t.examples("test", n_test, seed=seed)
  return tr, ev, te


def _assert_disjoint(tr, ev, te, where):
  for key in ("canonical", "prompt"):
    f = lambda xs: {getattr(e, key) for e in xs}
    assert not f(ev) & f(tr), (where, key, sorted(f(ev) & f(tr))[:3])
    assert not f(te) & (f(tr) | f(ev)), (where, key)
  assert len({e.canonical for e in ev}) == len(ev), "eval problems are distinct"
  assert all(e.meta["split"] == "eval" for e in ev)


@pytest.mark.parametrize("name", [n for n in tasks.task_names() if n != "tfds"])
def test_every_registered_task_partitions_its_problems(name, tmp_path):
  if name == "hf_dataset":
    pytest.importorskip("datasets")
    t = tasks.make_task(name, path=_hf_file(tmp_path))
  else:
    t = tasks.make_task(name, **TASK_KW[name])
  small = name in ("gsm8k_jsonl", "hf_dataset")
  for seed in (0, 1, 7):
    tr, ev, te = _sets(t, seed, 300, 5 if small else 40, 5 if small else 40)
    _assert_disjoint(tr, ev, te, (name, seed))
  # and across seeds: no seed's eval set meets any seed's training draws
  trains = set().union(*({e.canonical for e in t.examples("train", 300, seed=s)} for s in (0, 1, 7)))
  evals = set().union(*({e.canonical for e in t.examples("eval", 5 if small else 40, seed=s)}
                        for s in (0, 1, 7)))
  assert not trains & evals


def _load_config(path):
  sys.path.insert(0, ROOT)
  spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _stream_data_key(path):
  """What decides a stream config's pools and held-out sets (two configs with one key, e.g.
  compare_stream.py and the main job it extends, need one check)."""
  c = _load_config(path)
  if "stream" not in c:
    return path
  return (str([t.to_dict() for t in c.stream.tasks]), c.warmstart.examples_per_task,
          str(c.warmstart.get("coverage", "all")), str(c.warmstart.get("marker_on", "random")),
          c.warmstart.get("calib_examples", 0), c.stream.train_size, c.eval.num_examples,
          c.eval.data_seed, tuple(sorted({int(s) for s in c.seeds} | {0, 1, 2})))


def _shipped_configs():
  out, seen = [], set()
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    if os.path.basename(path) in ("__init__.py", "base.py", "rl_base.py", "serve_base.py"):
      continue
    key = _stream_data_key(path)
    if key not in seen:
      seen.add(key)
      out.append(path)
  return out


@pytest.mark.parametrize("path", _shipped_configs(), ids=os.path.basename)
def test_shipped_configs_evaluate_on_problems_they_never_train_on(path):
  """Every pool a run of this config trains on vs every set it evaluates on, at the config's own
  sizes and seeds (plus 0..2)."""
  from dacl.build import build_task
  c = _load_config(path)
  if "stream" in c:
    ts = [build_task(tc) for tc in c.stream.tasks]
    seeds = sorted({int(s) for s in c.seeds} | {0, 1, 2})
    for seed in seeds:
      held = sd.eval_sets(c, ts, seed)
      for k, t in enumerate(ts):
        rl = sd.rl_pool(c, t, k, seed)
        trained = {e.canonical for e in sd.warmstart_pool(c, t, seed)}
        trained |= {e.canonical for e in rl}
        trained |= {e.canonical for e in sd.router_calibration(c, t, k, seed)}
        if uses_self_knowledge(c):   # self-knowledge SFT's labelled draw
          trained |= {e.canonical for e in sd.self_knowledge_pool(c, t, k, seed)}
        ev = {e.canonical for e in held[k]}
        assert ev and not ev & trained, (path, seed, t.name)
        assert not {e.prompt for e in held[k]} & {e.prompt for e in rl}
  elif c.algorithm == "adaswitch":
    from dacl.adaswitch import job
    ts = [build_task(tc) for tc in c.tasks]
    for seed in sorted({int(s) for s in c.seeds} | {1}):
      p1, p2, _ = job.training_pools(c, ts, seed)
      trained = {e.canonical for e, _ in p1 + p2}
      held = job.eval_sets(c, seed)
      assert trained and all(pairs for _, pairs in held), path
      for t, pairs in held:
        assert not {e.canonical for e, _ in pairs} & trained, (path, seed, t.name)
  elif c.algorithm == "coplms":
    from dacl.coplms import job
    ts = [build_task(tc) for tc in c.coplms.domains]
    for seed in sorted({int(s) for s in c.seeds} | {1}):
      d = job.domain_data(c, ts, seed)
      trained = {e.canonical for p in d["private"] for e in p} | {e.canonical for e in d["public"]}
      for k, held in enumerate(d["test"]):
        assert held and not {e.canonical for e in held} & trained, (path, seed, ts[k].name)
  elif "task" in c and c.algorithm == "sft":
    t = build_task(c.task)
    for seed in (int(c.seed), 1, 2):
      tr = {e.canonical for e in t.examples("train", c.task.train_size, seed=seed)}
      ev = {e.canonical for e in t.examples("eval", c.eval.num_examples,
                                            seed=sd.eval_data_seed(c, seed))}
      assert ev and not ev & tr, (path, seed)
  else:
    pytest.skip("no task data in this config (serving)")


def test_sft_arith_held_out_set_is_disjoint_at_full_size():
  """The issue's case: configs/sft_arith.py's 'held-out' set shared 154/223 prompts with its pool."""
  c = _load_config(os.path.join(ROOT, "configs", "sft_arith.py"))
  from dacl.build import build_task
  t = build_task(c.task)
  pool = t.examples("train", c.task.train_size, seed=c.seed)
  ev = t.examples("eval", c.eval.num_examples, seed=c.seed)
  assert len(ev) == c.eval.num_examples == len({e.prompt for e in ev})
  assert not {e.prompt for e in ev} & {e.prompt for e in pool}


def test_run_seeds_draw_different_data():
  # Huge spaces: overlap between seeds beyond a chance collision would be the old `seed + i`
  # shift (47 of 48 shared). Some gsm_symbolic templates have tiny parameter spaces, so a
  # collision there is chance, not a shift.
  for name, most in (("leg_counting", 0), ("gsm_symbolic", 2)):
    t = tasks.make_task(name)
    sets = [{e.canonical for e in t.examples("eval", 48, seed=s)} for s in range(3)]
    assert all(len(sets[i] & sets[j]) <= most for i in range(3) for j in range(i + 1, 3)), name
  # Generator seeds of consecutive run seeds are far apart (reasoning-gym uses seed + item index).
  gs = [splits.generator_seed("rg|chain_sum|{}", s) for s in range(50)]
  assert min(abs(a - b) for i, a in enumerate(gs) for b in gs[i + 1:]) > 10 ** 7


def test_small_space_seed_overlap_is_chance_level():
  """add2 (16,400 problems, half the draws from the 200 one-digit ones): the eval sets of seeds
  0 and 1 share no more problems than independent draws do. Chance is estimated from 40 other
  seeds' inclusion frequencies: E[overlap] = sum_c p_c^2."""
  t = tasks.make_task("chain_sum", **TASK_KW["chain_sum"])
  n = 128
  counts = {}
  for s in range(100, 140):
    for e in t.examples("eval", n, seed=s):
      counts[e.canonical] = counts.get(e.canonical, 0) + 1
  p = np.array(list(counts.values())) / 40.0
  expected, sd_ = float((p * p).sum()), float(np.sqrt((p * p * (1 - p * p)).sum()))
  a = {e.canonical for e in t.examples("eval", n, seed=0)}
  b = {e.canonical for e in t.examples("eval", n, seed=1)}
  assert len(a & b) <= expected + 4 * sd_ + 2, (len(a & b), expected, sd_)
  assert len(a & b) < 0.6 * n   # the old scheme shared ~99 %


def test_eval_data_seed_fixes_the_held_out_set():
  import ml_collections
  c = ml_collections.ConfigDict({"eval": {"num_examples": 16, "data_seed": 5},
                                 "stream": {"tasks": [ml_collections.ConfigDict({"eval_size": 0})]}})
  t = tasks.make_task("chain_sum", **TASK_KW["chain_sum"])
  a, b = (sd.eval_sets(c, [t], s)[0] for s in (0, 1))
  assert [e.prompt for e in a] == [e.prompt for e in b]
  c.eval.data_seed = -1
  a, b = (sd.eval_sets(c, [t], s)[0] for s in (0, 1))
  assert [e.prompt for e in a] != [e.prompt for e in b]
  assert "evaluation data" in sd.seed_varies(c)


def test_split_hash_is_stable_and_proportional():
  # Golden values: changing the hash would silently reshuffle every published split.
  assert [splits.split_of(c) for c in ("3+4=", "12*7", "whatis2+2?")] == \
      [splits.split_of(splits.canonical_form(c)) for c in ("3 + 4 =", "12 * 7", "What is 2 + 2?")]
  got = [splits.split_of(f"{a}+{b}") for a in range(100) for b in range(100)]
  for s, f in splits.SPLIT_FRACTIONS.items():
    assert abs(got.count(s) / len(got) - f) < 0.02, s
  assert [splits.split_of(c) for c in ("3+4", "1+1", "3*2", "2*3")] == ["train", "eval", "test", "eval"]


def test_expression_and_question_formats_are_one_problem():
  a = tasks.make_task("chain_sum", **TASK_KW["chain_sum"])
  b = tasks.make_task("chain_sum", **{**TASK_KW["chain_sum"], "prompt_format": "question"})
  ea, eb = a.examples("eval", 20, seed=3), b.examples("eval", 20, seed=3)
  assert [e.canonical for e in ea] == [e.canonical for e in eb]
  assert ea[0].prompt != eb[0].prompt


def test_too_small_space_names_the_task():
  t = tasks.make_task("chain_sum", prompt_format="expression", min_terms=1, max_terms=1,
                      min_digits=1, max_digits=1, name="tiny_space")   # 10 problems in all
  with pytest.raises(tasks.SplitTooSmallError, match="task 'tiny_space'.*distinct 'eval'"):
    t.examples("eval", 50, seed=0)
  with pytest.raises(tasks.SplitTooSmallError, match="task 'gsm8k'.*64 rows"):
    tasks.make_task("gsm8k_jsonl").examples("eval", 30)


def test_unaccepted_task_argument_names_task_and_key():
  with pytest.raises(tasks.TaskArgumentError, match="task 'gsm8k_jsonl'.*'max_digits'"):
    tasks.make_task("gsm8k_jsonl", max_digits=2)
  with pytest.raises(tasks.TaskArgumentError, match="task 'chain_sum'.*'max_digit'"):
    tasks.make_task("chain_sum", max_digit=2)
  with pytest.raises(tasks.TaskArgumentError, match="task 'chain_sum'.*invalid"):
    tasks.make_task("chain_sum", min_terms=3, max_terms=2)


def test_space_report_counts_problems():
  t = tasks.make_task("chain_sum", prompt_format="expression", min_terms=2, max_terms=2,
                      min_digits=1, max_digits=1)   # exactly 10 * 10 * 2 = 200 problems
  sp = t.space(draws=4000)
  assert sp["distinct_seen"] == 200 and sp["chao1"] == 200
  assert sum(sp["distinct_per_split"].values()) == 200
  f = tasks.make_task("gsm8k_jsonl").space()
  assert f["exact"] and f["chao1"] == 64 and f["distinct_per_split"]["eval"] >= 5


def test_calib_part_is_kept_out_of_the_warm_start():
  """warmstart.calib_fraction: the warm start never sees the calibration part; self-knowledge
  labels, the router's set and (rl_on_calib) RL's prompts come only from it."""
  from configs.rl_base import get_rl_base, task
  c = get_rl_base()
  c.stream.tasks = [task("chain_sum", "add2", min_terms=2, max_terms=2, min_digits=1, max_digits=2)]
  c.warmstart.examples_per_task, c.warmstart.calib_examples, c.stream.train_size = 3000, 600, 600
  t = tasks.make_task("chain_sum", **TASK_KW["chain_sum"])
  c.warmstart.calib_fraction = 0.3
  c.stream.rl_on_calib = True
  ws = {e.canonical for e in sd.warmstart_pool(c, t, 0)}
  for pool in (sd.self_knowledge_pool(c, t, 0, 0), sd.router_calibration(c, t, 0, 0),
               sd.rl_pool(c, t, 0, 0)):
    cans = {e.canonical for e in pool}
    assert cans and not cans & ws and all(splits.in_calib_part(x, 0.3) for x in cans)
  rep = sd.data_report(t, {"warmstart": sd.warmstart_pool(c, t, 0),
                           "self_knowledge": sd.self_knowledge_pool(c, t, 0, 0)},
                       sd.eval_sets(c, [t], 0)[0], space_draws=100)
  assert rep["train_pools"]["self_knowledge"]["seen_by_warmstart"] == 0
  share = np.mean([splits.in_calib_part(f"{a}+{b}", 0.3) for a in range(100) for b in range(100)])
  assert abs(share - 0.3) < 0.02
  c.warmstart.calib_fraction = 0.0   # no part: the pools overlap (the warm start memorised them)
  assert {e.canonical for e in sd.self_knowledge_pool(c, t, 0, 0)} & {
      e.canonical for e in sd.warmstart_pool(c, t, 0)}
  with pytest.raises(ValueError, match="rl_on_calib"):
    sd.rl_pool(c, t, 0, 0)

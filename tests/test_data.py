"""Answer extraction, task registry, reasoning-gym cross-check, GSM8K JSONL errors."""
import json

import pytest

from dacl.data.answers import digit_credit, extract_answer, numeric_reward
from dacl.data import tasks


@pytest.mark.parametrize("text,value", [
    ("so the total is 12.\n#### 42", 42.0),
    ("#### 1,234", 1234.0),
    ("we get \\boxed{-17}", -17.0),
    ("\\boxed{\\frac{1}{2}} hmm \\boxed{3.5}", 3.5),
    ("The answer is 42 apples.", 42.0),
    ("The answer is: $1,250.50", 1250.5),
    ("It costs 18 dollars, then 7 more: 25 dollars", 25.0),
    ("temperature -4 rose to +7 degrees", 7.0),
    ("answer = −3", -3.0),
    ("3/4 of them", 0.75),
    ("0.5", 0.5),
    ("42%", 42.0),
    ("no digits here", None),
])
def test_extract_answer(text, value):
  assert extract_answer(text) == value


def test_hash_takes_precedence_over_later_numbers():
  assert extract_answer("#### 5\n(and 6 other things)") == 5.0
  assert numeric_reward("I think 41... The answer is 42", "42") == 1.0
  assert numeric_reward("41", "42") == 0.0
  with pytest.raises(ValueError):
    numeric_reward("1", "none")


@pytest.mark.parametrize("completion,gold,credit", [
    ("1423", "1423", 1.0), ("231>132", "132", 1.0), ("1323", "1423", 0.75),
    ("423", "1423", 0.75), ("12", "102", 1 / 3), ("7", "17", 0.5), ("-5", "5", 0.0),
    ("no number", "5", 0.0), ("2.5", "2", 0.0), ("-131", "-132", 2 / 3)])
def test_digit_credit(completion, gold, credit):
  assert digit_credit(completion, gold) == pytest.approx(credit)


def test_partial_credit_only_where_digits_mean_something():
  arith = tasks.make_task("chain_sum")
  ex = arith.examples("train", 1, seed=0)[0]
  assert arith.partial_credit_many([ex.answer], [ex]) == [1.0]
  text = tasks.make_task("spell_backward")
  tex = text.examples("train", 1, seed=0)[0]
  assert text.partial_credit_many(["7"], [tex]) == [0.0]


@pytest.mark.parametrize("name", ["basic_arithmetic", "chain_sum", "gsm_symbolic", "products",
                                  "leg_counting"])
def test_reasoning_gym_tasks_verifier_agrees_with_rg_scorer(name):
  import reasoning_gym
  t = tasks.make_task(name)
  exs = t.examples("train", 8, seed=3)
  assert len(exs) == 8 and all(e.prompt and e.answer for e in exs)
  for e in exs:
    assert t.score(e.answer, e) == 1.0
    assert t.score(f"Let me think. #### {e.answer}", e) == 1.0
    wrong = str(float(e.answer) + 1)
    assert t.score(wrong, e) == 0.0
    entry = e.meta["rg_entry"]
    ds = reasoning_gym.create_dataset(name, size=1, seed=0)
    if "answer_rg" in e.meta["rg"]:   # dacl corrected the generator's answer (see below)
      assert ds.score_answer(e.answer, entry) < 1.0
      continue
    assert ds.score_answer(e.answer, entry) == 1.0   # rg agrees the gold is gold


@pytest.mark.parametrize("name", ["spell_backward", "word_sorting", "family_relationships"])
def test_text_tasks_score_by_exact_match_and_agree_with_rg(name):
  import reasoning_gym
  kw = {"prompt_format": "compact"} if name != "family_relationships" else {}
  t = tasks.make_task(name, **kw)
  for e in t.examples("train", 6, seed=2):
    assert t.score(e.answer, e) == 1.0 and t.score(f"  {e.answer} ", e) == 1.0
    assert t.score(e.answer + "x", e) == 0.0
    ds = reasoning_gym.create_dataset(name, size=1, seed=0)
    assert ds.score_answer(e.answer, e.meta["rg_entry"]) == 1.0
  if name == "spell_backward":
    e = t.examples("eval", 1)[0]
    assert e.prompt == f"reverse: {e.answer[::-1]}="


def _exact(expression: str):
  """Independent oracle: Python's own evaluation with every literal an exact Fraction."""
  import re
  from fractions import Fraction
  return eval(re.sub(r"(\d+)", r"Fraction(\1)", expression), {"Fraction": Fraction})


def test_arithmetic_answers_follow_the_displayed_expression():
  """reasoning-gym's basic_arithmetic without parentheses computes left to right ("3+1*10" ->
  40); the prompt shows 3+1*10, whose value is 13. dacl's gold is the displayed expression's."""
  t = tasks.make_task("basic_arithmetic", prompt_format="expression", min_terms=3, max_terms=3,
                      min_digits=1, max_digits=1, operators=("+", "-", "*"), allow_parentheses=False)
  exs = t.examples("train", 300, seed=0)
  fixed = [e for e in exs if "answer_rg" in e.meta["rg"]]
  assert 0.05 < len(fixed) / len(exs) < 0.5        # the generator's answer is often wrong here
  for e in exs:
    assert float(e.answer) == float(_exact(e.meta["rg"]["expression"])), e.prompt
  assert any(float(e.meta["rg"]["answer_rg"]) != float(e.answer) for e in fixed)


def test_examples_are_deterministic_per_seed():
  t = tasks.make_task("chain_sum", prompt_format="expression", min_terms=2, max_terms=2)
  a = [e.prompt for e in t.examples("train", 20, seed=0)]
  assert a == [e.prompt for e in t.examples("train", 20, seed=0)]
  assert a != [e.prompt for e in t.examples("train", 20, seed=1)]
  assert all(p.endswith("=") and " " not in p for p in a)


def test_gsm_symbolic_has_worked_solutions():
  e = tasks.make_task("gsm_symbolic").examples("train", 2)[0]
  assert e.solution.strip().endswith(f"#### {e.answer}") and len(e.solution) > len(e.answer) + 10
  assert e.solution.count("####") == 1, e.solution   # one final-answer line, not two


def test_unknown_task():
  with pytest.raises(KeyError, match="unknown task"):
    tasks.make_task("nope")


def test_gsm8k_fixture():
  t = tasks.make_task("gsm8k_jsonl")
  ex = t.examples("train", 50, seed=1)
  assert len(ex) == 50
  for e in ex:
    assert t.score(e.solution, e) == 1.0
  ev = {e.prompt for e in t.examples("eval", 6)}
  tr = {e.prompt for e in t.examples("train", 200)}
  assert not ev & tr and len(tr) == 51   # the fixture's 64 rows: 51 train, 7 eval, 6 test


@pytest.mark.parametrize("line,msg", [
    ("{not json", "row 2: invalid JSON"),
    (json.dumps({"question": "q"}), "row 2: need string fields"),
    (json.dumps({"question": "q", "answer": "42"}), "row 2: answer has no '####"),
    (json.dumps({"question": "q", "answer": "#### many"}), "row 2: final answer is not a number"),
])
def test_gsm8k_malformed_rows(tmp_path, line, msg):
  p = tmp_path / "d.jsonl"
  p.write_text(json.dumps({"question": "ok?", "answer": "1+1\n#### 2"}) + "\n" + line + "\n")
  with pytest.raises(tasks.MalformedRowError, match=msg):
    tasks.make_task("gsm8k_jsonl", path=str(p))
  with pytest.raises(FileNotFoundError):
    tasks.make_task("gsm8k_jsonl", path=str(tmp_path / "missing.jsonl"))


def test_hf_dataset_task_reads_local_json(tmp_path):
  pytest.importorskip("datasets")
  p = tmp_path / "d.json"
  rows = [{"q": f"What is {i}+1?", "a": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(8)]
  p.write_text("\n".join(json.dumps(r) for r in rows))
  t = tasks.make_task("hf_dataset", path=str(p), question_field="q", answer_field="a")
  ex = t.examples("train", 6)
  assert all(t.score(e.solution, e) == 1.0 for e in ex)


def test_tfds_task_clear_error_without_tensorflow():
  try:
    import tensorflow  # noqa: F401
    pytest.skip("TensorFlow is installed here")
  except ImportError:
    pass
  with pytest.raises(ImportError, match="tfds"):
    tasks.make_task("tfds")


def test_scratch_solutions_end_in_the_gold_answer():
  """Scratchpad demonstrations (F8) change the demonstration only: the same problems, splits and
  gold answers, and the scratchpad's last number is the gold answer."""
  from dacl.data.answers import numeric_reward
  from dacl.data.scratch import scratch_solution
  from dacl.data.tasks import make_task
  assert scratch_solution("47 + 85") == "231>132"
  assert scratch_solution("23 - 60") == "-73>-37"
  assert scratch_solution("6 + 10 * 0") == "10*0=0 6+0=6>6"
  specs = [("chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)),
           ("products", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)),
           ("basic_arithmetic", dict(min_terms=3, max_terms=4, min_digits=1, max_digits=2,
                                     operators=("+", "-", "*"), allow_parentheses=True))]
  for name, kw in specs:
    plain = make_task(name, prompt_format="expression", **kw).examples("train", 150, seed=3)
    scr = make_task(name, prompt_format="expression", solution_format="scratch",
                    **kw).examples("train", 150, seed=3)
    assert [e.prompt for e in plain] == [e.prompt for e in scr]
    assert [e.answer for e in plain] == [e.answer for e in scr]
    for e in scr:
      assert numeric_reward(e.solution, e.answer) == 1.0, (e.prompt, e.solution, e.answer)
      assert e.solution.endswith(">" + e.answer)
  with pytest.raises(Exception, match="solution_format"):
    make_task("chain_sum", prompt_format="question", solution_format="scratch")
  with pytest.raises(ValueError):
    scratch_solution("2**3")


@pytest.mark.parametrize("variant", ["scratch", "spread"])
def test_stream_demonstrations_fit_the_warm_start_and_the_rollouts(variant):
  """Every task of the scratchpad streams (`configs/dagrpo_stream.py`): no demonstration is
  truncated at `warmstart.seq_len`, and every solution (with its stop token) fits in
  `rl.max_new_tokens`, so neither SFT nor a rollout cuts the final answer off."""
  from configs.dagrpo_stream import get_config
  from dacl.build import build_task
  from dacl.tokenizers import ByteTokenizer
  from dacl.train.sft import make_sft_batch
  c, tok = get_config(variant), ByteTokenizer()
  for t in c.stream.tasks:
    ex = build_task(t).examples("train", 3000, seed=0)
    assert make_sft_batch(ex, tok, c.warmstart.seq_len)["truncated"] == 0, t.kwargs.name
    longest = max(len(tok.encode(e.solution, add_bos=False)) + 1 for e in ex)
    assert longest <= c.rl.max_new_tokens, (t.kwargs.name, longest)

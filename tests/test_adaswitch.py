"""AdaSwitch: the calculator (property tests against exact fractions, hostile input), the step
parser, gold trajectories from expressions / GSM8K annotations / worked solutions, the value-based
rule check, the training loss masks, and every inference mode on a scripted local model."""
import random
import re
import time
from fractions import Fraction

import httpx
import numpy as np
import pytest

from dacl.adaswitch import engine as eng
from dacl.adaswitch import steps as st
from dacl.adaswitch import training as trn
from dacl.adaswitch import trajectories as tj
from dacl.cloud.bridge import CloudBridge
from dacl.cloud.simulated import SimulatedCloud
from dacl.data import tasks
from dacl.data.calculator import CalcError, evaluate
from dacl.tokenizers import ByteTokenizer


# ----------------------------------------------------------------------------- calculator

def _random_expr(rng, depth=0):
  """(expression text, exact value or None when undefined) built from one random tree."""
  if depth > 3 or rng.random() < 0.3:
    v = rng.randint(0, 30)
    return str(v), Fraction(v)
  kind = rng.choice(["+", "-", "*", "/", "**", "neg", "par"])
  if kind == "neg":
    t, v = _random_expr(rng, depth + 1)
    return f"-({t})", (None if v is None else -v)
  if kind == "par":
    t, v = _random_expr(rng, depth + 1)
    return f"({t})", v
  (a, x), (b, y) = _random_expr(rng, depth + 1), _random_expr(rng, depth + 1)
  if kind == "**":
    e = rng.randint(-3, 3)
    b, y = str(e), Fraction(e)
  if x is None or y is None:
    return f"({a}){kind}({b})", None
  if kind == "/":
    return f"({a})/({b})", (None if y == 0 else x / y)
  if kind == "**":
    return f"({a})**({b})", (None if x == 0 and y < 0 else x ** int(y))
  return f"({a}){kind}({b})", {"+": x + y, "-": x - y, "*": x * y}[kind]


def test_calculator_matches_exact_fractions_on_random_expressions():
  rng = random.Random(0)
  checked = 0
  for _ in range(3000):
    text, want = _random_expr(rng)
    if len(text) > 256:
      continue
    got = evaluate(text)
    if want is None:
      assert isinstance(got, CalcError), text
    elif abs(want) > Fraction(10) ** 40 or want.denominator > 10 ** 40:
      assert isinstance(got, CalcError), text
    else:
      assert got == want, (text, got, want)
      checked += 1
  assert checked > 2000


def test_calculator_registers():
  assert evaluate("(" * 60 + "1" + ")" * 60) == 1   # redundant brackets are not nesting
  regs = {"R1": Fraction(7), "R2": Fraction(-3, 2)}
  assert evaluate("R1*2+R2", regs) == Fraction(25, 2)
  assert "not defined" in evaluate("R3+1", regs).message


@pytest.mark.parametrize("expr,why", [
    ("x+1", "unknown name"), ("__import__('os').system('true')", "not allowed"),
    ("(1).real", "not allowed"), ("R1.__class__", "not allowed"), ("abs(-1)", "not allowed"),
    ("9**99", "exponent"), ("2**2**2**2**2", "exponent"), ("10**16*10**16*10**16", "too large"),
    ("1/0", "division by zero"), ("1/(2-2)", "division by zero"), ("0**-1", "division by zero"),
    ("R9", "not defined"), ("1+" * 5000 + "1", "longer than"), ("-(" * 60 + "1" + ")" * 60, "nested"),
    ("lambda: 1", "not allowed"), ("[1, 2]", "not allowed"), ("'a'*3", "unsupported"),
    ("True+1", "unsupported"), ("1e999", "too large"), ("1 if 1 else 2", "not allowed"),
    ("", "empty"), ("1 +", "not an arithmetic"), ("((1/7)**16)**16", "too many digits"),
    ("1 < 2", "not allowed")])
def test_calculator_refuses_bad_input_with_an_error_observation(expr, why):
  t = time.perf_counter()
  got = evaluate(expr, {"R1": Fraction(1)})
  assert isinstance(got, CalcError) and why in got.message, (expr, got)
  assert time.perf_counter() - t < 0.5
  assert str(got).startswith("Error:")


# ----------------------------------------------------------------------------- steps

def test_parse_steps():
  s = st.parse_step("Thought: add\nAction: R1 = Calculator(23+45)\nObservation:", 1)
  assert (s.kind, s.register, s.expr) == ("calc", 1, "23+45")
  assert s.text == "Thought: add\nAction: R1 = Calculator(23+45)\nObservation:"
  f = st.parse_step("Thought: done\nAction: Finish(R2)\n", 3)
  assert (f.kind, f.expr) == ("finish", "R2") and f.text.endswith("Observation:")
  for bad, msg in (("Action: R1 = Calculator(1+1)\n", "Thought"),
                   ("Thought: x\nAction: Calculate(1)\n", "unknown action"),
                   ("Thought: x\nAction: R3 = Calculator(1)\n", "expected register R1"),
                   ("Thought: x\nAction: R1 = Calculator(1+", "unknown action"), ("", "Thought")):
    b = st.parse_step(bad, 1)
    assert b.kind == "malformed" and msg in b.error, (bad, b)
    value, obs = st.run_tool(b, {})
    assert isinstance(value, CalcError) and obs.startswith(" Error:")
  regs = {}
  value, obs = st.run_tool(s, regs)
  assert value == 68 and obs == " 68\n" and regs == {"R1": Fraction(68)}
  value, obs = st.run_tool(st.parse_step("Thought: t\nAction: R2 = Calculator(R1/0)\n", 2), regs)
  assert isinstance(value, CalcError) and "division by zero" in obs and "R2" not in regs


# ----------------------------------------------------------------------------- gold trajectories

def test_gold_from_expression_follows_precedence():
  g = tj.from_expression("8-3*4=", "8 - 3 * 4", "-4")
  assert [s.expr for s in g.steps] == ["3*4", "8-R1"] and g.answer == -4
  assert g.finish_expr() == "R2"
  recs = g.records()
  assert [r.step.kind for r in recs] == ["calc", "calc", "finish"]
  assert st.value_of(recs[-1].value) == -4 and tj.first_wrong_step(recs, g) is None
  assert tj.from_expression("q", "1 + 2", "4") is None   # a stated answer that is wrong


@pytest.mark.parametrize("name,kw,min_cov", [
    ("chain_sum", dict(prompt_format="expression", min_terms=3, max_terms=5), 1.0),
    ("basic_arithmetic", dict(prompt_format="expression", min_terms=3, max_terms=4,
                              operators=("+", "-", "*"), allow_parentheses=False), 0.99),
    ("gsm_symbolic", {}, 0.9)])
def test_gold_trajectories_from_generated_tasks(name, kw, min_cov):
  t = tasks.make_task(name, **kw)
  exs = t.examples("train", 100, seed=1)
  golds = [tj.gold_for(e) for e in exs]
  assert sum(g is not None for g in golds) >= min_cov * len(exs)
  for e, g in zip(exs, golds):
    if g is None:
      continue
    assert float(g.answer) == pytest.approx(float(e.answer), abs=1e-6)
    recs = g.records()
    assert tj.first_wrong_step(recs, g) is None and st.value_of(recs[-1].value) == g.answer


def test_gsm8k_annotations_become_calculator_actions():
  t = tasks.make_task("gsm8k_jsonl")
  rows = [e for s in ("train", "eval", "test") for e in t.examples(s, {"train": 51, "eval": 7, "test": 6}[s], distinct=True)]
  assert len(rows) == 64
  for e in rows:
    g = tj.from_annotations(e.prompt, e.solution)
    assert g is not None, e.solution
    assert len(g.steps) == e.solution.count("<<")
    recs = g.records()
    assert st.value_of(recs[-1].value) == Fraction(e.answer)
  g = tj.from_annotations("q", "3 * 4 = <<3*4=12>>12 apples.\n12 + 12 = <<12+12=24>>24 apples.\n#### 24")
  assert [s.expr for s in g.steps] == ["3*4", "R1+R1"]
  assert g.steps[0].thought == "3 * 4 = R1 apples."
  assert tj.from_annotations("q", "2 + 2 = <<2+2=5>>5\n#### 5") is None   # a wrong annotation


def test_rule_check_compares_values_not_text():
  g = tj.from_expression("q", "61 + 68 - 88", "41")
  mk = lambda text, k, regs: (lambda s: st.StepRecord(s, *st.run_tool(s, regs)[::-1][::-1], "local"))(
      st.parse_step(text, k))

  def traj(*steps):
    regs, out = {}, []
    for k, text in enumerate(steps, 1):
      s = st.parse_step(text, k)
      v, obs = st.run_tool(s, regs)
      out.append(st.StepRecord(s, obs, v, "local"))
    return out
  R = lambda k, e: f"Thought: t\nAction: R{k} = Calculator({e})\n"
  F = lambda e: f"Thought: t\nAction: Finish({e})\n"
  assert tj.first_wrong_step(traj(R(1, "68+61"), R(2, "R1-88"), F("R2")), g) is None
  assert tj.first_wrong_step(traj(R(1, "61+68"), R(2, "R1-89"), F("R2")), g) == 1
  assert tj.first_wrong_step(traj(R(1, "61+68"), R(2, "R1-88"), F("R1")), g) == 2
  assert tj.first_wrong_step(traj("Thought: t\nAction: oops\n"), g) == 0
  assert tj.first_wrong_step(traj(R(1, "1/0")), g) == 0
  # the helper continues the gold solution by position; earlier mistakes are not repaired
  assert tj.next_gold_step(traj(R(1, "61+68")), g, 2).endswith("R2 = Calculator(R1-88)\nObservation:")
  assert tj.next_gold_step(traj(R(1, "61+60")), g, 2).endswith("R2 = Calculator(R1-88)\nObservation:")
  assert "Finish(R2)" in tj.next_gold_step(traj(R(1, "61+68"), R(2, "R1-88")), g, 3)
  assert tj.next_gold_step([], g, 1).endswith("R1 = Calculator(61+68)\nObservation:")


# ----------------------------------------------------------------------------- loss masks

def _trained_text(tok, ids, w):
  return tok.decode([t for t, x in zip(ids, w) if x > 0])


def test_self_practice_mask_trains_steps_and_reflections_only():
  tok = ByteTokenizer()
  g = tj.from_expression("3+4*2=", "3 + 4 * 2", "11")
  ids, w = trn.trajectory_tokens(tok, "Question: 3+4*2=\n", g.records(), "self_practice")
  trained = _trained_text(tok, ids, w)
  assert trained == ("Thought: multiply\nAction: R1 = Calculator(4*2)\nObservation:No\n"
                     "Thought: add\nAction: R2 = Calculator(3+R1)\nObservation:No\n"
                     "Thought: done\nAction: Finish(R2)\nObservation:No\n")
  assert "Question" not in trained and " 8\n" not in trained and "Reflection" not in trained


def test_reflective_mask_hides_the_wrong_step_and_trains_yes_and_the_correction():
  tok = ByteTokenizer()
  regs = {}

  def rec(text, k, author, wrong=False):
    s = st.parse_step(text, k)
    v, obs = st.run_tool(s, regs)
    if wrong:
      regs.pop(f"R{k}", None)
    return st.StepRecord(s, obs, v, author, wrong=wrong, superseded=wrong)
  recs = [rec("Thought: a\nAction: R1 = Calculator(2+3)\n", 1, "local"),
          rec("Thought: b\nAction: R2 = Calculator(R1*9)\n", 2, "local", wrong=True),
          rec("Thought: c\nAction: R2 = Calculator(R1*7)\n", 2, "cloud"),
          rec("Thought: d\nAction: Finish(R2)\n", 3, "local")]
  ids, w = trn.trajectory_tokens(tok, "Question: (2+3)*7=\n", recs, "reflective")
  trained = _trained_text(tok, ids, w)
  assert trained == ("Thought: a\nAction: R1 = Calculator(2+3)\nObservation:No\n"
                     "Yes\n"
                     "Thought: c\nAction: R2 = Calculator(R1*7)\nObservation:No\n"
                     "Thought: d\nAction: Finish(R2)\nObservation:No\n")
  assert "R1*9" not in trained and " 45" not in trained and " 35" not in trained
  full = tok.decode(ids)
  assert "R1*9)\nObservation: 45\nReflection: Is previous step wrong: Yes\n" in full
  batch = trn.make_trajectory_batch([(ids, w)], tok, 512)
  assert batch["loss_mask"].sum() == sum(1 for x in w[1:] if x > 0) and batch["truncated"] == 0
  assert batch["tokens"].shape[1] % 64 == 0
  j = json = trn.record_to_json(recs[1])
  back = trn.record_from_json(j)
  assert back.wrong and back.step.expr == "R1*9" and st.value_of(back.value) == 45


# ----------------------------------------------------------------------------- engine, scripted model

class _Out:
  def __init__(self, texts):
    self.texts = texts
    self.lengths = np.array([len(t) for t in texts])
    self.stop_reason = np.full(len(texts), 2)


class ScriptedLocal:
  """A stand-in local model that reads its byte context: it writes the gold next step, except a
  wrong expression at step index `mistake` (unless its previous reflection said Yes: then it
  corrects itself), and reports P(Yes) = 0.9 on a wrong step, 0.05 on a right one."""
  max_cache_len = 4096

  def __init__(self, tok, mistake=1, p_wrong=0.9, p_right=0.05):
    self.tok, self.mistake, self.p_wrong, self.p_right = tok, mistake, p_wrong, p_right

  def _state(self, ids):
    text = self.tok.decode(ids)
    expr = re.search(r"Question: (.*)=\n", text).group(1)
    g = tj.from_expression("q", expr, str(evaluate(expr)))
    regs, recs = {}, []
    blocks = text.split("Thought: ")[1:]
    for b in blocks:
      body = "Thought: " + b
      if "Reflection: Is previous step wrong: " not in body:
        break
      s = st.parse_step(body.split(st.OBS)[0], 1 + sum(1 for r in recs if r.step.kind == "calc" and not r.superseded))
      v, obs = st.run_tool(s, regs)
      wrong = "wrong: Yes" in body
      if wrong and s.kind == "calc":
        regs.pop(f"R{s.register}", None)
      recs.append(st.StepRecord(s, obs, v, "local", wrong=wrong, superseded=wrong))
    return text, g, recs

  def __call__(self, prompts, key, params):
    texts = []
    for ids in prompts:
      text, g, recs = self._state(ids)
      accepted = sum(1 for r in recs if not r.superseded)
      # the gold steps by position (so a mistake propagates, as a real model's would)
      step = (g.steps[accepted].text(accepted + 1) if accepted < len(g.steps) else
              st.render("done", st.finish_action(g.finish_expr())))
      just_flagged = bool(recs) and recs[-1].wrong
      if accepted == self.mistake and not just_flagged:
        step = re.sub(r"Calculator\((\d+)", lambda m: f"Calculator({int(m.group(1)) + 1}", step, 1)
      texts.append(step.split(st.OBS)[0])
    return _Out(texts)

  def score_next(self, prompts, token_ids):
    out = []
    for ids in prompts:
      text, g, recs = self._state(ids + self.tok.encode("No\n", add_bos=False))
      bad = tj.first_wrong_step(recs, g)
      p = self.p_wrong if bad is not None and bad == len(recs) - 1 else self.p_right
      out.append([np.log(p), np.log(1 - p)])
    return np.array(out)


def _engine(mode_cloud_p=1.0, fail_rate=0.0, **kw):
  tok = ByteTokenizer()
  bridge = CloudBridge(SimulatedCloud(p_correct_step=mode_cloud_p, fail_rate=fail_rate), cache=True)
  return eng.StepEngine(ScriptedLocal(tok), tok, eng.EngineConfig(**kw), bridge=bridge), bridge


def _problems(n=6):
  rng = random.Random(3)
  exprs = [f"{rng.randint(10, 60)}+{rng.randint(2, 9)}*{rng.randint(2, 9)}-{rng.randint(1, 9)}"
           for _ in range(n)]
  return [tasks.Example(prompt=e + "=", answer=str(evaluate(e)), solution="", task="t",
                        meta={"rg": {"expression": e}}) for e in exprs]


@pytest.mark.parametrize("mode", ["local", "self_reflection", "adaswitch", "cloud", "oracle",
                                  "resample", "random"])
def test_every_mode_on_a_scripted_model(mode):
  e, bridge = _engine(threshold=0.5, random_rate=1.0)
  try:
    rows = e.run(e.new_rows(_problems()), mode)
  finally:
    bridge.close()
  acc = np.mean([r.correct for r in rows])
  calls = sum(r.cloud_calls for r in rows)
  by = [r.steps_by for r in rows]
  if mode == "local":               # the mistake goes through: every answer is wrong
    assert acc == 0 and calls == 0 and all(r.switches == 0 for r in rows)
  elif mode == "self_reflection":   # P(Yes) 0.9 flags it; the model corrects itself
    assert acc == 1 and calls == 0 and all(r.switches == 1 for r in rows)
    assert all(b == {"local": 4, "cloud": 0} for b in by)
  elif mode in ("adaswitch", "oracle"):   # flagged once, the cloud writes that one step
    assert acc == 1 and calls == len(rows) and all(r.switches == 1 for r in rows)
    assert all(b == {"local": 3, "cloud": 1} for b in by)
    flagged = [x for r in rows for x in r.records if x.wrong]
    assert len(flagged) == len(rows) and all(x.author == "local" and x.superseded for x in flagged)
  elif mode == "cloud":
    assert acc == 1 and all(b == {"local": 0, "cloud": 4} for b in by)
    assert all(r.local_tokens == 0 for r in rows)
  elif mode == "resample":          # no cloud; the scripted model only errs when not flagged
    assert calls == 0 and acc == 1
  elif mode == "random":            # every local step flagged (rate 1): the cloud rewrites all
    assert calls >= 3 * len(rows)
  # the local model's context: every step in local and self_reflection mode (it must see its own
  # flagged step to write another); otherwise a replaced step has left it (drop_flagged)
  text = ByteTokenizer().decode(rows[0].ids)
  seen = [x for x in rows[0].records if mode in ("local", "self_reflection") or not x.superseded]
  assert text.startswith("Question: ") and text.count("Reflection: Is previous step wrong: ") == len(seen)
  assert "wrong: Yes" not in text or mode == "self_reflection"


def test_replaced_step_leaves_the_context_unless_told_to_keep_it():
  for drop in (True, False):
    e, bridge = _engine(threshold=0.5, drop_flagged=drop)
    rows = e.run(e.new_rows(_problems(2)), "adaswitch")
    bridge.close()
    assert all(r.correct and r.switches == 1 for r in rows)
    text = ByteTokenizer().decode(rows[0].ids)
    bad = next(x for x in rows[0].records if x.superseded)
    assert (bad.step.text in text) != drop and ("wrong: Yes" in text) != drop


def test_threshold_decides_and_cloud_faults_fall_back_locally():
  e, bridge = _engine(threshold=0.95)   # P(Yes) 0.9 < 0.95: never switches
  rows = e.run(e.new_rows(_problems(3)), "adaswitch")
  bridge.close()
  assert all(r.switches == 0 and not r.correct for r in rows)
  e, bridge = _engine(threshold=0.5, fail_rate=1.0)   # every cloud call faults
  rows = e.run(e.new_rows(_problems(3)), "adaswitch")
  bridge.close()
  assert all(r.cloud_faults >= 1 for r in rows) and bridge.stats["faults"] >= 3
  assert all(r.steps_by["cloud"] == 0 for r in rows)   # the rows went on locally
  e, bridge = _engine(threshold=0.5, mode_cloud_p=0.0, cloud_attempts=2)   # the cloud is always wrong
  rows = e.run(e.new_rows(_problems(3)), "oracle")
  bridge.close()
  assert all(r.failed for r in rows)   # examination drops what the cloud cannot fix


def test_cloud_step_requests_carry_their_own_instructions():
  e, bridge = _engine(threshold=0.5)
  seen = []
  orig = bridge.register
  bridge.register = lambda reqs: (seen.extend(reqs), orig(reqs))
  e.run(e.new_rows(_problems(2)), "cloud")
  bridge.close()
  assert seen and all(r.kind == "step" and r.system == eng.CLOUD_SYSTEM and r.stop == (st.OBS,)
                      for r in seen)
  assert all("Question: " in r.prompt for r in seen)


# ----------------------------------------------------------------------------- serving

class _HelperCloud:
  """A cloud that writes the correct next step from what it is sent (the question and the steps
  so far): stands in for a strong LLM in the serving test."""
  name = "helper"
  stats = {}
  cache_id = "helper"

  def cache_key(self, req):
    return req.key

  async def complete(self, requests):
    from dacl.cloud.protocol import CloudResponse
    out = []
    for r in requests:
      expr = re.search(r"Question: (.*?)=\n", r.prompt).group(1)
      g = tj.from_expression("q", expr, str(evaluate(expr)))
      regs, recs = {}, []
      for body in re.findall(r"(Thought: .*?\nAction: .*?\n)Observation:", r.prompt):
        s = st.parse_step(body, 1 + sum(1 for x in recs if x.step.kind == "calc"))
        v, obs = st.run_tool(s, regs)
        recs.append(st.StepRecord(s, obs, v, "local"))
      k = 1 + sum(1 for x in recs if x.step.kind == "calc")
      text = tj.next_gold_step(recs, g, k).split(st.OBS)[0]
      out.append(CloudResponse(r.key, text, 10, 10))
    return out

  async def aclose(self):
    pass


def test_serve_collab_adaswitch_reports_the_steps_of_each_side():
  """The step engine behind the OpenAI-compatible endpoint, called with the official client:
  the scripted model errs on step 2 and flags it; the helper cloud rewrites it; the answer is
  right and reports 3 local steps and 1 cloud step."""
  openai = pytest.importorskip("openai")
  from dacl.adaswitch.serving import StepCollaborator
  from dacl.serve import ServerThread
  from dacl.serve.engine import BatchingEngine
  from dacl.serve.server import App
  from dacl.models.config import get_preset
  from dacl.models.decoder import create_model
  tok = ByteTokenizer()
  engine = BatchingEngine(create_model(get_preset("tiny", n_layers=1), 0), tok, max_cache_len=512)
  collab = StepCollaborator(ScriptedLocal(tok), tok, CloudBridge(_HelperCloud()),
                            eng.EngineConfig(threshold=0.5), chat=False, batch_wait_ms=50)
  srv = ServerThread(App(engine, "dacl-tiny", None, collab, 64, 1, 1 << 20))
  try:
    client = openai.OpenAI(base_url=srv.base_url, api_key="unused")
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(3) as ex:
      outs = list(ex.map(lambda e: client.completions.create(model="dacl-tiny", prompt=e.prompt,
                                                             max_tokens=64), _problems(3)))
    for p, out in zip(_problems(3), outs):
      d = out.model_extra["dacl"]
      assert d["mode"] == "adaswitch" and d["steps"] == {"local": 3, "cloud": 1}, d
      assert d["switches"] == 1 and d["cloud_calls"] == 1
      assert out.choices[0].text.endswith(f"#### {p.answer}") and d["answer"] == p.answer
    stats = httpx.get(srv.base_url.replace("/v1", "/dacl/stats")).json()["collab"]
    assert stats["steps_cloud"] == 3 and stats["requests"] == 3 and stats["batches"] <= 3
  finally:
    srv.close()


def test_reflection_quality_and_calibrated_threshold():
  from dacl.adaswitch.job import reflection_quality
  e, bridge = _engine(threshold=1.01)    # judged, never acted on
  rows = e.run(e.new_rows(_problems(5)), "self_reflection")
  bridge.close()
  q = reflection_quality(rows)
  assert q["n_wrong"] == 5 and q["n_steps"] == 10      # each row: one right step, then its mistake
  assert q["auroc"] == pytest.approx(1.0) and q["tpr"] == 1.0 and q["fpr"] == 0.0
  assert 0.05 < q["threshold"] < 0.9
  e, bridge = _engine(threshold=q["threshold"])
  rows = e.run(e.new_rows(_problems(5)), "adaswitch")
  bridge.close()
  assert all(r.correct and r.switches == 1 for r in rows)


def test_local_mode_probe_reads_reflections_without_acting_or_counting():
  from dacl.adaswitch.job import reflection_quality
  out = {}
  for probe in (False, True):
    e, bridge = _engine(threshold=0.5, probe=probe)
    out[probe] = e.run(e.new_rows(_problems(4)), "local")
    bridge.close()
  plain, probed = out[False], out[True]
  assert [r.correct for r in plain] == [r.correct for r in probed]
  assert [r.local_tokens for r in plain] == [r.local_tokens for r in probed]
  assert all(x.p_yes is None for r in plain for x in r.records)
  assert reflection_quality(probed)["auroc"] == pytest.approx(1.0)


def test_calibration_holds_the_switch_budget(monkeypatch):
  """The calibrated cut is the best Youden's J among cuts that flag at most `switch_budget` of
  all judged local steps (the predicted switch rate, ~ the share of cloud-only's tokens)."""
  from types import SimpleNamespace as NS
  from dacl.adaswitch import job
  rng = np.random.default_rng(0)
  rows = []
  for i in range(40):
    bad = i % 2                       # half the rows go wrong at step 1, half never do
    ps = [rng.uniform(0.0, 0.3), rng.uniform(0.2, 1.0) if bad else rng.uniform(0.0, 0.3),
          rng.uniform(0.0, 1.0)]      # steps after a mistake are noisy
    rows.append(NS(records=[NS(p_yes=float(p)) for p in ps], gold=1 if bad else -1))
  monkeypatch.setattr(job.tj, "first_wrong_step", lambda recs, gold: gold if gold >= 0 else None)
  free = job.reflection_quality(rows)
  every = np.array([x.p_yes for r in rows for x in r.records])
  assert free["threshold"] == free["youden_threshold"]
  assert free["predicted_switch_rate"] == pytest.approx(float((every > free["threshold"]).mean()))
  assert free["predicted_switch_rate"] > 0.25
  held = job.reflection_quality(rows, switch_budget=0.25)
  assert held["predicted_switch_rate"] <= 0.25
  assert float((every > held["threshold"]).mean()) <= 0.25
  assert held["threshold"] > free["threshold"] and held["tpr"] <= free["tpr"]
  assert held["youden_threshold"] == free["youden_threshold"]


def test_cached_evaluation_is_redone_when_its_key_changes(tmp_path):
  from dacl.adaswitch.job import _evaluate
  calls = []
  fn = lambda: calls.append(1) or {"accuracy": 0.5, "cloud_tokens": 0}
  _evaluate("adaswitch", fn, str(tmp_path), key={"threshold": 0.1})
  _evaluate("adaswitch", fn, str(tmp_path), key={"threshold": 0.1})
  assert len(calls) == 1                                    # reused
  _evaluate("adaswitch", fn, str(tmp_path), key={"threshold": 0.2})
  assert len(calls) == 2                                    # another threshold: evaluated again

"""Gold step trajectories, and the rule check that finds a generated trajectory's first wrong step.

Builders (each returns a GoldTrajectory, or None when the solution cannot be turned into
verified calculator steps):
  from_expression  arithmetic expressions (reasoning-gym chain_sum / basic_arithmetic /
                   products): one step per operator, in evaluation order, sub-results as registers
  from_annotations GSM8K solutions: each `<<48/2=24>>` annotation becomes a Calculator action
  from_equations   worked solutions with inline equations ("8 * 11 = 88 brownies", as in
                   gsm_symbolic); units and words between numbers are dropped
Every step is checked with the calculator against the value the solution states, and the
Finish value against the gold answer; a solution with any mismatch gives None.

The rule check compares *values*, not text: a calculator step is right when its value is a
gold intermediate value not yet matched (any order), a Finish when it equals the gold answer.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from fractions import Fraction
from typing import Optional

from dacl.adaswitch import steps as st
from dacl.data.calculator import CalcError, evaluate, format_value
from dacl.data.answers import extract_answer

_OPS = {ast.Add: ("+", "add"), ast.Sub: ("-", "subtract"), ast.Mult: ("*", "multiply"),
        ast.Div: ("/", "divide")}


@dataclasses.dataclass(frozen=True)
class GoldStep:
  thought: str
  expr: str                  # may reference earlier registers R1..R(k-1)
  value: Fraction

  def text(self, register: int) -> str:
    return st.render(self.thought, st.calc_action(register, self.expr))


@dataclasses.dataclass(frozen=True)
class GoldTrajectory:
  question: str
  steps: tuple               # GoldStep per calculator step, in order (register k = index + 1)
  answer: Fraction
  finish_thought: str = "the answer is the last result"

  @property
  def values(self) -> list:
    return [s.value for s in self.steps]

  def finish_expr(self) -> str:
    for k in range(len(self.steps), 0, -1):
      if self.steps[k - 1].value == self.answer:
        return f"R{k}"
    return format_value(self.answer)

  def records(self) -> list:
    """The whole gold trajectory as StepRecords (observations included), for SFT."""
    regs, out = {}, []
    for k, g in enumerate(self.steps, 1):
      step = st.parse_step(g.text(k), k)
      value, obs = st.run_tool(step, regs)
      out.append(st.StepRecord(step, obs, value, "gold"))
    step = st.parse_step(st.render(self.finish_thought, st.finish_action(self.finish_expr())),
                         len(self.steps) + 1)
    value, obs = st.run_tool(step, regs)
    out.append(st.StepRecord(step, obs, value, "gold"))
    return out


def _verified(question, steps, answer, finish_thought=None) -> Optional[GoldTrajectory]:
  regs = {}
  for k, g in enumerate(steps, 1):
    v = evaluate(g.expr, regs)
    if isinstance(v, CalcError) or v != g.value:
      return None
    regs[f"R{k}"] = v
  if answer is None:
    return None
  t = GoldTrajectory(question, tuple(steps), Fraction(answer).limit_denominator(10 ** 9),
                     **({"finish_thought": finish_thought} if finish_thought else {}))
  if isinstance(evaluate(t.finish_expr(), regs), CalcError):
    return None
  return t


# ----------------------------------------------------------------------------- expressions

def from_expression(question: str, expression: str, answer) -> Optional[GoldTrajectory]:
  """One step per binary operator of `expression`, in Python's evaluation order."""
  try:
    tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval").body
  except SyntaxError:
    return None
  out = []

  def leaf(node) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
      return ast.unparse(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and leaf(node.operand):
      return "(-" + leaf(node.operand) + ")"
    return None

  def walk(node) -> Optional[str]:
    lit = leaf(node)
    if lit is not None:
      return lit
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      inner = walk(node.operand)
      if isinstance(node.op, ast.UAdd):
        return inner
      k = len(out) + 1
      v = evaluate(f"-{inner}", {f"R{i}": s.value for i, s in enumerate(out, 1)})
      if isinstance(v, CalcError):
        raise ValueError(v.message)
      out.append(GoldStep("negate", f"-{inner}", v))
      return f"R{k}"
    if not isinstance(node, ast.BinOp) or type(node.op) not in _OPS:
      raise ValueError("unsupported")
    a, b = walk(node.left), walk(node.right)
    sym, verb = _OPS[type(node.op)]
    k = len(out) + 1
    expr = f"{a}{sym}{b}"
    regs = {f"R{i}": s.value for i, s in enumerate(out, 1)}
    v = evaluate(expr, regs)
    if isinstance(v, CalcError):
      raise ValueError(v.message)
    out.append(GoldStep(verb, expr, v))   # short thoughts: byte-level contexts stay small
    return f"R{k}"

  try:
    top = walk(tree)
  except ValueError:
    return None
  if not out:   # a bare number: nothing to compute
    return None
  gold = extract_answer(str(answer))
  t = _verified(question, out, gold, finish_thought="done")
  return t if t is not None and t.answer == out[-1].value else None


# ----------------------------------------------------------------------------- GSM8K annotations

_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


def _registerise(expr: str, steps: list) -> str:
  """Replace numbers equal to an earlier result by that register (the most recent one)."""
  def sub(m):
    try:
      v = Fraction(m.group(0))
    except ValueError:
      return m.group(0)
    for k in range(len(steps), 0, -1):
      if steps[k - 1].value == v:
        return f"R{k}"
    return m.group(0)
  return _NUM.sub(sub, expr)


def _as_fraction(text: str) -> Optional[Fraction]:
  v = extract_answer(text)
  return None if v is None else Fraction(str(v))


def from_annotations(question: str, solution: str) -> Optional[GoldTrajectory]:
  """GSM8K format: lines with `<<expr=result>>` annotations, then `#### answer`."""
  body, _, final = solution.partition("####")
  steps = []
  for line in body.splitlines():
    for m in _ANNOT.finditer(line):
      value = _as_fraction(m.group(2))
      if value is None:
        return None
      k = len(steps) + 1
      expr = _registerise(m.group(1).strip(), steps)
      thought = line[:m.start()] + f"R{k}" + re.sub(r"^\s*-?[\d.,]+", "", line[m.end():])
      thought = " ".join(_ANNOT.sub("", thought).split())
      steps.append(GoldStep(thought or f"compute R{k}", expr, value))
  if not steps:
    return None
  return _verified(question, steps, _as_fraction(final))


# ----------------------------------------------------------------------------- inline equations

_EQ_RHS = re.compile(r"=\s*[$€£]?\s*(-?\d[\d,]*(?:\.\d+)?)")


def _lhs_expression(lhs: str) -> Optional[str]:
  """The arithmetic of an equation's left side: numbers and the operators between them, units,
  words and currency dropped ("€60/day * 24 days" -> "60*24"). An operator counts only when a
  number (or a bracket) follows it; "days/week" is a unit."""
  lhs = re.sub(r"[$€£]", "", lhs)   # currency is a unit too
  toks = re.findall(r"\d[\d,]*(?:\.\d+)?%?|[-+*/×÷x]|\(|\)|[A-Za-z']+", lhs)
  out = []
  for i, t in enumerate(toks):
    if t[0].isdigit():
      out.append(t.replace(",", "").rstrip("%"))
    elif t in "+-*/×÷x" and len(t) == 1:
      nxt = toks[i + 1] if i + 1 < len(toks) else ""
      if nxt[:1].isdigit() or nxt == "(":
        if t == "x" and not (out and out[-1][0].isdigit()):
          continue
        out.append({"×": "*", "x": "*", "÷": "/"}.get(t, t))
  # keep the longest trailing number-operator-number alternation
  expr = []
  for t in reversed(out):
    want_num = not expr or expr[-1] in "+-*/"
    is_num = t[0].isdigit()
    if want_num != is_num:
      break
    expr.append(t)
  expr.reverse()
  if len(expr) < 3 or not expr[0][0].isdigit():
    return None
  return "".join(expr)


def from_equations(question: str, solution: str) -> Optional[GoldTrajectory]:
  """Worked solutions whose lines state equations like "8 * 11 = 88 brownies"."""
  body, _, final = solution.partition("####")
  steps = []
  for line in body.splitlines():
    pos = 0
    for m in _EQ_RHS.finditer(line):
      expr = _lhs_expression(line[pos:m.start()])
      pos = m.end()
      if expr is None:
        continue
      value = Fraction(m.group(1).replace(",", ""))
      k = len(steps) + 1
      rexpr = _registerise(expr, steps)
      v = evaluate(rexpr, {f"R{i}": s.value for i, s in enumerate(steps, 1)})
      if isinstance(v, CalcError) or v != value:
        continue   # algebra ("2x+30=184") or a rounded figure: not a calculator step
      thought = " ".join(line[:m.start()].split())[-80:] + f" = R{k}"
      steps.append(GoldStep(thought, rexpr, value))
  if not steps:
    return None
  return _verified(question, steps, _as_fraction(final))


def gold_for(example) -> Optional[GoldTrajectory]:
  """The gold trajectory of a task Example: from its generator's expression if it has one, else
  from `<<>>` annotations, else from inline equations."""
  md = (example.meta or {}).get("rg", {})
  if "expression" in md:
    return from_expression(example.prompt, md["expression"], example.answer)
  if "<<" in example.solution:
    return from_annotations(example.prompt, example.solution)
  return from_equations(example.prompt, example.solution)


# ----------------------------------------------------------------------------- rule check

def first_wrong_step(records: list, gold: GoldTrajectory) -> Optional[int]:
  """Index of the first wrong step of a generated trajectory (None: all right). By values: a
  calculator step must produce a gold intermediate value not matched before (any order); a
  Finish must produce the gold answer; a malformed step or a tool error is wrong."""
  remaining = list(gold.values)
  for i, r in enumerate(records):
    if r.superseded:
      continue
    v = st.value_of(r.value)
    if not r.step.ok or v is None:
      return i
    if r.step.kind == "finish":
      return None if v == gold.answer else i
    if v in remaining:
      remaining.remove(v)
    else:
      return i
  return None


def next_gold_step(records: list, gold: GoldTrajectory, register: int) -> str:
  """The step a helper that follows the gold solution writes next: gold step i+1 (i = calculator
  steps accepted so far; flagged ones do not count), with the gold register names, which are the
  trajectory's own when the steps so far followed the gold order; Finish once past the last.
  Earlier mistakes are not repaired: a wrong value in R1 flows into a step that uses R1, as it
  would for a real model continuing the steps it was shown."""
  i = sum(1 for r in records if r.step.kind == "calc" and not r.superseded)
  if i >= len(gold.steps):
    return st.render("done", st.finish_action(gold.finish_expr()))
  return gold.steps[i].text(register)

"""A code task small enough for the tiny model (F8): write the Python expression of a function
from three of its input/output pairs; the reward runs it on hidden inputs in a sandbox.

  prompt:   "f(1)=4 f(2)=7 f(3)=10 f(x)="      solution: "3*x+1"

The completion is the body of `def f(x): return <completion>` and runs in `dacl.data.sandbox`
(static check, restricted builtins, resource limits, wall clock): an infinite loop, a fork bomb,
a memory hog or an attempt to read a file is a reward of 0, never a hung or crashed run. It
scores 1 when it matches the hidden function on every hidden input (0, 4, 5, 7, 10, -3), so
fitting only the three shown pairs (a lookup) fails.

Families (`forms`): "linear" a*x+b (a in ±1..9, b in -20..20), "quadratic" a*x*x+b*x+c (a in 1..3,
b in -5..5, c in -9..9): about 740 and 630 distinct functions. A problem's split is the hash of
the function itself (its canonical expression), like every other task (`dacl.data.splits`).
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from dacl.data.sandbox import Limits, run_programs
from dacl.data.splits import generator_seed
from dacl.data.tasks import Example, Task, TaskArgumentError, canonical_form, register_task

SHOWN = (1, 2, 3)
HIDDEN = (0, 4, 5, 7, 10, -3)


def _term(coef: int, var: str, first: bool) -> str:
  if coef == 0:
    return ""
  sign = "-" if coef < 0 else ("" if first else "+")
  mag = abs(coef)
  if not var:
    return f"{sign}{mag}"
  return f"{sign}{var}" if mag == 1 else f"{sign}{mag}*{var}"


def expression(coefs: tuple) -> str:
  """(a, b) -> a*x+b; (a, b, c) -> a*x*x+b*x+c, in the shortest plain form ("x*x-2*x+1")."""
  vars_ = ("x*x", "x", "") if len(coefs) == 3 else ("x", "")
  out = ""
  for c, v in zip(coefs, vars_):
    out += _term(c, v, not out)
  return out or "0"


def value(coefs: tuple, x: int) -> int:
  return sum(c * x ** p for c, p in zip(coefs, range(len(coefs) - 1, -1, -1)))


def expression_of(completion: str) -> str:
  """The completion's expression: after the last "####" if any (a cloud's reply), first line."""
  text = completion.split("####")[-1].strip()
  return text.splitlines()[0] if text else "None"


@register_task("fit_formula")
class FitFormulaTask(Task):
  """Write f's expression from f(1), f(2), f(3)."""

  def __init__(self, name: str = "code", forms=("linear", "quadratic"), limits: Limits = Limits(),
               prompt_format: str = "compact"):
    if prompt_format != "compact":
      raise TaskArgumentError(f"task 'fit_formula' has one prompt format, 'compact' (got "
                              f"{prompt_format!r})")
    forms = tuple(forms)
    bad = [f for f in forms if f not in ("linear", "quadratic")]
    if not forms or bad:
      raise TaskArgumentError(f"task 'fit_formula': forms must be linear and/or quadratic, got "
                              f"{forms!r}")
    self.name, self.forms, self.limits = name, forms, limits
    self.task_id = f"code|fit_formula|{','.join(forms)}"

  def _stream(self, seed: int) -> Iterator[Example]:
    rng = np.random.default_rng(generator_seed(self.task_id, seed))
    for _ in itertools.count():
      form = self.forms[int(rng.integers(len(self.forms)))]
      if form == "linear":
        a = int(rng.choice([v for v in range(-9, 10) if v]))
        coefs = (a, int(rng.integers(-20, 21)))
      else:
        coefs = (int(rng.integers(1, 4)), int(rng.integers(-5, 6)), int(rng.integers(-9, 10)))
      expr = expression(coefs)
      prompt = " ".join(f"f({x})={value(coefs, x)}" for x in SHOWN) + " f(x)="
      yield Example(prompt=prompt, answer=expr, solution=expr, task=self.name,
                    meta={"coefs": list(coefs), "form": form,
                          "canonical": canonical_form(f"{form}:{expr}")})

  def _hidden(self, ex: Example) -> list:
    return [value(tuple(ex.meta["coefs"]), x) for x in HIDDEN]

  def score_many(self, completions, examples) -> list:
    """Runs every completion in one sandboxed child (each program alone if the child dies)."""
    codes = [f"def f(x):\n  return {expression_of(c)}" for c in completions]
    runs = run_programs(codes, [[(x,) for x in HIDDEN]] * len(codes), limits=self.limits)
    out = []
    for r, ex in zip(runs, examples):
      want = self._hidden(ex)
      good = r.ok and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          and abs(v - w) < 1e-9 for v, w in zip(r.outputs, want))
      out.append(float(good))
    return out

  def score(self, completion: str, ex: Example) -> float:
    return self.score_many([completion], [ex])[0]

  def partial_credit_many(self, completions, examples) -> list:
    return [0.0] * len(completions)   # a formula's "closeness" is not its digits

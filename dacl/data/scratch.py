"""Scratchpad demonstrations for arithmetic expressions, in a form a tiny byte-level model can
learn (task argument `solution_format="scratch"`; F8).

One operation ("47+85", "23*60"): the result's digits least-significant first, then the result,
"231>132"; a negative result has its sign first, "-73>-37". Written that way, each digit depends
only on the operand digits at its position and the carry just written (Lee et al. 2023,
"Teaching arithmetic to small transformers": the reversed order is what lets small models learn
addition from few examples); the answer after ">" is a copy in reverse.
Several operations ("6+10*0"): one step per operation in precedence order, then the answer,
"10*0=0 6+0=6>6".

The answer is always the last number of the text, so `numeric_reward` scores a scratchpad, a
bare answer and a cloud's "#### 132" alike. The expression is parsed with `ast` (never
evaluated as code) and computed in exact fractions.
"""
from __future__ import annotations

import ast
from fractions import Fraction

from dacl.data.calculator import format_value

_OPS = {ast.Add: ("+", lambda a, b: a + b), ast.Sub: ("-", lambda a, b: a - b),
        ast.Mult: ("*", lambda a, b: a * b)}


def _reduce(node, steps: list) -> Fraction:
  if isinstance(node, ast.Constant) and isinstance(node.value, int):
    return Fraction(node.value)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    return -_reduce(node.operand, steps)
  if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
    a, b = _reduce(node.left, steps), _reduce(node.right, steps)
    sym, fn = _OPS[type(node.op)]
    v = fn(a, b)
    steps.append(f"{format_value(a)}{sym}{format_value(b)}={format_value(v)}")
    return v
  raise ValueError(f"no scratchpad for {ast.dump(node)} (integers with + - * only)")


def reversed_digits(v: Fraction) -> str:
  """-37 -> "-73": the sign first, then the magnitude's digits least-significant first.

  The sign goes first because it decides which operand the digits subtract from (23-60 is
  computed as 60-23 from the right). Written last (an earlier form, "73-"), the model had to
  emit digits before committing to the sign: the tiny model's held-out accuracy on 2-digit
  differences was 0.19-0.76 that way and 1.00 this way (BUILD_NOTES, F8)."""
  s = format_value(v)
  return ("-" if s.startswith("-") else "") + s.lstrip("-")[::-1]


def scratch_solution(expression: str) -> str:
  """The scratchpad of `expression` (+ - * over integers, brackets allowed)."""
  steps: list[str] = []
  value = _reduce(ast.parse(expression.replace(" ", ""), mode="eval").body, steps)
  answer = format_value(value)
  if len(steps) <= 1:
    return f"{reversed_digits(value)}>{answer}"
  return " ".join(steps) + f">{answer}"

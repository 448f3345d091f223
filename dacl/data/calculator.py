"""A whitelisted arithmetic evaluator over exact fractions: AdaSwitch's calculator tool, and the
exact answer of generated arithmetic problems (dacl.data.tasks).

`evaluate(expr, registers)` parses with `ast` (never `eval`) and accepts only numbers, the
registers R1..Rn, + - * / ** (integer exponent, |e| <= MAX_EXPONENT), unary minus/plus and
parentheses. Everything else -- names, attribute access, calls, subscripts, comparisons, huge
exponents or results, division by zero, an undefined register, an expression longer than
MAX_CHARS or nested deeper than MAX_DEPTH -- comes back as a CalcError whose message becomes
the Observation. It never raises and never hangs: work is bounded by MAX_CHARS and the caps on
exponents and magnitudes.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from fractions import Fraction
from typing import Mapping, Union

MAX_CHARS = 256          # an expression longer than this is refused before parsing
MAX_DEPTH = 32           # nesting of the syntax tree
MAX_EXPONENT = 16
MAX_ABS = Fraction(10) ** 40   # larger intermediate results are refused (no bignum blow-up)
REGISTER = re.compile(r"R([1-9][0-9]{0,2})\Z")


@dataclasses.dataclass(frozen=True)
class CalcError:
  message: str

  def __str__(self):
    return f"Error: {self.message}"


Result = Union[Fraction, CalcError]


class _Refused(Exception):
  pass


_MAX_ABS_INT = int(MAX_ABS)


def _check(x: Fraction) -> Fraction:
  # |n/d| > MAX_ABS as |n| > MAX_ABS*d in integers: Fraction's own abs and compare cost ~5x more
  # (this runs for every node of every generated arithmetic problem's exact answer)
  n, d = x.numerator, x.denominator
  if abs(n) > _MAX_ABS_INT * d:
    raise _Refused("result too large")
  if d > _MAX_ABS_INT:   # bounds repeated powers of small fractions as well
    raise _Refused("result needs too many digits")
  return x


def _eval(node, regs: Mapping[str, Fraction], depth: int) -> Fraction:
  if depth > MAX_DEPTH:
    raise _Refused("expression nested too deeply")
  if isinstance(node, ast.Expression):
    return _eval(node.body, regs, depth + 1)
  if isinstance(node, ast.Constant):
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      raise _Refused(f"unsupported literal {v!r}")
    if isinstance(v, float) and not (abs(v) < 1e40):
      raise _Refused("number too large")
    return _check(Fraction(str(v)) if isinstance(v, float) else Fraction(v))
  if isinstance(node, ast.Name):
    if not REGISTER.match(node.id):
      raise _Refused(f"unknown name {node.id!r} (only registers R1, R2, ... are defined)")
    if node.id not in regs:
      raise _Refused(f"register {node.id} is not defined yet")
    return regs[node.id]
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    v = _eval(node.operand, regs, depth + 1)
    return -v if isinstance(node.op, ast.USub) else v
  if isinstance(node, ast.BinOp):
    a = _eval(node.left, regs, depth + 1)
    b = _eval(node.right, regs, depth + 1)
    op = node.op
    if isinstance(op, ast.Add):
      return _check(a + b)
    if isinstance(op, ast.Sub):
      return _check(a - b)
    if isinstance(op, ast.Mult):
      return _check(a * b)
    if isinstance(op, ast.Div):
      if b == 0:
        raise _Refused("division by zero")
      return _check(a / b)
    if isinstance(op, ast.Pow):
      if b.denominator != 1 or abs(b) > MAX_EXPONENT:
        raise _Refused(f"exponent must be an integer with |e| <= {MAX_EXPONENT}")
      if a == 0 and b < 0:
        raise _Refused("division by zero")
      if abs(a.numerator) > 1 and abs(b) * len(str(abs(a.numerator))) > 48:
        raise _Refused("result too large")   # decided before computing a ** b
      if a.denominator > 1 and abs(b) * len(str(a.denominator)) > 48:
        raise _Refused("result needs too many digits")
      return _check(a ** int(b))
    raise _Refused(f"operator {type(op).__name__} is not allowed")
  raise _Refused(f"{type(node).__name__} is not allowed")


def evaluate(expr: str, registers: Mapping[str, Fraction] = None) -> Result:
  """The exact value of an arithmetic expression, or a CalcError. Never raises."""
  regs = dict(registers or {})
  if not isinstance(expr, str):
    return CalcError("expression is not text")
  if len(expr) > MAX_CHARS:
    return CalcError(f"expression longer than {MAX_CHARS} characters")
  text = expr.strip().replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
  if not text:
    return CalcError("empty expression")
  try:
    tree = ast.parse(text, mode="eval")
    return _eval(tree, regs, 0)
  except _Refused as e:
    return CalcError(str(e))
  except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError, ZeroDivisionError):
    return CalcError("not an arithmetic expression")


def format_value(x: Result) -> str:
  """How an Observation shows a value: integers plainly, other fractions as a short decimal."""
  if isinstance(x, CalcError):
    return str(x)
  if x.denominator == 1:
    return str(x.numerator)
  s = f"{float(x):.6f}".rstrip("0").rstrip(".")
  return s

"""Numeric answer extraction and comparison for verifiable tasks.

Order of preference: `#### X` (GSM8K), `\\boxed{X}`, "the answer is X", otherwise the last
number in the text. Thousands separators, signs, decimals, currency and trailing units are
tolerated: "$1,234.50 dollars" -> 1234.5.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

_NUM = r"[-+−]?\s*\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+−]?\.\d+"
_NUM_RE = re.compile(_NUM)
_HASH_RE = re.compile(r"####\s*(.+)")
_BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE)


def parse_number(s: str) -> Optional[float]:
  """The first number in s as a float ("1,234" -> 1234.0, "-3/4" -> -0.75), or None."""
  m = _NUM_RE.search(s)
  if not m:
    return None
  tok = m.group(0).replace(",", "").replace("$", "").replace(" ", "").replace("−", "-")
  try:
    if "/" in tok:
      return float(Fraction(tok))
    return float(tok)
  except (ValueError, ZeroDivisionError):
    return None


def extract_answer(text: str) -> Optional[float]:
  """The final numeric answer of a completion, or None when there is none."""
  if text is None:
    return None
  for rx in (_HASH_RE, _BOXED_RE):
    ms = list(rx.finditer(text))
    if ms:
      v = parse_number(ms[-1].group(1))
      if v is not None:
        return v
  ms = list(_ANSWER_IS_RE.finditer(text))
  if ms:
    v = parse_number(ms[-1].group(1))
    if v is not None:
      return v
  nums = list(_NUM_RE.finditer(text))
  for m in reversed(nums):
    v = parse_number(m.group(0))
    if v is not None:
      return v
  return None


def numbers_match(a: Optional[float], b: Optional[float]) -> bool:
  """Equal up to float round-off only: 131073013 != 131073014, 0.1 + 0.2 == 0.3."""
  if a is None or b is None:
    return False
  return abs(a - b) <= 1e-6 + 1e-12 * abs(b)


def numeric_reward(completion: str, gold: str) -> float:
  """1.0 when the completion's final number equals the gold answer's, else 0.0."""
  g = extract_answer(gold)
  if g is None:
    raise ValueError(f"gold answer {gold!r} has no number")
  return float(numbers_match(extract_answer(completion), g))


def digit_credit(completion: str, gold: str) -> float:
  """Partial credit for an integer answer: the share of digit places (aligned from the units
  digit, over the longer of the two numbers) where the completion's final number agrees with
  the gold; 0.0 for a wrong sign, a non-integer on either side or no number. "1323" against
  gold "1423" -> 0.75; "423" -> 0.75 (three places right of four); an exact match -> 1.0."""
  g, p = extract_answer(gold), extract_answer(completion)
  if g is None or p is None or g != int(g) or p != int(p) or (g < 0) != (p < 0):
    return 0.0
  a, b = str(abs(int(p))), str(abs(int(g)))
  short = min(len(a), len(b))   # places beyond the shorter number count as wrong
  right = sum(x == y for x, y in zip(a[-short:], b[-short:]))
  return right / max(len(a), len(b))

"""AdaSwitch's step format, one step at a time (DESIGN.md, "AdaSwitch"):

  Thought: add 45 and 23
  Action: R1 = Calculator(23+45)          or   Action: Finish(R2)
  Observation: 68                          (written by the host tool runner, never generated)
  Reflection: Is previous step wrong: No   (or Yes)

A trajectory is the question followed by such steps. As token sequences it is a list of
*segments*, each with a role that decides its loss weight in each training stage:

  question     the prompt (never trained)
  step         "Thought: ...\\nAction: ...\\nObservation:"   -- the model writes it; "Observation:"
               is its tool-call stop, so it is part of what the model learns to emit
  observation  " 68\\n"                                       -- host-written: always masked
  reflect_q    "Reflection: Is previous step wrong: "        -- host-written: always masked
  reflect_a    "Yes\\n" / "No\\n"                              -- the reflection itself

Segments are encoded one by one and concatenated, in training and at inference alike, so both
see the same token ids.
"""
from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Optional

from dacl.data.calculator import CalcError, evaluate, format_value

OBS = "Observation:"
REFLECT_Q = "Reflection: Is previous step wrong: "
YES, NO = "Yes\n", "No\n"

_ACTION_CALC = re.compile(r"^R(\d+)\s*=\s*Calculator\((.*)\)\s*$")
_ACTION_FINISH = re.compile(r"^Finish\((.*)\)\s*$")


@dataclasses.dataclass(frozen=True)
class Step:
  """A parsed step. kind: "calc" (R<register> = Calculator(expr)), "finish" (Finish(expr)) or
  "malformed" (anything else; it counts as a wrong step). text: as it goes into the context."""
  kind: str
  thought: str = ""
  expr: str = ""
  register: Optional[int] = None
  text: str = ""
  error: str = ""

  @property
  def ok(self) -> bool:
    return self.kind != "malformed"


def render(thought: str, action: str) -> str:
  return f"Thought: {thought}\nAction: {action}\n{OBS}"


def calc_action(register: int, expr: str) -> str:
  return f"R{register} = Calculator({expr})"


def finish_action(expr: str) -> str:
  return f"Finish({expr})"


def parse_step(text: str, next_register: int) -> Step:
  """Parse generated step text (up to, or including, the "Observation:" stop). A step whose
  register is not the next one (R<next_register>) is malformed."""
  body = text.split(OBS, 1)[0]
  lines = [l.strip() for l in body.strip().splitlines() if l.strip()]
  raw = body.rstrip("\n") + "\n" + OBS if body.strip() else OBS
  thought = next((l[len("Thought:"):].strip() for l in lines if l.startswith("Thought:")), None)
  action = next((l[len("Action:"):].strip() for l in lines if l.startswith("Action:")), None)
  if thought is None or action is None:
    return Step("malformed", text=raw, error="a step needs a Thought: line and an Action: line")
  m = _ACTION_CALC.match(action)
  if m:
    k = int(m.group(1))
    if k != next_register:
      return Step("malformed", thought, m.group(2), k, raw,
                  f"expected register R{next_register}, got R{k}")
    return Step("calc", thought, m.group(2).strip(), k, render(thought, calc_action(k, m.group(2).strip())))
  m = _ACTION_FINISH.match(action)
  if m:
    return Step("finish", thought, m.group(1).strip(), None,
                render(thought, finish_action(m.group(1).strip())))
  return Step("malformed", thought, text=raw, error=f"unknown action {action[:40]!r}")


OBS_MAX_CHARS = 60   # an Observation is at most this long (error messages are cut)


def run_tool(step: Step, registers: dict) -> tuple:
  """(value or CalcError, observation text) for a parsed step; registers gain R<k> on success.
  A malformed step's observation is its parse error. Observations are at most OBS_MAX_CHARS."""
  if not step.ok:
    return CalcError(step.error), f" Error: {step.error}"[:OBS_MAX_CHARS] + "\n"
  value = evaluate(step.expr, registers)
  if step.kind == "calc" and not isinstance(value, CalcError):
    registers[f"R{step.register}"] = value
  return value, f" {format_value(value)}"[:OBS_MAX_CHARS] + "\n"


@dataclasses.dataclass
class StepRecord:
  """One step of a trajectory as it happened: who wrote it, its value, and its reflection."""
  step: Step
  observation: str
  value: object            # Fraction or CalcError
  author: str              # "local" | "cloud" | "gold"
  wrong: bool = False      # reflection "Yes" (flagged) in the text
  p_yes: Optional[float] = None
  superseded: bool = False  # flagged and replaced by the next step


def segments(question_text: str, records: list) -> list:
  """[(role, text, record index or -1)] of a trajectory, in order."""
  out = [("question", question_text, -1)]
  for i, r in enumerate(records):
    out += [("step", r.step.text, i), ("observation", r.observation, i),
            ("reflect_q", REFLECT_Q, i), ("reflect_a", YES if r.wrong else NO, i)]
  return out


def value_of(x) -> Optional[Fraction]:
  return None if isinstance(x, CalcError) or x is None else Fraction(x)

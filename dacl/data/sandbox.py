"""Running model-written Python against hidden tests, in a sandboxed subprocess (F8's code task).

Layers, each enough to stop the failures the tests try (infinite loop, fork bomb, memory hog,
file access, network):
  1. Static check (in this process, nothing executed): the program must parse, may use only
     whitelisted syntax (no import statements, no attribute or name starting with "_", no
     `global`/`nonlocal`, at most `max_chars`), and may call only whitelisted builtins.
  2. A fresh `python -I -S` child in its own session, in an empty temporary directory, with an
     empty environment; its builtins are cut down to a whitelist (no `open`, `exec`, `eval`,
     `compile`, `input`, `globals`, `getattr`...), `__import__` admits only `allowed_modules`
     (default: math), so `os`, `socket`, `subprocess` are unreachable.
  3. Resource limits set in the child before the program runs: CPU seconds, address space,
     no new processes (RLIMIT_NPROC 0; not enforced for root, where layer 2 and the wall
     clock stand), no file writes (RLIMIT_FSIZE 0), few open files.
  4. A wall-clock deadline in the parent; on expiry the child's whole process group is killed.

Every failure (rejected, raised, timed out, killed, garbage output) is a result with ok=False,
never an exception in the caller. Python cannot be made a true security boundary by these means
alone; on shared machines also run the trainer in a container without network.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Sequence

SAFE_BUILTINS = ("abs", "min", "max", "sum", "len", "range", "int", "float", "bool", "round",
                 "pow", "divmod", "sorted", "reversed", "enumerate", "zip", "map", "filter",
                 "all", "any", "list", "tuple", "dict", "set", "str", "isinstance", "ValueError",
                 "ZeroDivisionError", "Exception", "True", "False", "None")
_BANNED_NODES = (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.AsyncFunctionDef,
                 ast.Await, ast.Yield, ast.YieldFrom, ast.With, ast.AsyncWith, ast.Try)


@dataclasses.dataclass(frozen=True)
class Limits:
  wall_s: float = 5.0          # the whole batch, parent-side
  cpu_s: int = 2                # the whole child (a C-level hog that no timer interrupts)
  program_cpu_s: float = 0.2   # one program, all its inputs
  memory_mb: int = 256
  max_chars: int = 2000
  allowed_modules: tuple = ("math",)


@dataclasses.dataclass
class RunResult:
  ok: bool                     # ran to completion (outputs may still be wrong)
  outputs: list                # one per test input (None where the call raised)
  error: str = ""


def static_check(code: str, limits: Limits = Limits()) -> str:
  """"" when `code` may run, else why not."""
  if len(code) > limits.max_chars:
    return f"program longer than {limits.max_chars} characters"
  try:
    tree = ast.parse(code)
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
    return f"does not parse: {type(e).__name__}"
  for node in ast.walk(tree):
    if isinstance(node, _BANNED_NODES):
      return f"{type(node).__name__} is not allowed"
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
      return f"attribute {node.attr!r} is not allowed"
    if isinstance(node, ast.Name) and node.id.startswith("_"):
      return f"name {node.id!r} is not allowed"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in ("open", "exec", "eval", "compile", "input", "globals", "locals",
                             "vars", "getattr", "setattr", "delattr", "breakpoint", "help")):
      return f"call of {node.func.id!r} is not allowed"
  return ""


_HARNESS = r'''
import json, resource, signal, sys
spec = json.loads(sys.stdin.read())
lim = spec["limits"]
resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"]))
mem = lim["memory_mb"] * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
try:
  resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
except (ValueError, OSError):
  pass
import builtins, math
allowed = set(lim["allowed_modules"])
real_import = builtins.__import__
def guarded_import(name, *a, **k):
  if name.split(".")[0] not in allowed:
    raise ImportError("import of " + name + " is not allowed")
  return real_import(name, *a, **k)
safe = {n: getattr(builtins, n) for n in spec["builtins"] if hasattr(builtins, n)}
safe["__import__"] = guarded_import
class ProgramTimeout(BaseException):
  pass
def on_alarm(*_):
  raise ProgramTimeout()
signal.signal(signal.SIGPROF, on_alarm)
out = []
for prog in spec["programs"]:
  env = {"__builtins__": safe, "math": math}
  signal.setitimer(signal.ITIMER_PROF, lim["program_cpu_s"])
  try:
    exec(compile(prog["code"], "<program>", "exec"), env)
    fn = env.get(prog["entry"])
    if not callable(fn):
      out.append({"error": "no function " + prog["entry"]})
      continue
    res = []
    for args in prog["inputs"]:
      try:
        v = fn(*args)
        res.append(v if isinstance(v, (int, float, str, bool)) or v is None else repr(v))
      except Exception as e:
        res.append(None)
    out.append({"outputs": res})
  except BaseException as e:
    out.append({"error": type(e).__name__})
  finally:
    signal.setitimer(signal.ITIMER_PROF, 0)
sys.stdout.write(json.dumps(out))
'''


def _run_child(programs: list, limits: Limits) -> list | str:
  """One sandboxed child for a batch: the list of per-program results, or a failure string."""
  spec = json.dumps({"programs": programs, "builtins": list(SAFE_BUILTINS),
                     "limits": dataclasses.asdict(limits)})
  with tempfile.TemporaryDirectory(prefix="dacl-sandbox-") as tmp:
    p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HARNESS], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp, env={},
                         start_new_session=True)
    try:
      out, _ = p.communicate(spec.encode(), timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
      out = None
    finally:
      try:
        os.killpg(p.pid, signal.SIGKILL)   # the child and anything it started
      except (ProcessLookupError, PermissionError):
        pass
      p.wait()
  if out is None:
    return "timeout"
  if p.returncode != 0:
    return f"child exited with {p.returncode}"
  try:
    res = json.loads(out.decode() or "null")
  except (ValueError, UnicodeDecodeError):
    return "garbage output"
  if not isinstance(res, list) or len(res) != len(programs):
    return "garbage output"
  return res


def run_programs(codes: Sequence[str], inputs: Sequence[Sequence[tuple]], entry: str = "f",
                 limits: Limits = Limits()) -> list[RunResult]:
  """Runs each program's function `entry` on its inputs. Programs failing the static check never
  reach the child; the rest run in one sandboxed child, and if that child fails as a whole
  (timeout, memory, crash), each runs alone so the failure lands on the program that caused it."""
  results: list = [None] * len(codes)
  todo = []
  for i, code in enumerate(codes):
    why = static_check(code, limits)
    if why:
      results[i] = RunResult(False, [None] * len(inputs[i]), why)
    else:
      todo.append(i)
  progs = lambda idx: [{"code": codes[i], "entry": entry, "inputs": [list(a) for a in inputs[i]]}
                       for i in idx]

  def fill(idx, res):
    for i, r in zip(idx, res):
      if "error" in r:
        results[i] = RunResult(False, [None] * len(inputs[i]), r["error"])
      else:
        results[i] = RunResult(True, r["outputs"])

  if todo:
    res = _run_child(progs(todo), limits)
    if isinstance(res, list):
      fill(todo, res)
    elif len(todo) == 1:
      results[todo[0]] = RunResult(False, [None] * len(inputs[todo[0]]), res)
    else:
      for i in todo:
        one = _run_child(progs([i]), limits)
        if isinstance(one, list):
          fill([i], one)
        else:
          results[i] = RunResult(False, [None] * len(inputs[i]), one)
  return results

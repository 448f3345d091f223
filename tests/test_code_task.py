"""The code task (F8): model-written expressions run against hidden tests in a sandbox; every
hostile program ends as a failed reward, quickly, never as a hang or a crash."""
import os
import time

import pytest

from dacl.data.sandbox import Limits, _run_child, run_programs, static_check
from dacl.data.tasks import make_task

HOSTILE = {
    "infinite loop": "def f(x):\n  while True:\n    pass",
    "fork bomb": "import os\ndef f(x):\n  while True:\n    os.fork()",
    "fork via __import__": "def f(x):\n  return __import__('os').fork()",
    "memory hog": "def f(x):\n  return len([0] * 10**10)",
    "big-int hog": "def f(x):\n  return 10**10**9",
    "read a file": "def f(x):\n  return open('/etc/passwd').read()",
    "escape via dunders": "def f(x):\n  return ().__class__.__bases__[0].__subclasses__()",
    "network": "import socket\ndef f(x):\n  return socket.socket()",
    "exec": "def f(x):\n  return exec('1')",
    "syntax error": "def f(x) return x",
    "10 kB program": "def f(x):\n  return " + "+".join(["x"] * 5000),
}


def test_hostile_programs_fail_fast_and_the_good_one_in_the_batch_survives():
  codes = ["def f(x):\n  return 3*x+1", *HOSTILE.values()]
  t = time.perf_counter()
  res = run_programs(codes, [[(1,), (2,)]] * len(codes))
  assert time.perf_counter() - t < 30
  assert res[0].ok and res[0].outputs == [4, 7]
  for (name, _), r in zip(HOSTILE.items(), res[1:]):
    assert not r.ok or all(v is None for v in r.outputs), name


def test_the_child_layer_alone_blocks_imports_files_and_forks():
  """Without the static check: the child's builtins and import guard still refuse."""
  progs = [{"code": c, "entry": "f", "inputs": [[1]]} for c in (
      "import os\ndef f(x):\n  return os.fork()",
      "def f(x):\n  return open('/etc/hostname').read()",
      "import socket\ndef f(x):\n  return 1",
      "def f(x):\n  return math.floor(2.5)")]
  res = _run_child(progs, Limits())
  assert [("error" in r) for r in res] == [True, False, True, False]
  assert res[1]["outputs"] == [None]      # NameError: no `open`
  assert res[3]["outputs"] == [2]


def test_wall_clock_kills_the_child():
  lim = Limits(wall_s=1.0, cpu_s=60, program_cpu_s=60.0)
  t = time.perf_counter()
  res = _run_child([{"code": "def f(x):\n  while True:\n    pass", "entry": "f",
                     "inputs": [[1]]}], lim)
  assert res == "timeout" and time.perf_counter() - t < 5


def test_static_check():
  assert static_check("def f(x):\n  return 3*x+1") == ""
  assert "Import" in static_check("import os")
  assert "attribute" in static_check("x.__dict__")


def test_fit_formula_task():
  t = make_task("fit_formula")
  exs = t.examples("eval", 30, seed=0)
  assert all(e.meta["split"] == "eval" for e in exs)
  assert t.score_many([e.solution for e in exs], exs) == [1.0] * 30
  # a lookup of the three shown pairs is not the function
  e = next(x for x in exs if x.meta["form"] == "quadratic")
  ys = [int(p.split("=")[1]) for p in e.prompt.split()[:3]]
  lookup = f"{ys[0]} if x==1 else {ys[1]} if x==2 else {ys[2]}"
  assert t.score(lookup, e) == 0.0
  assert t.score("#### " + e.solution, e) == 1.0          # a cloud's reply
  assert t.score_many(list(HOSTILE.values())[:4], exs[:4]) == [0.0] * 4
  with pytest.raises(Exception, match="forms"):
    make_task("fit_formula", forms=("cubic",))
  # disjoint splits by the function itself
  train = {x.canonical for x in t.examples("train", 400, seed=0)}
  assert not train & {x.canonical for x in exs}

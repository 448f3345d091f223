"""`dacl report DIR`: tables on stdout and plots in DIR/plots from results.json + metrics.jsonl."""
from __future__ import annotations

import json
import os

from dacl.metrics import read_jsonl


def results_table(results: dict) -> "rich.table.Table":
  from rich.table import Table
  t = Table(title=f"dacl results — {results.get('algorithm', '?')} on {results.get('task', '?')}")
  for col in ("task", "model", "steps", "eval examples", "accuracy"):
    t.add_column(col, justify="right" if col in ("steps", "eval examples", "accuracy") else "left")
  t.add_row(str(results.get("task")), str(results.get("model")), str(results.get("steps")),
            str(results.get("eval_examples")), f"{results.get('accuracy', float('nan')):.3f}")
  return t


def examples_table(results: dict):
  from rich.table import Table
  t = Table(title="sample completions (greedy)")
  for col in ("prompt", "completion", "gold", "ok"):
    t.add_column(col)
  for e in results.get("examples", [])[:8]:
    t.add_row(e["prompt"][-40:], repr(e["completion"][:40]), e["gold"], "✓" if e["score"] else "✗")
  return t


def print_tables(results: dict) -> None:
  from rich.console import Console
  c = Console(width=120)
  c.print(results_table(results))
  if results.get("examples"):
    c.print(examples_table(results))


def write_plots(workdir: str) -> list[str]:
  """Loss and eval accuracy over steps -> DIR/plots/*.png. Returns the paths written."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = read_jsonl(path)
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  written = []
  for key, ylabel in (("loss", "training loss"), ("eval_accuracy", "eval accuracy")):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
      continue
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(*zip(*pts), marker="o" if key == "eval_accuracy" else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = os.path.join(workdir, "plots", f"{key}.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written.append(out)
  return written


def report(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a finished dacl run directory?")
  with open(path) as f:
    results = json.load(f)
  print_tables(results)
  for p in write_plots(workdir):
    print(f"plot: {p}")
  return results

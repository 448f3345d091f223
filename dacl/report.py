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


def _f(x, nd=3):
  return "—" if x is None else f"{x:.{nd}f}"


def _pm(a: dict, k: str) -> str:
  sd = a.get(k + "_std")
  return f"{a[k]:.3f}" + (f"±{sd:.3f}" if sd is not None else "")


def data_table(results: dict):
  """Per task (first seed): problem-space size next to the training pools and the held-out set."""
  from rich.table import Table
  data = results.get("data") or {}
  if not data:
    return None
  seed, per_task = next(iter(data.items()))
  t = Table(title=f"data ({seed}): held-out problems are disjoint from every training pool")
  for col in ("task", "problem space (distinct seen / Chao1 est.)", "warm-start pool (distinct)",
              "RL pool (distinct)", "held-out eval", "overlap"):
    t.add_column(col, justify="left" if col == "task" else "right")
  for name, d in per_task.items():
    sp, pools = d["space"], d["train_pools"]
    est = "exact" if sp.get("exact") else f"~{sp['chao1']}"
    pool = lambda k: f"{pools[k]['n']} ({pools[k]['distinct']})" if k in pools else "—"
    t.add_row(name, f"{sp['distinct_seen']} / {est}", pool("warmstart"), pool("rl"),
              str(d["eval"]["n"]), str(d["eval_train_overlap"]))
  return t


def rl_tables(results: dict) -> list:
  """Summary per algorithm (mean ± std over seeds, ddof 1) and the R / L / U matrices."""
  from rich.table import Table
  tau = results["budget"]
  algos = results["algorithms"]
  t = Table(title=f"DA-GRPO stream {' → '.join(results['tasks'])} — budget τ={tau}, "
                  f"cloud: {results.get('cloud', '?')}; held-out problems; ± = std over seeds")
  for col in ("algorithm", "ACC", "ACC (cap τ)", "BWT", "forgetting", "post-switch acc",
              "usage last ¼ (τ)", "cloud calls (mean/run)", "seeds"):
    t.add_column(col, justify="left" if col == "algorithm" else "right")
  for name, a in algos.items():
    t.add_row(name, _pm(a, "ACC"), _pm(a, "ACC_cap"), _pm(a, "BWT"),
              " ".join(_f(v, 2) for v in a["forgetting"]),
              " ".join(_f(v, 2) for v in a["post_switch_accuracy"]),
              " ".join(_f(v, 2) for v in a["usage_last_quarter"]),
              f"{a['cloud_calls']:.0f}", str(a.get("n_seeds", len(a.get("per_seed", [])) or 1)))
  out = [t]
  if any("offload_auroc" in a for a in algos.values()):
    o = Table(title=f"Offload quality after the stream, per task ({', '.join(results['tasks'])}): "
                    f"local accuracy before RL → after; AUROC of the offload score for 'local "
                    f"answer wrong'; accuracy with exactly ⌊τ·n⌋ offloads chosen by the method / "
                    f"at random / by an oracle; L gain right after each task's own training: "
                    f"problems gained / lost against the warm start and the exact McNemar p "
                    f"(pooled over seeds)")
    for col in ("algorithm", "score", "L warm start → after", "L gain: +won −lost (p)",
                "AUROC (warm start → after)", "acc at budget: policy / random / oracle"):
      o.add_column(col, justify="left" if col in ("algorithm", "score") else "right")
    for name, a in algos.items():
      if "offload_auroc" not in a:
        continue
      o.add_row(name, str(a.get("offload_score", "")),
                "  ".join(f"{_f(i, 2)}→{_f(l, 2)}" for i, l in zip(a["L_init"], a["L"][-1])),
                "  ".join(f"+{g['gained']} −{g['lost']} ({g['p']:.2g})"
                          for g in a.get("L_gain") or []) or "—",
                "  ".join(f"{_f(i, 2)}→{_f(v, 2)}" for i, v in
                          zip(a["offload_auroc_init"], a["offload_auroc"])),
                "  ".join("—" if b is None else
                          f"{b['policy']:.2f}/{b['random']:.2f}/{b['oracle']:.2f}"
                          for b in a["acc_at_budget"]))
    out.append(o)
  dt = data_table(results)
  if dt is not None:
    out.append(dt)
  for name, a in algos.items():
    m = Table(title=f"{name}: row k = after training task k; R (collab) / L (local) / U (usage)")
    m.add_column("after")
    for task in results["tasks"]:
      m.add_column(task, justify="right")
    for k, task in enumerate(results["tasks"][:len(a["R"])]):
      m.add_row(task, *[f"{a['R'][k][j]:.2f} / {a['L'][k][j]:.2f} / {a['U'][k][j]:.2f}"
                        for j in range(len(results["tasks"]))])
    out.append(m)
  return out


def print_eval(ev: dict) -> None:
  """`dacl eval` output of any job: RL run directories have "runs", SFT a single result."""
  if ev.get("algorithm") == "adaswitch":
    from rich.console import Console
    c = Console(width=140)
    for run, r in ev["runs"].items():
      for t in adaswitch_tables({"modes": r["modes"], "eval_tasks": ev["eval_tasks"],
                                 "cloud": ev["cloud"], "n_seeds": 1})[:1]:
        t.title = f"{run} (checkpoint {r['step']}): " + str(t.title)
        c.print(t)
  elif "runs" in ev:
    print_eval_table(ev)
  else:
    print_tables(ev)


def print_eval_table(ev: dict) -> None:
  """`dacl eval` of an RL run directory: R / R_cap / L / U per run and task."""
  from rich.console import Console
  from rich.table import Table
  t = Table(title=f"dacl eval — budget τ={ev['budget']}; cells: R / R_cap / L / U")
  t.add_column("run (checkpoint step)")
  for name in ev["tasks"]:
    t.add_column(name, justify="right")
  for run, r in ev["runs"].items():
    t.add_row(f"{run} ({r['step']})", *[f"{x['R']:.2f} / {x['R_cap']:.2f} / {x['L']:.2f} / {x['U']:.2f}"
                                        for x in r["per_task"]])
  Console(width=140).print(t)


def _pmk(d: dict, k: str, nd: int = 3) -> str:
  sd = d.get(k + "_std")
  v = d[k]
  body = f"{v:.{nd}f}" if isinstance(v, float) else f"{v:,}"
  return body + (f"±{sd:.{nd}f}" if isinstance(sd, float) and isinstance(v, float) else "")


def adaswitch_tables(results: dict) -> list:
  """Modes, ablations and the threshold sweep of an AdaSwitch run (mean ± std over seeds)."""
  from rich.table import Table
  n = results.get("n_seeds", 1)
  title = (f"AdaSwitch on {', '.join(results.get('eval_tasks', results.get('tasks', [])))} — "
           f"held-out problems, cloud: {results.get('cloud', '?')}; {n} seed(s)")
  t = Table(title=title)
  for col in ("mode", "accuracy", "cloud calls", "local tokens", "cloud tokens", "FLOPs",
              "steps local / cloud", "switch rate"):
    t.add_column(col, justify="left" if col == "mode" else "right")
  for name, m in results["modes"].items():
    t.add_row(name, _pmk(m, "accuracy"), f"{m['cloud_calls']:,}", f"{m['local_tokens']:,}",
              f"{m['cloud_tokens']:,}", f"{m['flops']:.3g}",
              f"{m.get('steps_local', 0):,} / {m.get('steps_cloud', 0):,}", f"{m['switch_rate']:.3f}")
  out = [t]
  ada = results["modes"]["adaswitch"]["accuracy"]
  a = Table(title="ablations (threshold as in adaswitch mode)")
  for col in ("ablation", "accuracy", "Δ vs adaswitch", "cloud tokens"):
    a.add_column(col, justify="left" if col == "ablation" else "right")
  for name, m in results.get("ablations", {}).items():
    a.add_row(name, _pmk(m, "accuracy"), f"{m['accuracy'] - ada:+.3f}", f"{m['cloud_tokens']:,}")
  out.append(a)
  w = Table(title="threshold sweep (adaswitch mode)")
  for col in ("P(Yes) threshold", "accuracy", "cloud tokens", "switch rate"):
    w.add_column(col, justify="right")
  for r in results.get("threshold_sweep", []):
    w.add_row(f"{r['threshold']:g}", _pmk(r, "accuracy"), f"{r['cloud_tokens']:,}",
              f"{r['switch_rate']:.3f}")
  out.append(w)
  rf = results.get("reflection")
  if rf:
    f3 = lambda xs: ", ".join("—" if x is None else f"{x:.2f}" for x in xs)
    th, th_sd = rf["threshold"]
    out.append(f"switching threshold P(Yes) > {th:.3g}"
               f"{'' if th_sd is None else f' ± {th_sd:.2g}'} (chosen on train-split problems); "
               f"reflection AUROC for wrong steps: calibration {f3(rf['calibration_auroc'])}, "
               f"held-out {f3(rf['eval_auroc'])} ({rf['eval_wrong_steps']} wrong of "
               f"{rf['eval_steps']} held-out local steps)")
  g = results.get("goal")
  if g:
    f = lambda x: "—" if x is None else f"{x:.2f}"
    out.append(f"goal: beats local {g['beats_local']}, beats self_reflection "
               f"{g['beats_self_reflection']}, local→cloud gap closed {f(g['gap_closed'])} "
               f"(goal ≥ 0.5), cloud tokens vs cloud-only {f(g['cloud_token_share'])} (goal ≤ 0.30)")
  return out


def write_adaswitch_plots(workdir: str, results: dict) -> list[str]:
  """Accuracy against cloud tokens per problem over the threshold sweep, with the local,
  self-reflection and cloud-only modes as reference points -> plots/adaswitch_tradeoff.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  modes = results["modes"]
  n = max(1, modes["cloud"].get("n", 0) or 1)
  per = lambda m: m["cloud_tokens"] / n
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  sw = results.get("threshold_sweep", [])
  if sw:
    ax.plot([per(r) for r in sw], [r["accuracy"] for r in sw], "o-", color="tab:blue",
            label="adaswitch (threshold sweep)")
    for r in sw:
      ax.annotate(f"{r['threshold']:g}", (per(r), r["accuracy"]), fontsize=7,
                  textcoords="offset points", xytext=(3, 3))
  for name, color, marker in (("local", "tab:gray", "s"), ("self_reflection", "tab:green", "^"),
                              ("cloud", "tab:red", "D"), ("adaswitch", "tab:blue", "*")):
    m = modes[name]
    ax.errorbar([per(m)], [m["accuracy"]], yerr=[m.get("accuracy_std") or 0], fmt=marker,
                color=color, ms=10 if name == "adaswitch" else 7, label=name)
  ax.set_title("AdaSwitch: accuracy vs cloud tokens (held-out)", fontsize=10)
  return [_finish(fig, ax, "cloud tokens per problem", "accuracy",
                  os.path.join(workdir, "plots", "adaswitch_tradeoff.png"), legend=True)]


def coplms_tables(results: dict) -> list:
  """Co-PLMs vs its baselines (mean ± std over seeds), per SLM, and per round."""
  from rich.table import Table
  n = results.get("n_seeds", 1)
  blocks = {"coplms": results["final"], **results.get("baselines", {})}
  by = results.get("bytes_per_round_by_method", {})
  t = Table(title=f"Co-PLMs on {', '.join(results['domains'])} — held-out problems; {n} seed(s); "
                  f"SLMs on their own domain, the LLM on every domain")
  for col in ("method", "SLM mean EM", "SLM mean Rouge-L", "LLM mean EM", "LLM mean Rouge-L",
              "bytes / round"):
    t.add_column(col, justify="left" if col == "method" else "right")
  for name, b in blocks.items():
    t.add_row(name, _pmk(b, "slm_mean_em"), _pmk(b, "slm_mean_rouge_l"), _pmk(b, "llm_mean_em"),
              _pmk(b, "llm_mean_rouge_l"), f"{by.get(name, 0):,}")
  out = [t]
  s = Table(title="per SLM: EM / Rouge-L on its domain")
  s.add_column("SLM (domain)")
  for name in blocks:
    s.add_column(name, justify="right")
  for slm, m in results["final"]["slms"].items():
    s.add_row(f"{slm} ({m['domain']})", *[f"{b['slms'][slm]['em']:.3f} / {b['slms'][slm]['rouge_l']:.3f}"
                                          for b in blocks.values()])
  out.append(s)
  r = Table(title=f"Co-PLMs per round (bytes: proxies up and down; sending the SLMs whole would "
                  f"be {results.get('bytes_full_models', 0):,} bytes per round)")
  for col in ("round", "SLM mean EM", "SLM mean Rouge-L", "LLM mean EM", "bytes", "edge s",
              "cloud s", "eval s"):
    r.add_column(col, justify="right")
  for x in results.get("rounds", []):
    w = x["wall_s"]
    r.add_row(str(x["round"]), f"{x['slm_mean_em']:.3f}", f"{x['slm_mean_rouge_l']:.3f}",
              f"{x['llm_mean_em']:.3f}", f"{x['bytes']:,}", f"{w['edge']:.1f}", f"{w['cloud']:.1f}",
              f"{w['eval']:.1f}")
  out.append(r)
  return out


def write_coplms_plots(workdir: str, results: dict) -> list[str]:
  """SLM mean EM / Rouge-L and LLM mean EM over rounds (Co-PLMs), with each baseline's final SLM
  mean EM as a dashed line -> plots/coplms_rounds.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  rounds = results.get("rounds", [])
  xs = [x["round"] for x in rounds]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  ax.plot(xs, [x["slm_mean_em"] for x in rounds], "o-", label="Co-PLMs: SLM mean EM")
  ax.plot(xs, [x["slm_mean_rouge_l"] for x in rounds], "s-", label="Co-PLMs: SLM mean Rouge-L")
  ax.plot(xs, [x["llm_mean_em"] for x in rounds], "^-", label="Co-PLMs: LLM mean EM")
  for i, (name, b) in enumerate(results.get("baselines", {}).items()):
    ax.axhline(b["slm_mean_em"], ls="--", lw=1, color=plt.cm.tab10(i + 3), label=f"{name}: SLM mean EM")
  ax.set_title("Co-PLMs over rounds (held-out)", fontsize=10)
  return [_finish(fig, ax, "round", "score", os.path.join(workdir, "plots", "coplms_rounds.png"),
                  legend=True)]


def print_tables(results: dict) -> None:
  from rich.console import Console
  c = Console(width=140)
  if results.get("algorithm") == "coplms":
    for t in coplms_tables(results):
      c.print(t)
    return
  if results.get("algorithm") == "adaswitch" and "modes" in results:
    for t in adaswitch_tables(results):
      c.print(t)
    return
  if "algorithms" in results:
    for t in rl_tables(results):
      c.print(t)
    return
  c.print(results_table(results))
  if results.get("examples"):
    c.print(examples_table(results))


def write_plots(workdir: str, results: dict = None) -> list[str]:
  """Plots of a finished run: the RL stream's (results with "algorithms"), else loss and eval
  accuracy over steps -> DIR/plots/*.png. Returns the paths written."""
  if results and "algorithms" in results:
    return write_rl_plots(workdir, results)
  if results and results.get("algorithm") == "adaswitch":
    return write_adaswitch_plots(workdir, results)
  if results and results.get("algorithm") == "coplms":
    return write_coplms_plots(workdir, results)
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
    written.append(_finish(fig, ax, "step", ylabel, os.path.join(workdir, "plots", f"{key}.png")))
  return written


def _finish(fig, ax, xlabel, ylabel, out, legend=False) -> str:
  import matplotlib.pyplot as plt
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def write_rl_plots(workdir: str, results: dict) -> list[str]:
  """Per algorithm and seed: training accuracy per task over steps, cloud rate against τ,
  λ over steps -> DIR/plots/{accuracy,cloud_rate,lambda}.png."""
  import glob
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = sorted(glob.glob(os.path.join(workdir, "runs", "*", "metrics.jsonl")))
  if not runs:
    return []
  os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
  tau = results.get("budget")
  algos = sorted({os.path.basename(os.path.dirname(p)).rpartition("_s")[0] for p in runs})
  written = []
  for key, ylabel, fname in (("reward_mean", "training accuracy (with collaboration)", "accuracy"),
                             ("cloud_rate", "cloud-usage rate", "cloud_rate"),
                             ("lambda", "λ (budget multiplier)", "lambda")):
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    switches = set()
    for path in runs:
      name = os.path.basename(os.path.dirname(path))
      rows = [r for r in read_jsonl(path) if r.get(key) is not None and "event" not in r]
      if not rows or (key == "lambda" and not any(r[key] for r in rows)):
        continue   # λ is plotted only for runs where it moved (the dual algorithms)
      algo, _, seed = name.rpartition("_s")
      style = ["-", "--", ":", "-."][int(seed) % 4] if seed.isdigit() else "-"
      ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name, alpha=0.8,
              color=plt.cm.tab10(algos.index(algo) % 10), ls=style)
      # a task ends at its last logged step (the loop always logs a task's final step)
      switches |= {a["step"] for a, b in zip(rows, rows[1:]) if a.get("task") != b.get("task")}
    for step in sorted(switches):
      ax.axvline(step, color="grey", lw=0.6, ls=":")
    if key == "cloud_rate" and tau is not None:
      ax.axhline(tau, color="black", ls="--", lw=1, label=f"τ = {tau}")
    written.append(_finish(fig, ax, "RL step (task switches dotted)", ylabel,
                           os.path.join(workdir, "plots", f"{fname}.png"), legend=True))
  for algo, res in results["algorithms"].items():
    out = _dynamics_plot(workdir, results, algo, res)
    if out:
      written.append(out)
  return written


def _dynamics_plot(workdir: str, results: dict, algo: str, res: dict):
  """One algorithm, stacked on one step axis: held-out greedy local accuracy L of every task
  (`stream.local_eval_every`; the mean over seeds bold, each seed faint), the rollout cloud
  rate against τ, and λ -> plots/dynamics_<algo>.png. None when the run logged no L curve."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  per_seed = res.get("per_seed") or []
  curves = [r.get("L_over_steps") or [] for r in per_seed]
  if not any(len(c) > 1 for c in curves):
    return None
  tasks, tau = results["tasks"], results.get("budget")
  fig, axes = plt.subplots(3, 1, figsize=(8.5, 7.5), sharex=True)
  for j, name in enumerate(tasks):
    color = plt.cm.tab10(j % 10)
    for c in curves:
      axes[0].plot([p[0] for p in c], [p[1][j] for p in c], color=color, alpha=0.3, lw=0.8)
    mean = res.get("L_over_steps") or curves[0]
    axes[0].plot([p[0] for p in mean], [p[1][j] for p in mean], color=color, lw=2,
                 label=f"L {name}")
  axes[0].set_ylabel("held-out local accuracy L")
  switches = set()
  for r in per_seed:
    path = os.path.join(workdir, "runs", f"{algo}_s{r['seed']}", "metrics.jsonl")
    if not os.path.exists(path):
      continue
    rows = [x for x in read_jsonl(path) if "event" not in x and x.get("cloud_rate") is not None]
    steps = [x["step"] for x in rows]
    axes[1].plot(steps, [x["cloud_rate"] for x in rows], alpha=0.7, label=f"seed {r['seed']}")
    axes[2].plot(steps, [x["lambda"] for x in rows], alpha=0.7, label=f"seed {r['seed']}")
    switches |= {a["step"] for a, b in zip(rows, rows[1:]) if a.get("task") != b.get("task")}
  if tau is not None:
    axes[1].axhline(tau, color="black", ls="--", lw=1, label=f"τ = {tau}")
  axes[1].set_ylabel("rollout cloud rate")
  axes[2].set_ylabel("λ")
  for ax in axes:
    for step in sorted(switches):
      ax.axvline(step, color="grey", lw=0.6, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  axes[0].set_title(f"{algo}: local skill, usage and λ over the stream", fontsize=9)
  axes[2].set_xlabel("RL step (task switches dotted)")
  fig.tight_layout()
  out = os.path.join(workdir, "plots", f"dynamics_{algo}.png")
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def report(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a finished dacl run directory?")
  with open(path) as f:
    results = json.load(f)
  print_tables(results)
  for p in write_plots(workdir, results):
    print(f"plot: {p}")
  return results

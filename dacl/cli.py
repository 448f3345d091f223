"""`dacl train | eval | report` command line.

  dacl train  --config=configs/X.py --workdir=DIR [--config.a.b=v ...]
  dacl eval   --config=configs/X.py --workdir=DIR [--step=N] [--config.a.b=v ...]
  dacl report DIR
  dacl serve  --config=configs/serve_X.py [--host 127.0.0.1] [--port N] [--collab] [--workdir=DIR]
  dacl export --config=configs/X.py --workdir=CHECKPOINTS_DIR --out=HF_DIR [--config.a.b=v ...]
"""
from __future__ import annotations

import logging
import os
import sys

USAGE = __doc__


def _die(msg: str, code: int = 2):
  print(f"dacl: error: {msg}", file=sys.stderr)
  sys.exit(code)


def parse_config(argv: list[str], need_workdir: bool = True):
  """(config, flags) from absl-style argv through ml_collections config flags; clear errors."""
  from absl import flags
  from ml_collections import config_dict, config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory", flag_values=fv)
  flags.DEFINE_integer("step", None, "checkpoint step for eval (default: latest)", flag_values=fv)
  flags.DEFINE_string("host", None, "serve: bind address (default config.serve.host)", flag_values=fv)
  flags.DEFINE_integer("port", None, "serve: port (default config.serve.port)", flag_values=fv)
  flags.DEFINE_string("out", None, "export: the Hugging Face directory to write", flag_values=fv)
  flags.DEFINE_bool("collab", None, "serve: collaborative mode (local SLM + cloud under tau)",
                    flag_values=fv)
  cfg_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if cfg_arg is None:
    _die("--config=PATH is required")
  path = cfg_arg.split(":", 1)[0]
  if not os.path.exists(path):
    _die(f"config file not found: {path}")
  # Config files import `configs.base`: put the repo root (the config dir's parent) on the path.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))
  saved_argv = sys.argv
  sys.argv = ["dacl"] + list(argv)   # config_flags discovers --config.x overrides in sys.argv
  try:
    fv(["dacl"] + argv)
  except flags.Error as e:
    _die(str(e).replace("\n", " "))
  except (AttributeError, KeyError) as e:
    msg = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    _die(f"unknown config key in overrides: {msg}")
  except (TypeError, ValueError) as e:
    _die(f"bad config override: {e}")
  finally:
    sys.argv = saved_argv
  cfg = fv.config
  if not isinstance(cfg, config_dict.ConfigDict):
    _die(f"could not load config {path}: {getattr(cfg, '_error', cfg)}")
  if need_workdir and not fv.workdir:
    _die("--workdir=DIR is required")
  return cfg, fv


def _setup_logging():
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  for noisy in ("jax", "orbax", "httpx"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


# config.algorithm -> "module:function" of the job; each takes (config, workdir) and returns the
# results dict. A new method registers its job here (one line), not an elif in cmd_train.
# Every job also runs as several jax.distributed processes (launch/local_multiprocess.sh,
# tpu_pod.sh, gpu_slurm.sbatch): each runs the same host logic on the same data, process 0 alone
# calls the cloud (dacl/cloud/multihost.py) and writes the run's files, and every decision read
# off a run file comes from process 0 (dacl.metrics.read_shared).
JOBS = {
    "sft": "dacl.train.sft_run:run_sft",
    "rl": "dacl.rl.trainer:run_dagrpo",
    "adaswitch": "dacl.adaswitch.job:run_adaswitch",
    "coplms": "dacl.coplms.job:run_coplms",
}
EVALS = {
    "sft": "dacl.train.evaluate_run:run_eval",
    "rl": "dacl.rl.trainer:eval_runs",
    "adaswitch": "dacl.adaswitch.job:eval_adaswitch",
}


def _resolve(table: dict, algo: str, what: str):
  import importlib
  if algo not in table:
    _die(f"unknown algorithm {algo!r} for {what}; known: {sorted(table)}")
  mod, fn = table[algo].split(":")
  return getattr(importlib.import_module(mod), fn)


def _user_errors():
  """Errors that mean bad input (config, data, checkpoints): one line, exit 2, no traceback."""
  from dacl.data.splits import TaskError
  from dacl.sampling import PromptTooLongError
  from dacl.train.checkpoint import CheckpointError
  return (CheckpointError, TaskError, PromptTooLongError, FileNotFoundError)


def cmd_train(argv):
  cfg, fv = parse_config(argv)
  from dacl.parallel import maybe_initialize_distributed
  maybe_initialize_distributed()
  from dacl.report import print_tables, write_plots
  job = _resolve(JOBS, cfg.algorithm, "dacl train")
  import jax
  if jax.process_index() > 0:   # process 0 logs; the others only their warnings and errors
    logging.getLogger("dacl").setLevel(logging.WARNING)
  try:
    results = job(cfg, fv.workdir)
  except _user_errors() as e:
    _die(str(e).splitlines()[0] if str(e) else type(e).__name__)
  from dacl.metrics import is_primary
  if not is_primary():   # a multi-process run reports from process 0 only
    return
  print_tables(results)
  for p in write_plots(fv.workdir, results):
    print(f"plot: {p}")
  print(f"results: {os.path.join(fv.workdir, 'results.json')}")


def cmd_eval(argv):
  cfg, fv = parse_config(argv)
  from dacl.report import print_eval
  fn = _resolve(EVALS, cfg.algorithm, "dacl eval")
  try:
    print_eval(fn(cfg, fv.workdir, step=fv.step))
  except _user_errors() as e:
    _die(str(e).splitlines()[0] if str(e) else type(e).__name__)


def cmd_report(argv):
  if len(argv) != 1 or argv[0].startswith("-"):
    _die("usage: dacl report DIR")
  from dacl.report import report
  try:
    report(argv[0])
  except FileNotFoundError as e:
    _die(str(e))


def cmd_serve(argv):
  cfg, fv = parse_config(argv, need_workdir=False)
  if "serve" not in cfg:
    _die("this config has no `serve` section; use configs/serve_*.py")
  from dacl.serve import serve
  from dacl.train.checkpoint import CheckpointError
  try:
    serve(cfg, host=fv.host, port=fv.port, workdir=fv.workdir, collab=fv.collab)
  except (RuntimeError, ValueError, FileNotFoundError, CheckpointError) as e:
    _die(str(e))
  except KeyboardInterrupt:
    pass


def cmd_export(argv):
  cfg, fv = parse_config(argv)
  if not fv.out:
    _die("--out=HF_DIR is required")
  ckdir = fv.workdir
  if os.path.isdir(os.path.join(ckdir, "checkpoints")):   # a run directory: its checkpoints
    ckdir = os.path.join(ckdir, "checkpoints")
  from dacl.api import export
  try:
    out = export(cfg, ckdir, fv.out)
  except _user_errors() as e:
    _die(str(e).splitlines()[0] if str(e) else type(e).__name__)
  print(f"exported: {out}")


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  cmd, rest = argv[0], argv[1:]
  _setup_logging()
  if cmd in ("train", "eval", "serve"):
    from dacl.compile_cache import enable
    enable()
  if cmd == "train":
    cmd_train(rest)
  elif cmd == "eval":
    cmd_eval(rest)
  elif cmd == "report":
    cmd_report(rest)
  elif cmd == "serve":
    cmd_serve(rest)
  elif cmd == "export":
    cmd_export(rest)
  else:
    _die(f"unknown command {cmd!r}\n{USAGE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Run outputs: WORKDIR/metrics.jsonl, TensorBoard events, results.json, a progress bar."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Optional


def is_primary() -> bool:
  """True in process 0 (or a single-process run): the one that writes logs, metrics, plots and
  results.json in a multi-process run. Orbax checkpoints are saved by every process together."""
  import jax
  return jax.process_index() == 0


def _clean(v):
  if hasattr(v, "item"):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


class MetricsWriter:
  """Appends one JSON object per logged step to metrics.jsonl and mirrors scalars to TensorBoard.

  On resume, `truncate_after(step)` drops lines logged after the restored checkpoint, so a
  resumed run's file equals an uninterrupted run's.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    self.active = is_primary()   # other processes of a multi-process run write nothing
    if tensorboard and self.active:
      try:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        self.tb = None

  def truncate_after(self, step: int) -> None:
    if not self.active or not os.path.exists(self.path):
      return
    keep = [l for l in read_jsonl(self.path) if l.get("step", 0) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      for l in keep:
        f.write(json.dumps(l) + "\n")
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.tb is not None:
      for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
          self.tb.add_scalar(k, v, step)

  def close(self):
    if self.tb is not None:
      self.tb.flush()
      self.tb.close()


def read_jsonl(path: str) -> list[dict]:
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue   # a line cut by a kill mid-write
  return rows


def write_json_atomic(path: str, obj) -> None:
  """Write obj as JSON through a temporary file and a rename (process 0 only)."""
  if not is_primary():
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def read_shared(path: str) -> Optional[bytes]:
  """The file's bytes as process 0 sees them (None if it does not exist), on every process.

  Run files (stage markers, cached evaluations, trajectories) are written by process 0 alone, so
  a decision read off one ("is this stage done?") must come from process 0 too: a process
  checking the file system itself could see it before the write, or after a write the others
  did not see, and then skip a collective the others enter. One broadcast; the others need not
  share the file system."""
  import jax
  if jax.process_count() == 1:
    if not os.path.exists(path):
      return None
    with open(path, "rb") as f:
      return f.read()
  from dacl.parallel import broadcast_bytes
  data = b""
  if is_primary():
    data = b"\0"
    if os.path.exists(path):
      with open(path, "rb") as f:
        data = b"\1" + f.read()
  got = broadcast_bytes(data, is_primary())
  return got[1:] if got[:1] == b"\1" else None


def read_json_shared(path: str):
  """`read_shared` parsed as JSON (None if the file does not exist)."""
  data = read_shared(path)
  return None if data is None else json.loads(data)


def progress(total: int, initial: int = 0, desc: str = "train", disable: bool = False):
  """A tqdm bar (step, steps/s, ETA, postfix metrics) on stderr. Off a terminal (logs, CI) it
  still prints, one line every 10 s (tqdm's own default would switch itself off)."""
  from tqdm.auto import tqdm
  tty = sys.stderr.isatty()
  return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=tty,
              ncols=None if tty else 100, mininterval=0.5 if tty else 10.0,
              disable=disable or not is_primary(),
              file=sys.stderr)

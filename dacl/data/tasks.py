"""Task registry: verifiable tasks that yield prompts, gold answers, demonstrations and a verifier.

Tasks come from reasoning-gym (procedural generators) and from GSM8K-format JSONL files
({"question": str, "answer": "worked solution #### 42"}). Each task is looked up by name:

  task = make_task("chain_sum", prompt_format="expression", min_terms=2, max_terms=2)
  train = task.examples("train", 1000, seed=0)
  task.score(completion, train[0])   # 1.0 or 0.0
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Optional

from dacl.data.answers import extract_answer, numeric_reward

_REGISTRY: dict[str, Callable[..., "Task"]] = {}


def register_task(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def make_task(name: str, /, **kwargs) -> "Task":
  if name not in _REGISTRY:
    raise KeyError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name](**kwargs)


def task_names() -> list[str]:
  return sorted(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: str          # what the model sees
  answer: str          # gold final answer, e.g. "42"
  solution: str        # demonstration target for SFT (worked solution ending in the answer)
  task: str
  meta: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


class Task:
  name: str

  def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
    raise NotImplementedError

  def score(self, completion: str, ex: Example) -> float:
    return numeric_reward(completion, ex.answer)


# Split seeds are offset so train and eval streams are drawn independently.
_SPLIT_OFFSET = {"train": 0, "eval": 1_000_003, "test": 2_000_003}


def _split_seed(split: str, seed: int) -> int:
  if split not in _SPLIT_OFFSET:
    raise ValueError(f"unknown split {split!r}; use one of {list(_SPLIT_OFFSET)}")
  return seed + _SPLIT_OFFSET[split]


class ReasoningGymTask(Task):
  """A reasoning-gym dataset. prompt_format: "question" (the generator's text), "expression"
  (`<expression>=`, compact, for byte-level models; arithmetic families only) or "chat"
  (question plus an instruction to end with `#### <answer>`)."""

  def __init__(self, rg_name: str, prompt_format: str = "question", name: Optional[str] = None,
               **rg_kwargs):
    import reasoning_gym  # noqa: F401  (fail early with a clear ImportError)
    if prompt_format not in ("question", "expression", "chat"):
      raise ValueError(f"prompt_format must be question|expression|chat, got {prompt_format!r}")
    self.rg_name, self.prompt_format, self.rg_kwargs = rg_name, prompt_format, dict(rg_kwargs)
    self.name = name or rg_name

  def examples(self, split, n, seed=0):
    import reasoning_gym
    ds = reasoning_gym.create_dataset(self.rg_name, size=n, seed=_split_seed(split, seed),
                                      **self.rg_kwargs)
    out = []
    for i in range(n):
      e = ds[i]
      md = dict(e["metadata"])
      if self.prompt_format == "expression":
        if "expression" not in md:
          raise ValueError(f"task {self.rg_name} has no expression; use prompt_format='question'")
        prompt = md["expression"].replace(" ", "") + "="
        solution = e["answer"]
      else:
        prompt = e["question"]
        cot = md.get("answer_cot")
        solution = f"{cot}\n#### {e['answer']}" if cot else f"#### {e['answer']}"
        if self.prompt_format == "chat":
          prompt = prompt + "\nEnd your reply with '#### <answer>'."
      out.append(Example(prompt=prompt, answer=str(e["answer"]), solution=solution,
                         task=self.name, meta={"rg": md, "rg_entry": e}))
    return out


for _n in ("basic_arithmetic", "chain_sum", "gsm_symbolic", "products", "leg_counting"):
  register_task(_n)(lambda _n=_n, **kw: ReasoningGymTask(_n, **kw))


class MalformedRowError(ValueError):
  pass


def read_gsm8k_jsonl(path: str) -> list[dict]:
  """Rows of a GSM8K-format JSONL file; a malformed row raises with its 1-based row number."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"GSM8K-format file not found: {path}")
  rows = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise MalformedRowError(f"{path}: row {i}: invalid JSON ({e.msg})") from None
      if not isinstance(row, dict) or not isinstance(row.get("question"), str) \
          or not isinstance(row.get("answer"), str):
        raise MalformedRowError(f"{path}: row {i}: need string fields 'question' and 'answer'")
      if "####" not in row["answer"]:
        raise MalformedRowError(f"{path}: row {i}: answer has no '#### <number>' final line")
      if extract_answer(row["answer"].split("####")[-1]) is None:
        raise MalformedRowError(f"{path}: row {i}: final answer is not a number")
      rows.append(row)
  if not rows:
    raise MalformedRowError(f"{path}: no rows")
  return rows


FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "gsm8k_mini.jsonl")


class GSM8KJsonlTask(Task):
  """GSM8K-format JSONL. Examples are drawn (with a seeded shuffle, repeating as needed) from
  the file; `eval_fraction` of the rows is held out for the eval/test splits."""

  def __init__(self, path: str = FIXTURE, prompt_format: str = "question", eval_fraction: float = 0.25,
               name: str = "gsm8k"):
    self.path, self.prompt_format, self.name = path, prompt_format, name
    rows = read_gsm8k_jsonl(path)
    k = max(1, int(round(len(rows) * eval_fraction))) if len(rows) > 1 else 0
    self._splits = {"train": rows[k:] or rows, "eval": rows[:k] or rows}
    self._splits["test"] = self._splits["eval"]

  def examples(self, split, n, seed=0):
    import random
    rng = random.Random(_split_seed(split, seed))   # validates the split name
    rows = list(self._splits[split])
    out = []
    while len(out) < n:
      rng.shuffle(rows)
      for r in rows[: n - len(out)]:
        final = r["answer"].split("####")[-1].strip().replace(",", "")
        prompt = r["question"]
        if self.prompt_format == "chat":
          prompt += "\nEnd your reply with '#### <answer>'."
        out.append(Example(prompt=prompt, answer=final, solution=r["answer"], task=self.name))
    return out


register_task("gsm8k_jsonl")(lambda **kw: GSM8KJsonlTask(**kw))


class HFDatasetTask(GSM8KJsonlTask):
  """GSM8K-format rows read through Hugging Face `datasets` from local files (json/jsonl/parquet).
  Offline only: dacl never downloads at run time."""

  def __init__(self, path: str, prompt_format: str = "question", eval_fraction: float = 0.25,
               name: str = "hf_dataset", question_field: str = "question",
               answer_field: str = "answer"):
    try:
      import datasets
    except ImportError as e:
      raise ImportError("task 'hf_dataset' needs `pip install dacl[datasets]`") from e
    if not os.path.exists(path):
      raise FileNotFoundError(f"dataset file not found: {path} (dacl reads local files only)")
    kind = "parquet" if path.endswith(".parquet") else "json"
    ds = datasets.load_dataset(kind, data_files=path, split="train")
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
      for r in ds:
        f.write(json.dumps({"question": r.get(question_field), "answer": r.get(answer_field)}) + "\n")
    try:
      super().__init__(f.name, prompt_format, eval_fraction, name)
    finally:
      os.unlink(f.name)


class TFDSTask(Task):
  """A TensorFlow Datasets source (optional extra `dacl[tfds]`). tensorflow-datasets installs
  without TensorFlow but cannot build a dataset then; this fails early and says so."""

  def __init__(self, tfds_name: str = "gsm8k", prompt_format: str = "question", data_dir: str = ""):
    try:
      import tensorflow_datasets  # noqa: F401
    except ImportError as e:
      raise ImportError("task 'tfds' needs `pip install dacl[tfds]` (tensorflow-datasets)") from e
    try:
      import tensorflow  # noqa: F401
    except ImportError as e:
      raise ImportError("task 'tfds' needs TensorFlow, which is not installed: tensorflow-datasets "
                        "cannot build or read datasets without it. Install tensorflow, or use the "
                        "'gsm8k_jsonl' / 'hf_dataset' tasks on local files.") from e
    self.tfds_name, self.prompt_format, self.data_dir = tfds_name, prompt_format, data_dir or None
    self.name = f"tfds_{tfds_name}"

  def examples(self, split, n, seed=0):
    import tensorflow_datasets as tfds
    tsplit = {"train": "train", "eval": "test", "test": "test"}[split]
    ds = tfds.load(self.tfds_name, split=tsplit, data_dir=self.data_dir, download=False,
                   shuffle_files=False)
    out = []
    for r in tfds.as_numpy(ds.take(n)):
      q, a = r["question"].decode(), r["answer"].decode()
      out.append(Example(prompt=q, answer=a.split("####")[-1].strip().replace(",", ""),
                         solution=a, task=self.name))
    return out


register_task("hf_dataset")(lambda **kw: HFDatasetTask(**kw))
register_task("tfds")(lambda **kw: TFDSTask(**kw))

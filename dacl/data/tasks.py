"""Task registry: verifiable tasks that yield prompts, gold answers, demonstrations and a verifier.

Tasks come from reasoning-gym (procedural generators) and from GSM8K-format JSONL files
({"question": str, "answer": "worked solution #### 42"}). Each task is looked up by name:

  task = make_task("chain_sum", prompt_format="expression", min_terms=2, max_terms=2)
  train = task.examples("train", 1000, seed=0)   # i.i.d. draws from the train part of the space
  held = task.examples("eval", 128, seed=0)      # 128 distinct problems, none of them in train
  task.score(completion, train[0])   # 1.0 or 0.0

Splits are decided per problem by a hash of its canonical form (`dacl.data.splits`), so train,
eval and test partition every task's problem space; generators draw until they have n problems
of the requested split. eval/test sets hold distinct problems; a space too small for the request
raises SplitTooSmallError naming the task.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import json
import os
import random
from typing import Callable, Iterator, Optional

from dacl.data.answers import digit_credit, extract_answer, numeric_reward
from dacl.data.splits import (SplitTooSmallError, TaskError, canonical_form, check_split,
                              chao1, generator_seed, split_of)

__all__ = ["Example", "Task", "make_task", "task_names", "register_task", "TaskError",
           "TaskArgumentError", "SplitTooSmallError", "MalformedRowError"]


class TaskArgumentError(TaskError):
  pass

_REGISTRY: dict[str, Callable[..., "Task"]] = {}


def register_task(name: str):
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def make_task(name: str, /, **kwargs) -> "Task":
  """A registered task. An argument the task does not accept is a TaskArgumentError that names
  the task and the key (not a TypeError from deep inside a constructor)."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)}")
  fn = _REGISTRY[name]
  params = inspect.signature(fn).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    accepted = [k for k, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    for key in kwargs:
      if key not in params:
        raise TaskArgumentError(f"task {name!r} does not accept the argument {key!r} "
                                f"(it accepts: {', '.join(accepted)})")
  return fn(**kwargs)


def task_names() -> list[str]:
  return sorted(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: str          # what the model sees
  answer: str          # gold final answer, e.g. "42"
  solution: str        # demonstration target for SFT (worked solution ending in the answer)
  task: str
  meta: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

  @property
  def canonical(self) -> str:
    """The problem's identity (what decides its split)."""
    return self.meta.get("canonical") or canonical_form(self.prompt)


class Task:
  """Base: subclasses give `_stream(seed)` (candidate examples in a deterministic order, each with
  meta["canonical"]) and `task_id` (the generator's identity, for seeds)."""
  name: str
  task_id: str = ""

  def _stream(self, seed: int) -> Iterator[Example]:
    raise NotImplementedError

  def _candidates(self, seed: int) -> Iterator[tuple[str, Callable[[], Example]]]:
    """(canonical form, build) per candidate of `_stream`, build() giving its Example. A task
    whose examples are costly to build (answers computed, demonstrations written) overrides this
    so that a draw outside the requested split costs only its canonical form."""
    for ex in self._stream(seed):
      yield ex.canonical, (lambda ex=ex: ex)

  def _max_draws(self, split: str, n: int) -> int:
    """Candidates to try before deciding the space is too small for n problems of `split`."""
    return max(20_000, 60 * n)

  def examples(self, split: str, n: int, seed: int = 0, distinct: Optional[bool] = None,
               keep: Optional[Callable[[str], bool]] = None) -> list[Example]:
    """n examples of `split` at data seed `seed`. distinct (default: eval/test yes, train no):
    no problem twice; train draws are i.i.d. from the train part of the distribution. keep: a
    further filter on the canonical form (a part of the split, `dacl.continual.stream`)."""
    check_split(split)
    distinct = split != "train" if distinct is None else distinct
    out, seen, draws = [], set(), 0
    limit = self._max_draws(split, n) if distinct else max(20_000, 200 * n)
    if n <= 0:
      return out
    for c, build in self._candidates(seed):
      draws += 1
      if (split_of(c) == split and not (distinct and c in seen)
          and (keep is None or keep(c))):
        seen.add(c)
        ex = build()
        out.append(dataclasses.replace(ex, meta={**ex.meta, "split": split}))
        if len(out) == n:
          return out
      if draws >= limit:
        break
    raise SplitTooSmallError(
        f"task {self.name!r}: found only {len(out)} of the {n} {'distinct ' if distinct else ''}"
        f"{split!r} problems asked for in {draws} draws; {self._too_small_hint()}")

  def _too_small_hint(self) -> str:
    return ("its problem space is too small for this size (lower the size, or widen the task's "
            "generator arguments)")

  def space(self, draws: int = 20_000, seed: int = 0) -> dict:
    """How many distinct problems the task has (Chao1 over `draws` draws; exact for files) and
    how the seen ones fall into splits."""
    cans = [c for c, _ in itertools.islice(self._candidates(seed), draws)]
    out = chao1(cans)
    distinct = set(cans)
    out["distinct_per_split"] = {s: sum(split_of(c) == s for c in distinct)
                                 for s in ("train", "eval", "test")}
    return out

  def score(self, completion: str, ex: Example) -> float:
    return numeric_reward(completion, ex.answer)

  def score_many(self, completions, examples) -> list:
    """Scores of a batch (tasks whose scoring has a fixed cost per call, like running code in a
    sandboxed process, do it once for the batch)."""
    return [self.score(c, e) for c, e in zip(completions, examples)]

  def partial_credit_many(self, completions, examples) -> list:
    """Credit in [0, 1] for how close each answer is (`rl.partial_credit`): the share of an
    integer gold's digit places the answer has right (`answers.digit_credit`). Tasks without a
    notion of "close" return 0."""
    return [digit_credit(c, e.answer) for c, e in zip(completions, examples)]


# prompt_format "compact": short prompts a byte-level model can learn, for families whose
# metadata holds the problem (the split still follows the canonical question text).
_COMPACT = {
    "spell_backward": lambda md: f"reverse: {md['word']}=",
    "word_sorting": lambda md: (f"sort {'up' if md['direction'] == 'ascending' else 'down'}: "
                                f"{' '.join(md['transformed_words'])}="),
    "letter_counting": lambda md: (f"count {md['target_letter']}: "
                                   f"{' '.join(md['span']) if isinstance(md['span'], list) else md['span']}="),
}
# Families whose answers are text (exact match after whitespace normalisation), not numbers.
TEXT_FAMILIES = ("spell_backward", "word_sorting", "family_relationships", "letter_jumble",
                 "caesar_cipher", "word_ladder")


def text_match(completion: str, gold: str) -> float:
  """1.0 when the completion's answer (after a `####` if any) equals the gold text up to
  surrounding and repeated whitespace."""
  ans = completion.split("####")[-1] if "####" in completion else completion
  norm = lambda x: " ".join(str(x).split())
  return float(norm(ans) == norm(gold))


class ReasoningGymTask(Task):
  """A reasoning-gym dataset. prompt_format: "question" (the generator's text), "expression"
  (`<expression>=`, compact, for byte-level models; arithmetic families only), "compact" (short
  prompts for some text families, see _COMPACT) or "chat" (question plus an instruction to end
  with `#### <answer>`). solution_format "scratch" (expression prompts): demonstrations are
  scratchpads (`dacl.data.scratch`) ending in the answer. Other keyword arguments are the
  generator's own (checked against its config class). Text families are scored by exact match, the others numerically."""

  CHUNK = 256   # items per generator instance (gsm_symbolic precomputes per-item templates)

  def __init__(self, rg_name: str, prompt_format: str = "question", name: Optional[str] = None,
               solution_format: str = "answer", **rg_kwargs):
    import reasoning_gym
    from reasoning_gym.factory import DATASETS
    if prompt_format not in ("question", "expression", "chat", "compact"):
      raise TaskArgumentError(f"task {rg_name!r}: prompt_format must be question|expression|"
                              f"compact|chat, got {prompt_format!r}")
    if prompt_format == "compact" and rg_name not in _COMPACT:
      raise TaskArgumentError(f"task {rg_name!r} has no compact prompt format (those that do: "
                              f"{', '.join(sorted(_COMPACT))})")
    if solution_format not in ("answer", "scratch"):
      raise TaskArgumentError(f"task {rg_name!r}: solution_format must be answer|scratch, got "
                              f"{solution_format!r}")
    if solution_format == "scratch" and prompt_format != "expression":
      raise TaskArgumentError(f"task {rg_name!r}: solution_format='scratch' needs "
                              f"prompt_format='expression'")
    fields = {f.name for f in dataclasses.fields(DATASETS[rg_name][1])} - {"seed", "size"}
    for key in rg_kwargs:
      if key not in fields:
        raise TaskArgumentError(f"task {rg_name!r} does not accept the argument {key!r} "
                                f"(generator arguments: {', '.join(sorted(fields))})")
    try:
      reasoning_gym.create_dataset(rg_name, size=1, seed=0, **rg_kwargs)
    except (AssertionError, ValueError, TypeError) as e:
      raise TaskArgumentError(f"task {rg_name!r}: invalid generator arguments {rg_kwargs}: "
                              f"{e or type(e).__name__}") from None
    self.rg_name, self.prompt_format, self.rg_kwargs = rg_name, prompt_format, dict(rg_kwargs)
    self.solution_format = solution_format   # demonstrations only: problems and splits unchanged
    self.name = name or rg_name
    self.task_id = f"rg|{rg_name}|{json.dumps(self.rg_kwargs, sort_keys=True, default=list)}"

  def _example(self, e: dict) -> Example:
    md = dict(e["metadata"])
    e = dict(e, answer=self._exact_answer(md, str(e["answer"])))
    if self.prompt_format == "expression":
      if "expression" not in md:
        raise TaskArgumentError(f"task {self.rg_name!r} has no expression; use "
                                f"prompt_format='question'")
      prompt = md["expression"].replace(" ", "") + "="
      solution = e["answer"]
      if self.solution_format == "scratch":
        from dacl.data.scratch import scratch_solution
        solution = scratch_solution(md["expression"])
    elif self.prompt_format == "compact":
      prompt, solution = _COMPACT[self.rg_name](md), str(e["answer"])
    else:
      prompt = e["question"]
      cot = (md.get("answer_cot") or "").rstrip()
      # gsm_symbolic's chain of thought already ends with "#### <answer>"
      solution = cot if "####" in cot else (f"{cot}\n#### {e['answer']}" if cot else f"#### {e['answer']}")
      if self.prompt_format == "chat":
        prompt = prompt + "\nEnd your reply with '#### <answer>'."
    return Example(prompt=prompt, answer=str(e["answer"]), solution=solution, task=self.name,
                   meta={"rg": md, "rg_entry": e, "canonical": self._canonical(e)})

  @staticmethod
  def _exact_answer(md: dict, rg_answer: str) -> str:
    """The value of the expression as displayed, under the usual operator precedence. reasoning-gym's
    basic_arithmetic without parentheses accumulates left to right ("3+1*10" -> 40) and floors
    divisions, so its answer disagrees with its own question for many problems; the displayed
    expression is what a model (or a real cloud LLM) answers, so it decides. The generator's
    answer stays in meta["rg"]["answer_rg"] when it differs."""
    from fractions import Fraction
    from dacl.data.calculator import CalcError, evaluate, format_value
    if "expression" not in md:
      return rg_answer
    exact = evaluate(md["expression"])
    if isinstance(exact, CalcError):
      return rg_answer
    try:
      if Fraction(rg_answer) == exact:
        return rg_answer
    except (ValueError, ZeroDivisionError):
      pass
    md["answer_rg"] = rg_answer
    return format_value(exact)

  @staticmethod
  def _canonical(e: dict) -> str:
    md = e["metadata"]
    return canonical_form(md["expression"] if "expression" in md else e["question"])

  def _candidates(self, seed):
    import reasoning_gym
    base = generator_seed(self.task_id, seed)
    for j in itertools.count():
      ds = reasoning_gym.create_dataset(self.rg_name, size=self.CHUNK, seed=base + j * self.CHUNK,
                                        **self.rg_kwargs)
      for i in range(self.CHUNK):
        e = ds[i]
        yield self._canonical(e), functools.partial(self._example, e)

  def _stream(self, seed):
    for _, build in self._candidates(seed):
      yield build()


  def score(self, completion: str, ex: Example) -> float:
    if self.rg_name in TEXT_FAMILIES:
      return text_match(completion, ex.answer)
    return numeric_reward(completion, ex.answer)

  def partial_credit_many(self, completions, examples) -> list:
    if self.rg_name in TEXT_FAMILIES:
      return [0.0] * len(completions)
    return super().partial_credit_many(completions, examples)


for _n in ("basic_arithmetic", "chain_sum", "gsm_symbolic", "products", "leg_counting",
           "spell_backward", "word_sorting", "letter_counting", "family_relationships"):
  register_task(_n)(functools.partial(ReasoningGymTask, _n))


class MalformedRowError(TaskError):
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


class RowsTask(Task):
  """A finite set of GSM8K-format rows. A row's split is the hash of its question, as for
  generated tasks; train draws repeat rows (a seeded shuffle per pass), eval/test draws take
  each row at most once, so they are capped by the rows of that split."""

  def __init__(self, rows: list[dict], prompt_format: str, name: str, source: str):
    if prompt_format not in ("question", "chat"):
      raise TaskArgumentError(f"task {name!r}: prompt_format must be question|chat, "
                              f"got {prompt_format!r}")
    self.rows, self.prompt_format, self.name = rows, prompt_format, name
    self.task_id = f"rows|{source}|{len(rows)}"

  def _example(self, r: dict) -> Example:
    final = r["answer"].split("####")[-1].strip().replace(",", "")
    prompt = r["question"]
    if self.prompt_format == "chat":
      prompt += "\nEnd your reply with '#### <answer>'."
    return Example(prompt=prompt, answer=final, solution=r["answer"], task=self.name,
                   meta={"canonical": canonical_form(r["question"])})

  def _stream(self, seed):
    rng = random.Random(generator_seed(self.task_id, seed))
    order = list(range(len(self.rows)))
    while True:
      rng.shuffle(order)
      for i in order:
        yield self._example(self.rows[i])

  def _max_draws(self, split, n):
    return len(self.rows)   # one pass sees every row once

  def _too_small_hint(self) -> str:
    return (f"the {len(self.rows)} rows hold fewer problems of this split (a row's split is the "
            f"hash of its question; lower the size or add rows)")

  def space(self, draws: int = 0, seed: int = 0) -> dict:
    cans = {canonical_form(r["question"]) for r in self.rows}
    return {"draws": len(self.rows), "distinct_seen": len(cans), "singletons": None,
            "chao1": len(cans), "exact": True,
            "distinct_per_split": {s: sum(split_of(c) == s for c in cans)
                                   for s in ("train", "eval", "test")}}


class GSM8KJsonlTask(RowsTask):
  """GSM8K-format JSONL (`path`; default: the 24-row fixture shipped in dacl/data/fixtures)."""

  def __init__(self, path: str = FIXTURE, prompt_format: str = "question", name: str = "gsm8k"):
    super().__init__(read_gsm8k_jsonl(path), prompt_format, name, os.path.abspath(path))
    self.path = path


register_task("gsm8k_jsonl")(GSM8KJsonlTask)


class HFDatasetTask(RowsTask):
  """GSM8K-format rows read through Hugging Face `datasets` from local files (json/jsonl/parquet).
  Offline only: dacl never downloads at run time."""

  def __init__(self, path: str, prompt_format: str = "question", name: str = "hf_dataset",
               question_field: str = "question", answer_field: str = "answer"):
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
      rows = read_gsm8k_jsonl(f.name)
    except MalformedRowError as e:
      raise MalformedRowError(str(e).replace(f.name, path)) from None
    finally:
      os.unlink(f.name)
    super().__init__(rows, prompt_format, name, os.path.abspath(path))


class TFDSTask(Task):
  """A TensorFlow Datasets source (optional extra `dacl[tfds]`). tensorflow-datasets installs
  without TensorFlow but cannot build a dataset then; this fails early and says so. The dataset's
  own train and test splits are pooled and re-split by question hash, like every other task."""

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
    self.task_id = f"tfds|{tfds_name}"

  def _stream(self, seed):
    import tensorflow_datasets as tfds
    for tsplit in ("train", "test"):
      ds = tfds.load(self.tfds_name, split=tsplit, data_dir=self.data_dir, download=False,
                     shuffle_files=False)
      for r in tfds.as_numpy(ds):
        q, a = r["question"].decode(), r["answer"].decode()
        yield Example(prompt=q, answer=a.split("####")[-1].strip().replace(",", ""), solution=a,
                      task=self.name, meta={"canonical": canonical_form(q)})


register_task("hf_dataset")(HFDatasetTask)
register_task("tfds")(TFDSTask)


from dacl.data import code_tasks as _code_tasks  # noqa: E402,F401  (registers fit_formula)

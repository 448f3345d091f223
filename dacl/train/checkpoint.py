"""Orbax checkpoints in WORKDIR/checkpoints: the train state (params, optimizer state, step, RNG)
plus a JSON record (data position, algorithm state such as λ, task index, config).

Restoring is strict: a checkpoint that exists but cannot be read raises CheckpointError naming
the path; nothing is silently re-initialised.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  pass


class _SavedTrainState(NamedTuple):
  """What a checkpoint holds of a TrainState: the fields training changes (the same tree as
  before LoRA's `frozen` field existed, so older checkpoints keep restoring)."""
  params: Any
  opt_state: Any
  step: Any
  rng: Any


def _without_frozen(state):
  """A TrainState without its frozen LoRA base: checkpoints hold what training changes."""
  from dacl.train.sft import TrainState
  if isinstance(state, TrainState):
    return _SavedTrainState(state.params, state.opt_state, state.step, state.rng)
  return state


class Checkpointer:
  def __init__(self, directory: str, save_every: int = 100, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                        enable_async_checkpointing=False)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=opts)
    except Exception as e:
      raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {e}") from e

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: Any, record: dict) -> None:
    state = _without_frozen(state)
    if step in self.manager.all_steps():   # re-saving a step (e.g. end-of-task state) replaces it
      self.manager.delete(step)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   record=ocp.args.JsonSave(record)), force=True)
    self.manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict, int]:
    """(state, record, step) of `step` (default: latest). Raises CheckpointError on failure."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    path = os.path.join(self.directory, str(step))
    if not os.path.isdir(path):
      raise CheckpointError(f"checkpoint step {step} not found: {path} does not exist")
    frozen = getattr(abstract_state, "frozen", None)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _without_frozen(abstract_state))
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(
          f"checkpoint {path} is corrupt or incompatible with this config "
          f"({type(e).__name__}: {str(e)[:300]}). Move it away to start fresh, or point "
          f"--workdir elsewhere; dacl does not re-initialise over an unreadable checkpoint.") from e
    state = out["state"]
    if isinstance(state, _SavedTrainState):   # the frozen LoRA base is the caller's, never read
      from dacl.train.sft import TrainState
      state = TrainState(*state, frozen=frozen)
    return state, dict(out["record"]), step

  def close(self):
    self.manager.close()

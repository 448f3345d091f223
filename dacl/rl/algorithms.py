"""Algorithms by name. All share one code path (rollout -> advantages -> loss -> budget); a spec
says how each differs.

route: how prompts reach the cloud — "policy" (the SLM emits the offload marker), "never",
"random" (each rollout/prompt offloaded with probability τ), "router" (a classifier on the
SLM's pooled prompt state, threshold set on held-out data to meet τ), "always".
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AlgoSpec:
  name: str
  route: str            # policy | never | random | router | always
  train: bool = True    # runs RL steps (cloud_only / local_only only evaluate)
  dual: bool = False    # λ updated by (PI-controlled) projected dual ascent (DA-GRPO)
  shaped: bool = False  # fixed penalty r − γ·c, no dual update

  @property
  def marker_allowed(self) -> bool:
    return self.route == "policy"


ALGORITHMS = {
    "dagrpo": AlgoSpec("dagrpo", route="policy", dual=True),
    "grpo_local": AlgoSpec("grpo_local", route="never"),
    "shaped": AlgoSpec("shaped", route="policy", shaped=True),
    "random_offload": AlgoSpec("random_offload", route="random"),
    "router": AlgoSpec("router", route="router"),
    "cloud_only": AlgoSpec("cloud_only", route="always", train=False),
    "local_only": AlgoSpec("local_only", route="never", train=False),
}


def get_algorithm(name: str) -> AlgoSpec:
  if name not in ALGORITHMS:
    raise KeyError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}")
  return ALGORITHMS[name]

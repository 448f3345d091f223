"""What crosses the edge <-> cloud boundary in Co-PLMs: one message type, ProxyMessage.

A ProxyMessage carries a distilled proxy model's parameters (float32 arrays keyed by parameter
path), the edge id and the round -- nothing else: no examples, no SLM parameters, no
tokenizer. It serialises to safetensors bytes (never pickle); `Transport` is the only way
parameters move between edges and the cloud in the job, and it records every payload, so a
test can check what crossed and the job can report bytes per round.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from flax import nnx

HEADER_KEY = "__dacl_proxy__"


def flatten(params: nnx.State) -> dict:
  """nnx.State of parameters -> {"layers.0.wq": float32 array, ...}."""
  out = {}

  def walk(prefix, node):
    if isinstance(node, dict):
      for k, v in node.items():
        walk(f"{prefix}.{k}" if prefix else str(k), v)
    else:
      out[prefix] = np.asarray(to_host(node), np.float32)
  from dacl.parallel import to_host   # gathers a parameter sharded across processes
  walk("", nnx.to_pure_dict(params))
  return out


def unflatten_into(params: nnx.State, flat: dict) -> nnx.State:
  """A copy of `params` (same structure) holding the arrays of `flat`; shapes checked."""
  import jax
  import jax.numpy as jnp

  def walk(prefix, node):
    if isinstance(node, dict):
      return {k: walk(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()}
    arr = flat[prefix]
    if tuple(arr.shape) != tuple(np.shape(node)):
      raise ValueError(f"proxy parameter {prefix}: shape {arr.shape} != {np.shape(node)}")
    if not getattr(node, "is_fully_addressable", True):   # a multi-process mesh: the caller places it
      return np.asarray(arr, dtype=node.dtype)
    return jnp.asarray(arr, dtype=jnp.asarray(node).dtype)

  out = jax.tree.map(lambda x: x, params)   # a new State; replace_by_pure_dict writes in place
  nnx.replace_by_pure_dict(out, walk("", nnx.to_pure_dict(params)))
  return out


@dataclasses.dataclass(frozen=True)
class ProxyMessage:
  edge: str
  round: int
  params: dict          # path -> float32 array: the proxy's parameters, nothing else

  def to_bytes(self) -> bytes:
    from safetensors.numpy import save
    return save(dict(self.params), metadata={HEADER_KEY: json.dumps({"edge": self.edge,
                                                                     "round": self.round})})

  @classmethod
  def from_bytes(cls, blob: bytes) -> "ProxyMessage":
    from safetensors.numpy import load
    import struct
    n = struct.unpack("<Q", blob[:8])[0]
    meta = json.loads(blob[8:8 + n]).get("__metadata__", {})
    head = json.loads(meta[HEADER_KEY])
    return cls(head["edge"], int(head["round"]), dict(load(blob)))


class Transport:
  """Moves ProxyMessages as bytes and keeps a log: (direction, edge, round, n_bytes, payload)."""

  def __init__(self, keep_payloads: bool = False):
    self.log: list = []
    self.keep = keep_payloads

  def send(self, direction: str, msg: ProxyMessage) -> ProxyMessage:
    if not isinstance(msg, ProxyMessage):
      raise TypeError("only ProxyMessage crosses the edge-cloud boundary")
    blob = msg.to_bytes()
    self.log.append({"direction": direction, "edge": msg.edge, "round": msg.round,
                     "bytes": len(blob), "payload": blob if self.keep else None})
    return ProxyMessage.from_bytes(blob)

  def bytes_in_round(self, r: int) -> int:
    return sum(x["bytes"] for x in self.log if x["round"] == r)


def nbytes(params: Any) -> int:
  """Bytes of float32 parameters (what sending a model whole would cost)."""
  import jax
  return int(sum(np.size(v) * 4 for v in jax.tree.leaves(nnx.to_pure_dict(params))))

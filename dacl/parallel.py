"""Meshes and shardings. Axes ('data', 'fsdp', 'tensor'); default: every device on 'data'.

Parameters carry logical axis names (`logical_axes` metadata, see models/decoder.py); RULES map
them onto mesh axes, so multi-device and multi-host runs only change rules, never model code.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (None: replicated). FSDP shards the embed dimension, tensor
# parallelism the heads and MLP dimensions.
RULES = {"vocab": "tensor", "embed": "fsdp", "q_heads": "tensor", "kv_heads": "tensor",
         "mlp": "tensor", "layers": None, None: None}

# Activations (`constrain`): rows over ('data', 'fsdp') like every batch, attention heads and the
# MLP's hidden units over 'tensor' like the weights that produce them; the model dimension is
# whole (FSDP gathers weights, not activations).
ACTIVATION_RULES = {"batch": ("data", "fsdp"), "q_heads": "tensor", "kv_heads": "tensor",
                    "mlp": "tensor", None: None}
_ACTIVATION_MESH = contextvars.ContextVar("dacl_activation_mesh", default=None)


def distributed_init_kwargs(env=None):
  """The jax.distributed.initialize keyword arguments the environment asks for, or None for a
  single-process run.

  DACL_COORDINATOR=host:port with DACL_NUM_PROCESSES and DACL_PROCESS_ID: explicit (local
    multi-process runs, launch/local_multiprocess.sh).
  DACL_DISTRIBUTED=auto (or JAX_NUM_PROCESSES > 1): no arguments, so JAX detects the cluster
    itself (TPU pod slices, SLURM via srun; launch/tpu_pod.sh, launch/gpu_slurm.sbatch)."""
  env = os.environ if env is None else env
  if env.get("DACL_COORDINATOR"):
    missing = [k for k in ("DACL_NUM_PROCESSES", "DACL_PROCESS_ID") if not env.get(k)]
    if missing:
      raise ValueError(f"DACL_COORDINATOR is set but {', '.join(missing)} is not")
    return dict(coordinator_address=env["DACL_COORDINATOR"],
                num_processes=int(env["DACL_NUM_PROCESSES"]),
                process_id=int(env["DACL_PROCESS_ID"]))
  if env.get("DACL_DISTRIBUTED", "").lower() == "auto" or \
      int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    return {}
  return None


def maybe_initialize_distributed() -> None:
  """Call jax.distributed.initialize() when launched as one of several processes."""
  kw = distributed_init_kwargs()
  if kw is not None:
    jax.distributed.initialize(**kw)


def make_mesh(shape: Optional[Sequence[int]] = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh; default (all devices, 1, 1)."""
  n = jax.device_count()
  shape = tuple(shape) if shape else (n, 1, 1)
  if int(np.prod(shape)) != n:
    raise ValueError(f"mesh shape {shape} does not use the {n} available devices")
  devices = np.asarray(jax.devices()).reshape(shape)
  return Mesh(devices, AXES)


def _spec(axes, shape, mesh: Mesh, rules=RULES) -> P:
  out = []
  for name, dim in zip(axes, shape):
    ax = rules.get(name)
    n = int(np.prod([mesh.shape[a] for a in ((ax,) if isinstance(ax, str) else ax or ())]))
    # Only shard dimensions the mesh axis divides; otherwise replicate that dimension.
    out.append(ax if ax and dim % n == 0 and n > 1 else None)
  return P(*out)


@contextlib.contextmanager
def activation_mesh(mesh: Optional[Mesh]):
  """While tracing inside this context, `constrain` pins activations to `mesh` (None: off)."""
  token = _ACTIVATION_MESH.set(mesh)
  try:
    yield
  finally:
    _ACTIVATION_MESH.reset(token)


def constrain(x: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
  """x with a sharding constraint from its logical `axes` (ACTIVATION_RULES) on the mesh of the
  enclosing `activation_mesh`; unchanged outside one, or where no dimension would be split (XLA
  keeps its own choice there). Without these, XLA may pick a layout for an FSDP step's
  intermediate that it must then undo by a full rematerialisation of the array."""
  mesh = _ACTIVATION_MESH.get()
  if mesh is None:
    return x
  spec = _spec(axes, x.shape, mesh, ACTIVATION_RULES)
  if all(a is None for a in spec):
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def gather_fsdp(w: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
  """A parameter with its FSDP ('fsdp') split undone inside the enclosing `activation_mesh`
  (other axes by RULES); unchanged outside one. For the embedding lookup: without it XLA turns
  the lookup's gradient, a batch-split [B, T, d] cotangent, into the table's d-split layout by
  replicating it (an "involuntary full rematerialization"); with it, each device scatter-adds
  its rows into a whole table and XLA reduce-scatters the sum."""
  mesh = _ACTIVATION_MESH.get()
  if mesh is None:
    return w
  rules = {**RULES, "embed": None}
  return jax.lax.with_sharding_constraint(w, NamedSharding(mesh, _spec(axes, w.shape, mesh, rules)))


def mesh_of(shardings) -> Optional[Mesh]:
  """The mesh of the first NamedSharding in a tree of shardings (None if there is none)."""
  for s in jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding)):
    if isinstance(s, NamedSharding):
      return s.mesh
  return None


def param_shardings(state: nnx.State, mesh: Mesh, rules=RULES):
  """NamedSharding for every parameter of an nnx.State, from its logical axis names."""
  def f(v):
    axes = v.get_metadata().get("logical_axes") if isinstance(v, nnx.Variable) else None
    shape = v.shape if hasattr(v, "shape") else v[...].shape
    if axes is None:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, _spec(axes, shape, mesh, rules))
  return jax.tree.map(f, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(tree, mesh: Mesh, rules=RULES):
  """Shardings of a whole train state (parameters, optimizer moments, step, RNG): every
  nnx.Variable by its logical axes (optax moments keep the parameters' metadata), everything
  else replicated. A prefix tree of `tree`, usable for device_put, jit out_shardings and
  Orbax restore targets."""
  return param_shardings(tree, mesh, rules)


def place(tree, mesh: Mesh, rules=RULES):
  """device_put a host or single-device tree onto the mesh by `state_shardings`."""
  return jax.device_put(tree, state_shardings(tree, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
  spec = [None] * ndim
  spec[batch_axis] = ("data", "fsdp")
  return NamedSharding(mesh, P(*spec))


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways a batch is split: the product of the ('data', 'fsdp') axes."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def cache_shardings(n_kv_heads: int, mesh: Mesh) -> tuple:
  """(keys [B, K, D, S] and values [B, K, S, D], mask [B, S]) shardings of a KV cache: rows over
  ('data', 'fsdp') like every batch, KV heads over 'tensor' where it divides them (like wk/wv's
  output heads)."""
  t = mesh.shape["tensor"]
  kv = "tensor" if t > 1 and n_kv_heads % t == 0 else None
  return (NamedSharding(mesh, P(("data", "fsdp"), kv, None, None)),
          NamedSharding(mesh, P(("data", "fsdp"), None)))


def to_host(x) -> np.ndarray:
  """A jax.Array as one numpy array on every process (gathered across processes when its
  shards are not all local: a batch-sharded array of a multi-process run)."""
  if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _pow2_at_least(n: int, minimum: int = 1024) -> int:
  b = minimum
  while b < n:
    b *= 2
  return b


def broadcast_bytes(data: bytes, is_source: bool) -> bytes:
  """`data` of the source process, on every process (a collective: all processes call it).
  Padded to a power-of-two length, so a run compiles a handful of broadcast shapes."""
  from jax.experimental import multihost_utils
  n = int(multihost_utils.broadcast_one_to_all(np.array(len(data) if is_source else 0, np.int32),
                                               is_source=is_source))
  buf = np.zeros(_pow2_at_least(n), np.uint8)
  if is_source:
    buf[:n] = np.frombuffer(data, np.uint8)
  buf = np.asarray(multihost_utils.broadcast_one_to_all(buf, is_source=is_source))
  return buf[:n].tobytes()


def shard_batch(batch: dict, mesh: Mesh, batch_axis: int = 0) -> dict:
  """Place a host batch of numpy arrays on the mesh, split along batch_axis."""
  n = data_parallel_size(mesh)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.shape[batch_axis] % n:
      raise ValueError(f"batch field {k}: size {v.shape[batch_axis]} is not divisible by the "
                       f"{n} data-parallel devices")
    out[k] = jax.device_put(v, batch_sharding(mesh, v.ndim, batch_axis))
  return out

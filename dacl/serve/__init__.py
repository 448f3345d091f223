"""`dacl serve`: an OpenAI-compatible server over a dacl model, optionally collaborative."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Optional

log = logging.getLogger("dacl.serve")


def restore_policy(model, ckdir: str, seed: int = 0):
  """The parameters of a `dacl train` checkpoint directory (SFT or RL run; latest step) into
  `model`, which must be built from the same model config. Strict: CheckpointError on mismatch."""
  from dacl.train.checkpoint import Checkpointer
  from dacl.train.sft import init_train_state, make_optimizer, state_model
  graphdef, state = init_train_state(model, make_optimizer(1e-4, 1, 0), seed)
  ck = Checkpointer(ckdir)
  try:
    state, _, step = ck.restore(state)
  finally:
    ck.close()
  log.info("serving parameters of %s step %d", ckdir, step)
  return state_model(graphdef, state)


def build_app(config, workdir: Optional[str] = None, collab: Optional[bool] = None):
  """config (configs/serve_*.py) -> App (ASGI). Loads the model and starts the batching engine."""
  from dacl.build import build_model_and_tokenizer
  from dacl.serve.engine import BatchingEngine
  from dacl.serve.server import App
  sc = config.serve
  model, tok = build_model_and_tokenizer(config.model, int(config.seed),
                                       lora=config.get("lora"))
  if sc.checkpoint:
    model = restore_policy(model, sc.checkpoint, int(config.seed))
  from dacl.models.quant import for_decode
  model = for_decode(model, config.model.get("decode_dtype", "float32"))
  if sc.engine == "continuous":
    from dacl.serve.continuous import ContinuousEngine
    engine = ContinuousEngine(model, tok, slots=sc.max_batch, max_cache_len=config.model.max_seq_len,
                              seed=int(config.seed), row_buckets=tuple(sc.get("row_buckets", (1, 4))),
                              decode_chunk=int(sc.get("decode_chunk", 1)))
    if sc.warmup:
      t = time.perf_counter()
      engine.warmup()
      P, kv = engine.shapes()
      log.info("warm-up: compiled %d prompt and %d step shapes in %.1f s", len(P), len(kv),
               time.perf_counter() - t)
  elif sc.engine == "static":
    engine = BatchingEngine(model, tok, max_batch=sc.max_batch, batch_wait_ms=sc.batch_wait_ms,
                            max_cache_len=config.model.max_seq_len, seed=int(config.seed))
  else:
    raise ValueError(f"serve.engine must be 'continuous' or 'static', got {sc.engine!r}")
  api_key = None
  if sc.api_key_env:
    api_key = os.environ.get(sc.api_key_env)
    if not api_key:
      raise RuntimeError(f"serve.api_key_env names {sc.api_key_env!r}, which is not set")
  name = sc.model_name or config.model.weights or f"dacl-{config.model.preset}"
  collaborator = None
  if sc.collab if collab is None else collab:
    from dacl.cloud.cache import ResponseCache
    from dacl.cloud.config import cache_path, cloud_from_config
    from dacl.serve.collab import Collaborator
    path = cache_path(config.cloud, workdir) if (workdir or config.cloud.cache_path != "auto") else ""
    mode = config.collab.mode if "collab" in config else "marker"
    if mode == "adaswitch":   # step-level switching (dacl/adaswitch/serving.py)
      from dacl.adaswitch.serving import build as build_steps
      collaborator = build_steps(config, engine, tok, disk=ResponseCache(path) if path else None)
      return App(engine, name, api_key, collaborator, sc.default_max_tokens, sc.max_n,
                 sc.max_body_bytes)
    if mode != "marker":
      raise ValueError(f"collab.mode must be 'marker' or 'adaswitch', got {mode!r}")
    marker = config.offload.marker
    ids = tuple(tok.encode(marker, add_bos=False))
    collaborator = Collaborator(
        engine, cloud_from_config(config.cloud), ids, float(config.budget.tau),
        marker_text=marker if len(ids) > 1 else "", cloud_timeout_s=config.cloud.timeout_s,
        cloud_max_tokens=config.cloud.max_tokens, disk=ResponseCache(path) if path else None)
  return App(engine, name, api_key, collaborator, sc.default_max_tokens, sc.max_n, sc.max_body_bytes)


def _uvicorn_server(app, host: str, port: int, log_level: str = "warning"):
  import uvicorn
  return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                       access_log=False, lifespan="off"))


def serve(config, host: Optional[str] = None, port: Optional[int] = None,
          workdir: Optional[str] = None, collab: Optional[bool] = None) -> None:
  """Blocking: run the server until interrupted."""
  app = build_app(config, workdir, collab)
  host = host or config.serve.host
  port = config.serve.port if port is None else port
  what = ""
  if app.collab is not None:
    what = (" (collaborative: adaswitch step switching)" if getattr(app.collab, "mode", "") == "adaswitch"
            else " (collaborative, tau=%g)" % app.collab.tau)
  print(f"dacl serve: {app.model_name} on http://{host}:{port}/v1{what}", flush=True)
  _uvicorn_server(app, host, port, config.serve.log_level).run()
  app.engine.close()


class ServerThread:
  """Run an App on 127.0.0.1 in a background thread (tests, benchmarks). port=0 picks a port."""

  def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
    self.app = app
    self.server = _uvicorn_server(app, host, port)
    self.thread = threading.Thread(target=self.server.run, daemon=True, name="dacl-serve")
    self.thread.start()
    t0 = time.time()
    while not self.server.started:
      if not self.thread.is_alive() or time.time() - t0 > 30:
        raise RuntimeError("server did not start")
      time.sleep(0.02)
    self.port = self.server.servers[0].sockets[0].getsockname()[1]
    self.base_url = f"http://{host}:{self.port}/v1"

  def close(self) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=10)
    self.app.engine.close()
    if hasattr(self.app.collab, "close"):
      self.app.collab.close()

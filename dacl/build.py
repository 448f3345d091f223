"""Build model, tokenizer and tasks from a config (shared by train, eval and serve)."""
from __future__ import annotations

from dacl.models.config import get_preset


def model_overrides(mcfg) -> dict:
  out = {"dtype": mcfg.dtype, "param_dtype": mcfg.param_dtype, "max_seq_len": mcfg.max_seq_len,
         "remat": mcfg.get("remat", "none")}
  n = int(mcfg.get("n_layers", 0))
  if n < 0:
    raise ValueError(f"model.n_layers must be >= 0 (0: all of the model's blocks), got {n}")
  if n:
    out["n_layers"] = n
  return out


def build_model_and_tokenizer(mcfg, seed: int, mesh=None, lora=None):
  """config.model -> (Decoder, tokenizer). `weights` set: load them (HF dir, .gguf or embedded
  name; with a mesh, straight onto their shards); otherwise a fresh `preset` with the byte
  tokenizer. lora (config.lora, rank > 0): LoRA adapters on a frozen base (dacl.models.lora)."""
  from dacl.api import load
  from dacl.models import lora as lora_lib
  from dacl.models.decoder import create_model
  from dacl.tokenizers import ByteTokenizer
  if mcfg.weights:
    model, tok = load(mcfg.weights, mesh=mesh, **model_overrides(mcfg))
  else:
    cfg = get_preset(mcfg.preset, **model_overrides(mcfg))
    tok = ByteTokenizer()
    if cfg.vocab_size < tok.vocab_size:
      raise ValueError(f"preset {mcfg.preset} has vocab {cfg.vocab_size} < byte vocab {tok.vocab_size}")
    model = create_model(cfg, seed=seed)
  return lora_lib.from_config(model, lora, seed), tok


def refuse_lora(config, method: str):
  """LoRA is wired into SFT, the DA-GRPO trainer and AdaSwitch; other methods say so instead of
  ignoring it."""
  if int(config.get("lora", {}).get("rank", 0)):
    raise ValueError(f"lora.rank > 0 is supported by SFT, the DA-GRPO trainer and AdaSwitch, "
                     f"not yet by {method}")


def build_task(tcfg):
  from dacl.data.tasks import make_task
  kw = dict(tcfg.kwargs) if "kwargs" in tcfg else {}
  if tcfg.get("path"):
    kw["path"] = tcfg.path
  return make_task(tcfg.name, prompt_format=tcfg.prompt_format, **kw)

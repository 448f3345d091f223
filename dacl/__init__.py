"""dacl: small language models that collaborate with a cloud model under a budget.

Public API:
  model, tokenizer = dacl.load(SPEC)      # HF directory, .gguf path, or "smollm2-135m-instruct"
  logits = model(tokens)[0]               # float32 [B, T, V] for int32 tokens [B, T]
  texts = dacl.generate(model, tokenizer, prompts, max_new_tokens=..., temperature=..., ...)
"""
__version__ = "0.1.0"

from dacl.api import generate, load  # noqa: E402,F401

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
  """(model, config, tokenizer) of the embedded SmolLM2-135M-Instruct GGUF, loaded once."""
  from dacl.models.weights import load_gguf, smollm2_gguf_path
  return load_gguf(smollm2_gguf_path())

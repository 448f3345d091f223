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


# The slowest files first (each takes minutes of one worker: real-model README commands, the
# end-to-end runs, the 8-device and 2-process checks), so that under `-n 2` the suite ends on
# short tests instead of one worker finishing a long one while the other idles. A stable sort:
# the order within a file, and of every other file, is unchanged; every worker collects the same
# order, as xdist requires. This needs `--maxschedchunk=1` (launch/test.sh): xdist's load
# scheduler otherwise hands each worker a fixed first chunk of ~1/8 of the suite, which would
# put all of the slow files on one worker.
_SLOW_FILES = ("test_readme_commands.py", "test_adaswitch_e2e.py", "test_dagrpo_e2e.py",
               "test_coplms_e2e.py", "test_cloud_e2e.py", "test_sharding.py",
               "test_multiprocess.py", "test_serve.py", "test_smollm2.py", "test_lora.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_SLOW_FILES)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)), len(rank)))

"""The persistent SQLite response cache survives SIGKILL mid-write and keys on what decides the answer."""
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from dacl.cloud import CloudRequest, CloudResponse, make_cloud
from dacl.cloud.cache import ResponseCache

WRITER = r"""
import sys
from dacl.cloud.cache import ResponseCache
from dacl.cloud.protocol import CloudResponse
c = ResponseCache(sys.argv[1])
i = 0
while True:
  c.put(f"k{i}", "test", CloudResponse(f"k{i}", "x" * 2000 + str(i), 10, 20, 0.1, 0.5))
  print(i, flush=True)
  i += 1
"""


def test_survives_sigkill_mid_write(tmp_path):
  path = str(tmp_path / "c.sqlite")
  p = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
  acked = -1
  for line in p.stdout:
    acked = int(line)
    if acked >= 300:
      break
  os.kill(p.pid, signal.SIGKILL)
  p.wait()
  db = sqlite3.connect(path)
  assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
  db.close()
  c = ResponseCache(path)
  assert len(c) >= acked + 1                         # every acknowledged answer is there
  for i in (0, acked // 2, acked):
    r = c.get(f"k{i}")
    assert r is not None and r.text.endswith(str(i)) and r.cost == 0.5


def test_only_answers_are_stored_and_garbage_is_a_clear_error(tmp_path):
  c = ResponseCache(str(tmp_path / "c.sqlite"))
  c.put("bad", "t", CloudResponse("bad", "", error="timeout"))
  assert c.get("bad") is None and len(c) == 0
  junk = tmp_path / "junk.sqlite"
  junk.write_bytes(b"this is not a database" * 100)
  with pytest.raises(sqlite3.DatabaseError, match="junk.sqlite"):
    ResponseCache(str(junk))


def test_cache_keys():
  sim = make_cloud("simulated", seed=0)
  a = CloudRequest("t:train:1", "1+1=", 8, gold="2")
  assert sim.cache_key(a) != sim.cache_key(CloudRequest("t:eval:1", "1+1=", 8, gold="2"))
  assert sim.cache_key(a) != make_cloud("simulated", seed=1).cache_key(a)
  from dacl.cloud.openai import OpenAICloud
  o = OpenAICloud("http://127.0.0.1:1/v1", model="m")
  # over HTTP the answer depends on prompt and settings only, not on the row key
  assert o.cache_key(a) == o.cache_key(CloudRequest("other", "1+1=", 8))
  assert o.cache_key(a) != o.cache_key(CloudRequest("t:train:1", "1+1=", 9))
  assert o.cache_key(a) != OpenAICloud("http://127.0.0.1:1/v1", model="n").cache_key(a)

"""A persistent cloud-response cache in SQLite, so reruns and resumed runs do not pay twice.

Key: `CloudLLM.cache_key(request)` (back-end identity, prompt, max_tokens, temperature). Each answer is committed the
moment it arrives (WAL journal): a process killed with SIGKILL loses at most the answers still in
flight, and the database is never left half-written. Only successful answers are stored.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Optional

from dacl.cloud.protocol import CloudResponse

_SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
  key TEXT PRIMARY KEY, backend TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)"""


class ResponseCache:
  def __init__(self, path: str):
    self.path = path
    self._lock = threading.Lock()
    try:
      self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
      self._db.execute("PRAGMA journal_mode=WAL")
      self._db.execute("PRAGMA synchronous=NORMAL")   # durable across process death in WAL mode
      self._db.execute(_SCHEMA)
    except sqlite3.DatabaseError as e:
      raise sqlite3.DatabaseError(
          f"cloud response cache {path} is not a usable SQLite database ({e}); move it aside "
          f"or set --config.cloud.cache_path to another file") from e

  def get(self, key: str) -> Optional[CloudResponse]:
    with self._lock:
      row = self._db.execute("SELECT response FROM responses WHERE key=?", (key,)).fetchone()
    if row is None:
      return None
    try:
      return CloudResponse(**json.loads(row[0]))
    except (ValueError, TypeError):
      return None   # an unreadable row is a miss, never a crash

  def put(self, key: str, backend: str, resp: CloudResponse) -> None:
    if not resp.ok:
      return
    blob = json.dumps({**resp.__dict__, "cached": False})
    with self._lock:
      self._db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?)",
                       (key, backend, blob, time.time()))

  def __len__(self) -> int:
    with self._lock:
      return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

  def close(self) -> None:
    with self._lock:
      self._db.close()

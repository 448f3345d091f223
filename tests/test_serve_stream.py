"""The continuous engine and streaming: requests that join a running decode get exactly the static
sampler's greedy tokens; a short request leaves before a long one ends; per-row sampling follows
a full-sort reference; a seed fixes a request's samples; no compile after warm-up; `stream=true`
through the official openai client (chat, completions, usage chunk), collaborative included."""
import concurrent.futures
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dacl.models.config import get_preset
from dacl.models.decoder import create_model
from dacl.sampling import Sampler, SamplingParams, sample_rows
from dacl.serve import continuous
from dacl.serve.continuous import ContinuousEngine
from dacl.serve.engine import GenParams
from dacl.tokenizers import ByteTokenizer

from test_sampling import _full_sort_reference


@pytest.fixture(scope="module")
def engine():
  # peaky, varied predictions; not test_sampling's model (whose compile counts it checks)
  cfg = get_preset("tiny", n_layers=2, init_std=0.29)
  model, tok = create_model(cfg, seed=1), ByteTokenizer()
  e = ContinuousEngine(model, tok, slots=4, max_cache_len=128, decode_chunk=8)
  e.warmup()
  assert e.wait_small_steps(timeout=120)   # the 1-row steps, compiled in the background
  yield e, Sampler(model, tok, max_cache_len=128)
  e.close()


def test_joining_requests_get_the_static_samplers_greedy_tokens(engine):
  e, ref = engine
  tok = e.tokenizer
  prompts = ["12+34=", "a much longer prompt with padding " * 2, "7*8=", "hello", "x", "abc" * 10]
  max_tokens = [12, 5, 40, 9, 30, 3]
  futs = []
  for i, (p, mt) in enumerate(zip(prompts, max_tokens)):
    futs.append(e.submit(tok.encode(p), GenParams(max_tokens=mt, temperature=0.0)))
    if i == 2:
      time.sleep(0.05)     # the rest join a decode already running (6 requests, 4 slots)
  for p, mt, f in zip(prompts, max_tokens, futs):
    c = f.result(timeout=60).completions[0]
    want = ref([p], jax.random.key(0), SamplingParams(max_new_tokens=mt, temperature=0))
    assert (c.text, c.tokens) == (want.texts[0], int(want.lengths[0])), p
    assert c.finish_reason == ("length" if want.stop_reason[0] == 0 else "stop")


def test_a_lone_request_steps_over_one_row_and_decodes_the_same(engine):
  """One active slot: the step runs over a copy of slot 0's filled cache (1-row GEMMs) and writes
  back only the new column; a later request on the all-slots step must find the cache intact."""
  e, ref = engine
  tok = e.tokenizer
  before = dict(e.stats["row_steps"])
  c = e.submit(tok.encode("12+34="), GenParams(max_tokens=60, temperature=0.0)).result(timeout=60)
  assert e.stats["row_steps"].get("1", 0) - before.get("1", 0) >= 50
  want = ref(["12+34="], jax.random.key(0), SamplingParams(max_new_tokens=60, temperature=0))
  assert (c.completions[0].text, c.completions[0].tokens) == (want.texts[0], int(want.lengths[0]))
  # two long rows then one: the second finishes on 1-row steps, then the rows rejoin the 4-slot step
  prompts, mts = ["a long prompt to fill the cache", "7*8=", "hello"], [80, 20, 30]
  futs = [e.submit(tok.encode(p), GenParams(max_tokens=mt, temperature=0.0))
          for p, mt in zip(prompts, mts)]
  for p, mt, f in zip(prompts, mts, futs):
    want = ref([p], jax.random.key(0), SamplingParams(max_new_tokens=mt, temperature=0))
    assert f.result(timeout=60).completions[0].text == want.texts[0], p


def test_chunked_steps_decode_what_single_steps_decode(engine):
  """decode_chunk = 8 (the fixture's engine): a lone request runs on chunked steps, and greedy
  and seeded sampled tokens equal those of an engine that steps one token per call, including
  rows that stop mid-chunk (max_tokens not a multiple of 8)."""
  e, _ = engine
  one = ContinuousEngine(nnx.merge(e.graphdef, e.state), e.tokenizer, slots=4, max_cache_len=128,
                         decode_chunk=1, row_buckets=())
  try:
    before = e.stats["chunk_steps"]
    for params in (GenParams(max_tokens=45, temperature=0.0),
                   GenParams(max_tokens=37, temperature=1.0, top_k=20, seed=5)):
      ids = e.tokenizer.encode("12+34=")
      got = e.submit(ids, params).result(timeout=60).completions[0]
      want = one.submit(ids, params).result(timeout=60).completions[0]
      assert (got.text, got.tokens, got.finish_reason) == (want.text, want.tokens,
                                                           want.finish_reason)
    assert e.stats["chunk_steps"] - before >= 8
    assert one.stats["chunk_steps"] == 0
  finally:
    one.close()


def test_a_short_request_leaves_before_a_long_one_ends(engine):
  e, _ = engine
  tok, done = e.tokenizer, {}
  started, queued = threading.Event(), threading.Event()

  def hold(g, delta, finish):   # the engine thread waits at the long row's first token until
    started.set()               # the short request is queued (a fixed sleep raced chunked steps)
    queued.wait(10)

  long = e.submit(tok.encode("long"), GenParams(max_tokens=100, temperature=0.0), listener=hold)
  long.add_done_callback(lambda f: done.setdefault("long", time.perf_counter()))
  assert started.wait(60)
  short = e.submit(tok.encode("short"), GenParams(max_tokens=2, temperature=0.0))
  queued.set()
  short.add_done_callback(lambda f: done.setdefault("short", time.perf_counter()))
  long.result(timeout=60), short.result(timeout=60)
  assert done["short"] < done["long"]


def test_cancel_frees_the_slot(engine):
  e, _ = engine
  first, cancelled = threading.Event(), threading.Event()

  def hold(g, delta, finish):   # the engine waits at the first token until the cancel is in,
    first.set()                 # so the row cannot finish first
    cancelled.wait(10)

  before = e.stats["cancelled_rows"]
  fut = e.submit(e.tokenizer.encode("go"), GenParams(max_tokens=120, temperature=0.0),
                 listener=hold)
  assert first.wait(60)
  e.cancel(fut)
  cancelled.set()
  with pytest.raises(concurrent.futures.CancelledError):
    fut.result(timeout=60)
  assert e.stats["cancelled_rows"] == before + 1
  assert e.submit(e.tokenizer.encode("next"), GenParams(max_tokens=2)).result(timeout=60)


def test_no_compile_after_warmup(engine):
  e, _ = engine
  sizes = lambda: (continuous.slot_step._cache_size(), continuous.prefill_row._cache_size())
  before = sizes()
  futs = [e.submit(e.tokenizer.encode("q" * n), GenParams(max_tokens=mt, temperature=t, top_p=0.9))
          for n, mt, t in ((1, 3, 0.0), (20, 50, 1.0), (70, 40, 0.7), (100, 27, 0.0))]
  [f.result(timeout=60) for f in futs]
  assert sizes() == before


def test_seed_fixes_a_request_whatever_it_is_batched_with(engine):
  e, _ = engine
  p = GenParams(max_tokens=20, temperature=1.0, top_k=50, seed=11)
  ids = e.tokenizer.encode("12+")
  alone = e.submit(ids, p).result(timeout=60).completions[0].text
  others = [e.submit(e.tokenizer.encode(f"{i}*"), GenParams(max_tokens=30, temperature=1.0))
            for i in range(3)]
  crowded = e.submit(ids, p).result(timeout=60).completions[0].text
  [f.result(timeout=60) for f in others]
  other_seed = e.submit(ids, GenParams(max_tokens=20, temperature=1.0, top_k=50, seed=12))
  assert alone == crowded
  assert other_seed.result(timeout=60).completions[0].text != alone


def test_per_row_sampling_follows_a_full_sort_reference():
  V, N = 512, 4
  logits = 4.0 * jax.random.normal(jax.random.key(5), (N, V))
  settings = [(1.0, 0, 0.9), (1.0, 5, 1.0), (0.0, 0, 1.0), (1.0, 0, 1.0)]   # per row: T, k, p
  temp, top_k, top_p = (jnp.asarray(x) for x in zip(*settings))
  draw = jax.jit(jax.vmap(lambda k: sample_rows(logits, jax.random.split(k, N), temp.astype(jnp.float32),
                                                 top_k.astype(jnp.int32), top_p.astype(jnp.float32))[0]))
  toks = np.asarray(draw(jax.random.split(jax.random.key(0), 3000)))    # [3000, N]
  for n, (t, k, p) in enumerate(settings):
    if t == 0:
      assert (toks[:, n] == int(jnp.argmax(logits[n]))).all()
      continue
    keep, probs = _full_sort_reference(logits[n:n + 1], k, p)
    assert keep[0, toks[:, n]].all()
    emp = np.bincount(toks[:, n], minlength=V) / len(toks)
    assert np.abs(emp - probs[0]).max() < 0.035, (t, k, p)


@pytest.fixture(scope="module")
def server():
  from configs.serve_tiny import get_config
  from dacl.serve import ServerThread, build_app
  c = get_config()
  c.unlock()
  c.model.max_seq_len = 128
  srv = ServerThread(build_app(c))
  yield srv
  srv.close()


def test_stream_through_the_openai_client(server):
  openai = pytest.importorskip("openai")
  client = openai.OpenAI(base_url=server.base_url, api_key="unused")
  kw = dict(model="dacl-tiny", max_tokens=12, temperature=0)
  whole = client.completions.create(prompt="3+4=", **kw)
  chunks = list(client.completions.create(prompt="3+4=", stream=True,
                                          stream_options={"include_usage": True}, **kw))
  text = "".join(c.choices[0].text for c in chunks if c.choices)
  assert text == whole.choices[0].text
  assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1     # token by token
  assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
  assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
  msgs = [{"role": "user", "content": "hi"}]
  whole = client.chat.completions.create(messages=msgs, **kw)
  chunks = list(client.chat.completions.create(messages=msgs, stream=True, n=2, **kw))
  assert chunks[0].choices[0].delta.role == "assistant"
  for idx in (0, 1):
    got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == idx)
    assert got == whole.choices[0].message.content
  finals = [c.choices[0] for c in chunks if c.choices[0].finish_reason]
  assert sorted(f.index for f in finals) == [0, 1]


def test_collab_streams_its_answer_and_route():
  openai = pytest.importorskip("openai")
  from configs.serve_tiny import get_config
  from dacl.serve import ServerThread, build_app
  c = get_config()
  c.unlock()
  c.model.max_seq_len = 128
  c.serve.warmup = False
  srv = ServerThread(build_app(c, collab=True))
  try:
    client = openai.OpenAI(base_url=srv.base_url, api_key="unused")
    kw = dict(model="dacl-tiny", prompt="12+7=", max_tokens=8, temperature=0)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(ch.choices[0].text for ch in chunks) == whole.choices[0].text
    assert chunks[-1].model_extra["dacl"]["route"] in ("local", "cloud", "local_budget")
  finally:
    srv.close()


def test_client_disconnect_frees_its_slot(server):
  import httpx
  stats = lambda: httpx.get(server.base_url[:-3] + "/dacl/stats").json()["engine"]
  before = stats()["cancelled_rows"]
  body = {"prompt": "x", "max_tokens": 120, "temperature": 0, "stream": True}
  with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=60) as r:
    for line in r.iter_lines():
      if line.startswith("data: "):
        break              # leave after the first delta
  for _ in range(200):
    if stats()["cancelled_rows"] > before:
      break
    time.sleep(0.05)
  assert stats()["cancelled_rows"] == before + 1

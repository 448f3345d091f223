from dacl.tokenizers import ByteTokenizer, render_chat_template


def test_byte_roundtrip_and_specials():
  t = ByteTokenizer()
  ids = t.encode("12+3=<cloud>é", add_bos=True)
  assert ids[0] == t.bos_id and t.token_id("<cloud>") in ids
  assert t.decode(ids) == "12+3=é"
  assert t.decode(ids, skip_special=False) == "<bos>12+3=<cloud>é"
  assert t.encode("a<b", add_bos=False) == [16 + ord("a"), 16 + ord("<"), 16 + ord("b")]
  assert t.encode("a") == [t.bos_id, 16 + ord("a")]     # default: <bos> first
  assert max(t.encode("\xff" * 3)) < t.vocab_size


def test_chat_template_renders_like_hf():
  tpl = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
  out = render_chat_template(tpl, [{"role": "user", "content": "hi"}], True)
  assert out == "<|user|>hi\n<|assistant|>"


def test_byte_step_phrases_are_single_tokens_and_roundtrip():
  t = ByteTokenizer()
  text = ("Question: 3+4=\nThought: add\nAction: R1 = Calculator(3+4)\nObservation: 7\n"
          "Reflection: Is previous step wrong: No\nThought: done\nAction: Finish(R1)\nObservation:")
  ids = t.encode(text, add_bos=False)
  assert t.decode(ids) == text == t.decode(ids, skip_special=False)
  assert len(ids) < len(text.encode()) - 60
  assert t.encode("Reflection: Is previous step wrong: ", add_bos=False) == [t.token_id("<reflection>")]
  assert t.encode("Observation:", add_bos=False) == [t.token_id("<observation>")]
  # a near-miss stays bytes; segment-wise encoding equals whole-text encoding
  assert t.encode("Thought:x", add_bos=False) == [16 + b for b in b"Thought:x"]
  parts = ["Thought: add\n", "Action: R1 = Calculator(3+4)\n", "Observation:", " 7\n"]
  assert sum((t.encode(p, add_bos=False) for p in parts), []) == t.encode("".join(parts), add_bos=False)

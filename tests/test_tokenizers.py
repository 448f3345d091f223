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

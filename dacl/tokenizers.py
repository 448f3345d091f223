"""Tokenizers: a byte-level tokenizer with dacl's special tokens (models trained from scratch)
and a wrapper over Hugging Face `tokenizers` (tokenizer.json or a GGUF vocabulary), both with
chat templates.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

# Special tokens of dacl's byte tokenizer. `<cloud>` is the offload marker; the step markers
# serve AdaSwitch's step format.
BYTE_SPECIALS = ("<pad>", "<bos>", "<eos>", "<cloud>", "<step>", "<thought>", "<action>",
                 "<observation>", "<reflection>", "<answer>")
_BYTE_OFFSET = 16  # ids 0..15 are reserved for specials; byte b has id 16 + b
# Fixed phrases of AdaSwitch's step format, each one token for byte-level models (they are most of
# a step's bytes). Encoding maps the exact phrase to its token and decoding maps it back, so the
# text is unchanged; BPE tokenizers see the plain text.
BYTE_PHRASES = {"Thought: ": "<thought>", "Action: ": "<action>", "Observation:": "<observation>",
                "Reflection: Is previous step wrong: ": "<reflection>"}


class ByteTokenizer:
  """UTF-8 bytes plus special tokens. vocab_size = 272 (matches the `tiny` preset)."""

  vocab_size = _BYTE_OFFSET + 256

  def __init__(self):
    self.special_ids = {t: i for i, t in enumerate(BYTE_SPECIALS)}
    self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
    self.stop_ids = (self.eos_id,)
    self.phrase_ids = {ph: self.special_ids[t] for ph, t in BYTE_PHRASES.items()}
    self.id_phrases = {i: ph for ph, i in self.phrase_ids.items()}
    self._starts = "<" + "".join(sorted({ph[0] for ph in BYTE_PHRASES}))

  def token_id(self, token: str) -> int:
    if token not in self.special_ids:
      raise KeyError(f"unknown special token {token!r}; known: {list(self.special_ids)}")
    return self.special_ids[token]

  def encode(self, text: str, add_bos: Optional[bool] = None) -> list[int]:
    """add_bos: None = this tokenizer's default (True: from-scratch models always see <bos>)."""
    add_bos = True if add_bos is None else add_bos
    ids, i = [], 0
    # Special tokens written literally in text, and the step-format phrases, are single ids.
    while i < len(text):
      if text[i] in self._starts:
        hit = next(((t, tid) for t, tid in self.special_ids.items() if text.startswith(t, i)), None) \
            if text[i] == "<" else None
        hit = hit or next(((ph, pid) for ph, pid in self.phrase_ids.items()
                           if text.startswith(ph, i)), None)
        if hit:
          ids.append(hit[1])
          i += len(hit[0])
        else:
          ids.extend(_BYTE_OFFSET + b for b in text[i].encode("utf-8"))
          i += 1
        continue
      j = min([k for k in (text.find(c, i) for c in self._starts) if k >= 0], default=len(text))
      ids.extend(_BYTE_OFFSET + b for b in text[i:j].encode("utf-8"))
      i = j
    return ([self.bos_id] if add_bos else []) + ids

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    out, buf = [], bytearray()
    for t in ids:
      t = int(t)
      if _BYTE_OFFSET <= t < self.vocab_size:
        buf.append(t - _BYTE_OFFSET)
        continue
      if t >= self.vocab_size:   # id outside this vocabulary (e.g. a larger model's head)
        buf.extend("\ufffd".encode())
        continue
      if buf:
        out.append(buf.decode("utf-8", errors="replace"))
        buf = bytearray()
      if t in self.id_phrases:          # a step-format phrase: text, not a control token
        out.append(self.id_phrases[t])
      elif not skip_special and t < len(BYTE_SPECIALS):
        out.append(BYTE_SPECIALS[t])
    if buf:
      out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Minimal template for from-scratch models: the user turns' text, concatenated."""
    return "".join(m["content"] for m in messages if m["role"] != "system")


def render_chat_template(template: str, messages: list[dict], add_generation_prompt: bool,
                         **specials) -> str:
  """Render a Hugging Face style Jinja chat template (sandboxed, as transformers does)."""
  from jinja2.exceptions import TemplateError
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(msg):
    raise TemplateError(msg)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals["raise_exception"] = raise_exception
  env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
  return env.from_string(template).render(messages=messages,
                                          add_generation_prompt=add_generation_prompt, **specials)


class HFTokenizer:
  """Wraps a `tokenizers.Tokenizer` with ids of the special tokens and a chat template."""

  def __init__(self, tok, bos: Optional[str], eos: Optional[str], pad: Optional[str] = None,
               chat_template: Optional[str] = None, add_bos: bool = False,
               extra_stop: Sequence[str] = ()):
    self.tok = tok
    self.vocab_size = tok.get_vocab_size()
    self.bos_token, self.eos_token = bos, eos
    self.bos_id = tok.token_to_id(bos) if bos else None
    self.eos_id = tok.token_to_id(eos) if eos else None
    pad_id = tok.token_to_id(pad) if pad else None
    self.pad_id = pad_id if pad_id is not None else (self.eos_id or 0)
    self.chat_template = chat_template
    self.add_bos_default = add_bos
    stops = [self.eos_id] + [tok.token_to_id(s) for s in extra_stop]
    self.stop_ids = tuple(sorted({s for s in stops if s is not None}))

  def token_id(self, token: str) -> int:
    tid = self.tok.token_to_id(token)
    if tid is None:
      raise KeyError(f"token {token!r} is not in the vocabulary")
    return tid

  def encode(self, text: str, add_bos: Optional[bool] = None) -> list[int]:
    ids = self.tok.encode(text, add_special_tokens=False).ids
    add_bos = self.add_bos_default if add_bos is None else add_bos
    return ([self.bos_id] if add_bos and self.bos_id is not None else []) + list(ids)

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    if not self.chat_template:
      raise ValueError("this tokenizer has no chat template")
    return render_chat_template(self.chat_template, messages, add_generation_prompt,
                                bos_token=self.bos_token or "", eos_token=self.eos_token or "")

  @classmethod
  def from_dir(cls, path: str) -> "HFTokenizer":
    """tokenizer.json + tokenizer_config.json (+ chat_template.jinja) from an HF directory."""
    from tokenizers import Tokenizer
    tj = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tj):
      raise FileNotFoundError(f"no tokenizer.json in {path}")
    tok = Tokenizer.from_file(tj)
    conf = {}
    cj = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(cj):
      with open(cj) as f:
        conf = json.load(f)

    def name(v):
      return v.get("content") if isinstance(v, dict) else v

    template = conf.get("chat_template")
    tpl_file = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.exists(tpl_file):
      with open(tpl_file) as f:
        template = f.read()
    return cls(tok, bos=name(conf.get("bos_token")), eos=name(conf.get("eos_token")),
               pad=name(conf.get("pad_token")), chat_template=template,
               add_bos=bool(conf.get("add_bos_token", False)))

  @classmethod
  def from_gguf_fields(cls, fields: dict) -> "HFTokenizer":
    """Build a byte-level BPE from GGUF `tokenizer.ggml.*` fields (gpt2-style vocabularies)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken
    if fields.get("tokenizer.ggml.model") != "gpt2":
      raise NotImplementedError(f"GGUF tokenizer model {fields.get('tokenizer.ggml.model')!r}")
    tokens = fields["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    types = fields.get("tokenizer.ggml.token_type", [])
    # token_type 3 = control tokens: register them as specials so they are never split.
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i, t in enumerate(types) if int(t) == 3]
    tok.add_special_tokens(specials)
    tid = lambda k: fields.get(k)
    bos = tokens[tid("tokenizer.ggml.bos_token_id")] if tid("tokenizer.ggml.bos_token_id") is not None else None
    eos = tokens[tid("tokenizer.ggml.eos_token_id")] if tid("tokenizer.ggml.eos_token_id") is not None else None
    pad = tokens[tid("tokenizer.ggml.padding_token_id")] if tid("tokenizer.ggml.padding_token_id") is not None else None
    return cls(tok, bos=bos, eos=eos, pad=pad, chat_template=fields.get("tokenizer.chat_template"),
               add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
               extra_stop=[t for t in ("<|endoftext|>",) if t in vocab])

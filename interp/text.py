"""Exact text for token ids: each token's bytes, and text decoded from spans of them.

A byte-level BPE token (GPT-2, Llama 3, SmolLM2) is a fixed string of bytes, and one character
may be split across tokens (an emoji is 4 bytes, often 2-4 tokens). Decoding one token at a time
garbles such characters; so text is decoded from spans, and a token's own text is the characters
its bytes complete (:func:`token_texts`): joined, the pieces are exactly the span's text.

:class:`Vocab` holds every token's bytes (from :func:`token_bytes` of a tokenizer) and needs no
tokenizer afterwards, so a feature store can show text offline. It is stored as two arrays
(``bytes`` uint8, ``offsets`` int64 [V+1]).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_HEX_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # sentencepiece byte fallback


def byte_to_char() -> dict[int, str]:
    """The usual byte-level BPE alphabet (GPT-2's): each byte value -> one printable character.

    Printable latin-1 bytes map to themselves; the rest (control chars, space, ...) are shifted
    to code points from 256 upwards, so every byte has a visible, unique symbol.
    """
    keep = [b for b in range(256) if (33 <= b <= 126) or (161 <= b <= 172) or (174 <= b <= 255)]
    mapping = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


def _byte_level_map() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes of every token id of a Hugging Face tokenizer, ``len(tokenizer)`` of them.

    Byte-level BPE pieces are mapped back through GPT-2's byte-to-character table; sentencepiece
    pieces turn ``▁`` into a space and ``<0xNN>`` into the byte NN; special tokens are their text.
    """
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = set(getattr(tokenizer, "get_added_vocab", dict)() or {})
    b2 = _byte_level_map()
    plain = [p for p in pieces if p is not None and p not in special and p not in added]
    byte_level = bool(plain) and all(all(ch in b2 for ch in p) for p in plain)
    out: list[bytes] = []
    for p in pieces:
        if p is None:
            out.append(b"")
        elif p in special or p in added:
            out.append(p.encode("utf-8"))
        elif byte_level:
            out.append(bytes(b2[ch] for ch in p))
        elif m := _HEX_BYTE.match(p):
            out.append(bytes([int(m.group(1), 16)]))
        else:
            out.append(p.replace("\u2581", " ").encode("utf-8"))
    return out


@dataclass
class Vocab:
    """Every token's bytes, as one byte array and offsets: token i is data[offsets[i]:offsets[i+1]]."""

    data: bytes
    offsets: list[int]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Vocab:
        return cls.from_pieces(token_bytes(tokenizer))

    @classmethod
    def from_pieces(cls, pieces: Sequence[bytes]) -> Vocab:
        offsets = [0]
        for p in pieces:
            offsets.append(offsets[-1] + len(p))
        return cls(b"".join(pieces), offsets)

    @classmethod
    def from_tensors(cls, data: torch.Tensor, offsets: torch.Tensor) -> Vocab:
        return cls(bytes(data.to(torch.uint8).tolist()), [int(o) for o in offsets.tolist()])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "bytes": torch.frombuffer(bytearray(self.data), dtype=torch.uint8)
            if self.data
            else torch.zeros(0, dtype=torch.uint8),
            "offsets": torch.tensor(self.offsets, dtype=torch.int64),
        }

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, token: int) -> bytes:
        if not 0 <= token < len(self):
            raise IndexError(f"token id {token} is outside the vocabulary (size {len(self)})")
        return self.data[self.offsets[token] : self.offsets[token + 1]]

    def span_bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.piece(int(t)) for t in ids)

    def text(self, ids: Sequence[int]) -> str:
        """The text of a span of tokens, decoded as one byte string (invalid bytes become U+FFFD)."""
        return self.span_bytes(ids).decode("utf-8", errors="replace")

    def label(self, token: int) -> str:
        """One token shown alone: its text if its bytes are whole UTF-8, else its bytes in hex
        (``<0xE2 0x80>``), never a replacement character."""
        raw = self.piece(int(token))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "<" + " ".join(f"0x{b:02X}" for b in raw) + ">"

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """One string per token: the characters whose last byte that token holds.

        A token that ends inside a multi-byte character gets "" and the token that completes it
        gets the whole character, so ``"".join(token_texts(ids)) == text(ids)`` always.
        """
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = [dec.decode(self.piece(int(t))) for t in ids]
        tail = dec.decode(b"", final=True)
        if tail and out:
            out[-1] += tail
        return out


def show_whitespace(text: str) -> str:
    """Text with its whitespace made visible: space as ·, tab as →, newline as ↵ (kept)."""
    return text.replace(" ", "\u00b7").replace("\t", "\u2192").replace("\n", "\u21b5\n")

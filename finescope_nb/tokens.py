"""Tokens as a reader can read them: byte pieces never shown as "�", word fragments marked as such.

A byte-level BPE tokenizer (the kit's own, GPT-2's, SmolLM2's) splits a multi-byte character such
as "é" or "—" into tokens that each hold part of its UTF-8 bytes; decoding one such token alone
gives "\ufffd" ("�"). Two displays fix that:

- `token_labels`: every token id on its own (logit tables, enrichment tables, peak tokens). Bytes
  that do not form a whole character are written as escapes, `<0xC3>`; a token that continues a
  word (no space before it, starting with a letter or digit) is prefixed with `·`, so "·ing" reads
  as the end of a word and " ing" (a leading space) as a word of its own. A token of whitespace alone
  is drawn visibly (␣ space, ↵ line break, ⇥ tab), control characters as escapes. docs/GLOSSARY.md explains these.
- `readable_sequence`: tokens of running text (top contexts, the prompt box). Byte pieces are
  merged into the character they form, shown on the token that completes it; the pieces before it
  show nothing. Bytes that never complete a character (cut by a window's edge, or invalid) are escapes.

`token_bytes` recovers each token's bytes from the tokenizer: byte-level BPE through its byte-to-
character table, SentencePiece through its `<0x..>` byte-fallback tokens and `▁` spaces. A tokenizer
of neither kind falls back to the decoded text of each token.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

FRAGMENT_MARK = "·"
VISIBLE_SPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥"})  # a token of whitespace alone, drawn visibly
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """Byte-level BPE's printable stand-in of every byte (GPT-2's table), inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", None)) if backend is not None else ""
    if "ByteLevel" in decoder:
        return "byte_level"
    if "ByteFallback" in decoder or "Metaspace" in decoder or hasattr(tokenizer, "sp_model"):
        return "sentencepiece"
    return "text"


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes of every token id; None for special tokens (shown by their name instead)."""
    kind = _decoder_kind(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    table = _byte_level_table()
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif kind == "byte_level" and all(c in table for c in piece):
            out.append(bytes(table[c] for c in piece))
        elif kind == "sentencepiece":
            match = _BYTE_FALLBACK.match(piece)
            out.append(bytes([int(match.group(1), 16)]) if match else piece.replace("▁", " ").encode())
        else:
            out.append(tokenizer.decode([i]).encode())
    return out


def _escape(data: bytes) -> str:
    return "".join(f"<0x{b:02X}>" for b in data)


def decode_bytes(data: bytes) -> tuple[str, bytes]:
    """The text of `data`, invalid bytes as escapes, and the trailing bytes of an unfinished character."""
    text = []
    while data:
        try:
            text.append(data.decode("utf-8"))
            return "".join(text), b""
        except UnicodeDecodeError as err:
            text.append(data[:err.start].decode("utf-8"))
            if err.reason == "unexpected end of data" and err.end == len(data):
                return "".join(text), data[err.start:]
            text.append(_escape(data[err.start:err.end]))
            data = data[err.end:]
    return "".join(text), b""


def token_label(piece: bytes | None, name: str = "", mark_fragment: bool = True) -> str:
    """One token on its own: whole characters as text, partial bytes as `<0x..>`, a word's continuation as `·ing`.

    `name` is what a special token (piece None) is called, e.g. '<|endoftext|>'. `mark_fragment` only
    where the tokenizer's tokens carry their leading space (byte-level BPE, SentencePiece); a word-level
    tokenizer's tokens carry none, so there no token can be told to continue a word."""
    if piece is None:
        return name
    text, rest = decode_bytes(piece)
    text = "".join(c if c.isprintable() or c in "\n\t " else _escape(c.encode()) for c in text) + _escape(rest)
    if not text.strip():  # only whitespace: show it, or the cell looks empty
        return text.translate(VISIBLE_SPACE)
    if mark_fragment and text[:1].isalnum():
        text = FRAGMENT_MARK + text
    return text


def token_labels(tokenizer) -> list[str]:
    """`token_label` of every token id of `tokenizer`."""
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    marks = _decoder_kind(tokenizer) != "text"
    return [token_label(piece, name or "", marks) for piece, name in zip(token_bytes(tokenizer), names)]


def readable_sequence(pieces: Sequence[bytes | None], names: Sequence[str] | None = None) -> list[str]:
    """Consecutive tokens of a text, one string per token: a character split over byte pieces is shown
    whole on the piece that completes it (the pieces before it show ""); bytes left unfinished are escapes."""
    out, pending = [], b""
    for i, piece in enumerate(pieces):
        if piece is None:  # a special token ends any unfinished character
            if out and pending:
                out[-1] += _escape(pending)
            pending = b""
            out.append(names[i] if names is not None else "")
            continue
        text, pending = decode_bytes(pending + piece)
        out.append(text)
    if out and pending:
        out[-1] += _escape(pending)
    return out


def plain(label: str) -> str:
    """A label without its fragment mark, for matching what a user types."""
    return label[len(FRAGMENT_MARK):] if label.startswith(FRAGMENT_MARK) else label

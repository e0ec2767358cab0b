"""Tokens as a reader sees them: no "�" for byte pieces, fragments marked, running text merged."""

from finescope_nb import load_tokenizer
from finescope_nb.tokens import FRAGMENT_MARK, decode_bytes, plain, readable_sequence, token_bytes, token_label, token_labels

TEXT = "café — naïve 😀 x=αβ, the running dog"


def test_byte_pieces_become_escapes_on_their_own_and_characters_in_running_text():
    tok = load_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the tokenizer does split characters into byte pieces
    labels = token_labels(tok)
    assert not any("\ufffd" in labels[i] for i in ids)
    assert any(labels[i].startswith("<0x") for i in ids)
    pieces = token_bytes(tok)
    assert b"".join(pieces[i] for i in ids).decode() == TEXT  # the bytes are exact
    running = readable_sequence([pieces[i] for i in ids])
    assert "".join(running) == TEXT and not any("\ufffd" in t for t in running)
    assert "😀" in running  # the emoji appears whole, on the piece that completes it


def test_fragments_are_marked_and_words_are_not():
    tok = load_tokenizer()
    labels = token_labels(tok)
    ids = tok(" the photosynthesis", add_special_tokens=False)["input_ids"]
    assert len(ids) > 2
    assert labels[ids[0]] == " the"
    assert all(labels[i].startswith(FRAGMENT_MARK) for i in ids[2:])  # every piece after the first of the long word
    assert plain(FRAGMENT_MARK + "ing") == "ing" and plain(" the") == " the"
    assert labels[tok.eos_token_id] == tok.eos_token  # special tokens by name


def test_bytes_that_never_complete_a_character_are_escaped():
    assert token_label(b"\xe2\x80") == "<0xE2><0x80>"
    assert token_label(b"ing") == FRAGMENT_MARK + "ing"
    assert token_label(b"\n  ") == "↵␣␣" and token_label(b" x") == " x" and token_label(b"\x01") == "<0x01>"
    assert decode_bytes(b"a\xffb\xe2") == ("a<0xFF>b", b"\xe2")
    assert readable_sequence([b"\xe2", b"\x80", b"\x94", b" x"]) == ["", "", "—", " x"]
    assert readable_sequence([b"\xa9", b"x", b"\xc3"]) == ["<0xA9>", "x", "<0xC3>"]  # cut at both edges of a window
    assert readable_sequence([b"\xc3", None, b"x"], ["", "<s>", ""]) == ["<0xC3>", "<s>", "x"]


def test_a_word_level_tokenizer_marks_no_fragments():
    import tiny_models as tm

    labels = token_labels(tm.tokenizer())
    assert not any(label.startswith(FRAGMENT_MARK) for label in labels) and "the" in labels

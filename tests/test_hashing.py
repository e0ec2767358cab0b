"""The content key that every cache of texts shares."""

import hashlib

from finescope_nb.hashing import text_digest


def test_text_digest_is_the_sha256_of_the_nul_joined_strings():
    # Pinned bytes: cached pool codes, SAEs and curated pools on disk are keyed by this exact join.
    assert text_digest(["a", "b"], length=64) == hashlib.sha256(b"a\x00b").hexdigest()
    assert text_digest(["a", "b"]) == hashlib.sha256(b"a\x00b").hexdigest()[:12]


def test_text_digest_turns_ids_into_strings_and_keeps_order_and_boundaries():
    assert text_digest([1, 2]) == text_digest(["1", "2"])
    assert text_digest(["a", "b"]) != text_digest(["b", "a"])
    assert text_digest(["ab", "c"]) != text_digest(["a", "bc"])

"""dna/strict_json.py: the one parser every reader of untrusted JSON uses is bounded and total."""

from __future__ import annotations

import json
import random

import pytest

from dna.strict_json import MAX_DEPTH, UntrustedJSONError, nesting_depth, parse_json


@pytest.mark.parametrize("raw, words", [
    (b"[" * 300_000 + b"]" * 300_000, "nested deeper than 32 levels"),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, "nested deeper than 32 levels"),
    (b'{"a": 1e999}', "number 1e999 is out of range"),
    (b'{"a": -1e400}', "out of range"),
    (b'{"a": NaN}', "NaN is not allowed"),
    (b'[Infinity]', "Infinity is not allowed"),
    (b"1" * 21, "integer of 21 digits is out of range"),
    (b"-" + b"9" * 5000, "out of range"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"a": 1', "not valid JSON"),
    (b"", "not valid JSON"),
    (b'["unterminated', "not valid JSON"),
])
def test_refuses_with_one_line_naming_what(raw, words):
    with pytest.raises(UntrustedJSONError) as info:
        parse_json(raw, "policy version")
    message = str(info.value)
    assert words in message and message.startswith("policy version ") and "\n" not in message


def test_size_is_bounded_before_decoding():
    with pytest.raises(UntrustedJSONError, match=r"too large \(1001 bytes, at most 1000\)"):
        parse_json(b" " * 1001, "config", max_bytes=1000)
    assert parse_json(b" " * 999 + b"1", "config", max_bytes=1000) == 1


def test_brackets_inside_strings_do_not_count():
    deep_text = "[" * 1000
    raw = json.dumps({"s": deep_text, "t": ["]]]\"[[[" * 50] * 40}).encode()
    assert parse_json(raw, "record") == {"s": deep_text, "t": ["]]]\"[[[" * 50] * 40}


def test_accepts_exactly_max_depth_and_reports_depth_past_it():
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert nesting_depth(at_limit) <= MAX_DEPTH
    assert parse_json(at_limit, "x") is not None
    past = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    assert nesting_depth(past) == MAX_DEPTH + 1
    with pytest.raises(UntrustedJSONError):
        parse_json(past, "x")


def test_agrees_with_json_on_what_evo_writes():
    rng = random.Random(3)
    for _ in range(200):
        value = {"id": f"{rng.randrange(10**8):08d}", "fitness": rng.random(), "n": rng.randrange(2**63),
                 "neg": -rng.randrange(10**19), "nested": [{"k": [rng.random(), None, True, "x\\y\"z"]}] * 3,
                 "tiny": 5e-324, "big": 1.7e308}
        raw = json.dumps(value, sort_keys=True).encode()
        assert parse_json(raw, "x") == json.loads(raw)


def test_never_raises_anything_else_on_random_bytes():
    rng = random.Random(7)
    alphabet = b'[]{}",:0123456789eE.-+ \\tnulfasNIy\xff\x00'
    for _ in range(3000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        try:
            parse_json(raw, "x")
        except UntrustedJSONError as exc:
            assert "\n" not in str(exc)


def test_depth_is_measured_outside_strings_with_and_without_escapes():
    for text in ('{"a": "[[[[\\\\"}', '{"a": "\\"[[[[\\"", "b": [[1]]}', '{"plain": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}'):
        raw = text.encode()
        assert parse_json(raw, "x") == json.loads(raw)
    deep = b'{"s": "\\\\\\"]]]", "v": ' + b"[" * 40 + b"]" * 40 + b"}"
    assert nesting_depth(deep) == MAX_DEPTH + 1
    many = b"[" + b",".join([b"[[1]]"] * 100) + b"]"            # 300 brackets, 3 deep
    assert nesting_depth(many) <= MAX_DEPTH and parse_json(many, "x") == json.loads(many)


def test_unbalanced_brackets_are_a_syntax_error_not_a_depth():
    with pytest.raises(UntrustedJSONError, match="not valid JSON") as info:
        parse_json(b"[" * 20 + b"]" * 40, "x")
    assert "nested deeper" not in str(info.value)

"""The DNA data model: JSON round trip, a content hash stable across processes, validation
with one-line messages, and a fuzzed parser that raises nothing but DNAError."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dna
import mutations
from dna import DNA, Bounds, DNAError, Edge, Vertex


def small_dna(**changes) -> DNA:
    """input 0 --conv 3--> 2 --identity 4--> output 1, plus a skip 0 --identity 5--> 1."""
    base = DNA(
        learning_rate=0.05,
        vertices=(Vertex(0, "linear"), Vertex(1, "linear"), Vertex(2, "bn_relu")),
        edges=(Edge(3, 0, 2, "conv", filter_h=3, filter_w=3, channels=8, stride=1),
               Edge(4, 2, 1, "identity"), Edge(5, 0, 1, "identity")),
        input_id=0, output_id=1, next_id=6,
    )
    return base.replace(**changes)


def evolved(seed: int, steps: int = 40) -> DNA:
    rng = np.random.default_rng(seed)
    d = dna.initial()
    for _ in range(steps):
        d = mutations.mutate(d, rng)
    return d


def assert_one_line(err: BaseException) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and len(msg.splitlines()) == 1, repr(msg)


# ----- JSON round trip and hashing -----

@pytest.mark.parametrize("make", [dna.initial, small_dna, lambda: evolved(0), lambda: evolved(1, 120)])
def test_json_round_trip_is_exact(make):
    d = make()
    text = d.to_json()
    back = dna.from_json(text)
    assert back == d
    assert back.to_json() == text
    assert back.content_hash() == d.content_hash()
    assert dna.from_json(text.encode()) == d


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_json_round_trip_of_random_dna(seed):
    d = mutations.random_dna(np.random.default_rng(seed))
    assert dna.from_json(d.to_json()) == d


def test_content_hash_is_the_same_in_another_process():
    dnas = [dna.initial(), small_dna(), evolved(2, 80)]
    code = ("import sys, dna\n"
            "for line in sys.stdin:\n"
            "    print(dna.from_json(line).content_hash())\n")
    env = dict(os.environ, PYTHONHASHSEED="12345")  # a different str-hash seed must not matter
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(d.to_json() for d in dnas),
                         capture_output=True, text=True, env=env, check=True, timeout=120)
    assert out.stdout.split() == [d.content_hash() for d in dnas]


def test_content_hash_ignores_provenance_but_not_architecture():
    d = small_dna()
    assert d.replace(mutation="identity").content_hash() == d.content_hash()
    assert d.replace(learning_rate=0.06).content_hash() != d.content_hash()
    wider = d.replace(edges=(Edge(3, 0, 2, "conv", 3, 3, 9, 1),) + d.edges[1:])
    assert wider.content_hash() != d.content_hash()


# ----- validation: each problem named in one line -----

def _with_edges(*edges: Edge, vertices=None, next_id=20) -> DNA:
    return small_dna(edges=tuple(edges), vertices=vertices or small_dna().vertices, next_id=next_id)


BAD_DNAS = {
    "cycle": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 6), Edge(5, 6, 2), Edge(7, 6, 1),
                          vertices=small_dna().vertices + (Vertex(6),)), "cycle"),
    "huge channels": (_with_edges(Edge(3, 0, 2, "conv", 3, 3, 10**6, 1), Edge(4, 2, 1)), "channels=1000000"),
    "unknown vertex kind": (small_dna(vertices=(Vertex(0, "linear"), Vertex(1, "linear"), Vertex(2, "softmax"))),
                            "unknown kind 'softmax'"),
    "unknown edge kind": (_with_edges(Edge(3, 0, 2, "maxpool"), Edge(4, 2, 1)), "unknown kind 'maxpool'"),
    "wrong schema": (small_dna(schema=99), "schema version 99"),
    "dangling edge": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 1), Edge(5, 2, 9)), "dangling"),
    "unreachable vertex": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 1), Edge(5, 6, 1),
                                       vertices=small_dna().vertices + (Vertex(6),)), "unreachable"),
    "dead end": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 1), Edge(5, 0, 6),
                             vertices=small_dna().vertices + (Vertex(6),)), "dead end"),
    "learning rate too high": (small_dna(learning_rate=5.0), "outside bounds"),
    "learning rate too low": (small_dna(learning_rate=1e-9), "outside bounds"),
    "even filter": (_with_edges(Edge(3, 0, 2, "conv", 4, 3, 8, 1), Edge(4, 2, 1)), "filter_h=4"),
    "stride not a power of two": (_with_edges(Edge(3, 0, 2, "conv", 3, 3, 8, 3), Edge(4, 2, 1)), "stride=3"),
    "duplicate id": (_with_edges(Edge(3, 0, 2), Edge(2, 2, 1)), "more than once"),
    "parallel edges": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 1), Edge(5, 2, 1)), "duplicates"),
    "id beyond counter": (small_dna(next_id=5), "next_id"),
    "edge into input": (_with_edges(Edge(3, 0, 2), Edge(4, 2, 1), Edge(5, 2, 0)), "enters the input"),
    "too many vertices": (evolved(3, 200), "exceed the bound"),
}


@pytest.mark.parametrize("name", sorted(BAD_DNAS))
def test_validate_rejects_with_one_line_message(name):
    bad, expected = BAD_DNAS[name]
    bounds = Bounds(max_vertices=6, max_edges=12) if name == "too many vertices" else dna.DEFAULT_BOUNDS
    with pytest.raises(DNAError) as info:
        dna.validate(bad, bounds)
    assert expected in str(info.value)
    assert_one_line(info.value)
    # The same DNA as untrusted JSON is rejected the same way (to_json writes any kind string).
    with pytest.raises(DNAError) as info:
        dna.from_json(bad.to_json(), bounds)
    assert_one_line(info.value)


def test_validate_accepts_and_returns_a_good_dna():
    d = small_dna()
    assert dna.validate(d) is d


def _json_with(mangle) -> str:
    d = small_dna().to_dict()
    mangle(d)
    return json.dumps(d)


PARSE_ERRORS = {
    "not json": ("{", "not valid JSON"),
    "not utf-8": (b"\xff\xfe{", "not valid JSON"),
    "not an object": ("[1, 2]", "must be a JSON object"),
    "no schema": (_json_with(lambda d: d.pop("schema")), "no schema"),
    "schema as string": (_json_with(lambda d: d.update(schema="1")), "schema version '1'"),
    "other genome kind": (_json_with(lambda d: d.update(kind="nasnet")), "unknown DNA kind"),
    "unknown top key": (_json_with(lambda d: d.update(extra=1)), "unknown field"),
    "missing key": (_json_with(lambda d: d.pop("next_id")), "missing field"),
    "unknown vertex kind": (_json_with(lambda d: d["vertices"][2].update(kind="softmax")), "unknown kind"),
    "unknown edge kind": (_json_with(lambda d: d["edges"][1].update(kind="pool")), "unknown kind"),
    "id as float": (_json_with(lambda d: d["edges"][1].update(id=4.0)), "must be an integer"),
    "id as bool": (_json_with(lambda d: d["vertices"][0].update(id=False)), "must be an integer"),
    "lr as string": (_json_with(lambda d: d.update(learning_rate="0.1")), "learning_rate"),
    "lr NaN": (_json_with(lambda d: d.update(learning_rate=float("nan"))), "NaN is not allowed"),
    "lr huge integer": (small_dna().to_json().replace('"learning_rate":0.05', '"learning_rate":1' + "0" * 400),
                        "integer of 401 digits is out of range"),
    "key with newline": (_json_with(lambda d: d.update({"a\nb": 1})), "unknown field"),
    "vertex key with newline": (_json_with(lambda d: d["vertices"][0].update({"x\ny": 1})), "unknown field"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "conv without channels": (_json_with(lambda d: d["edges"][0].pop("channels")), "missing field"),
    "identity with conv fields": (_json_with(lambda d: d["edges"][1].update(channels=3)), "unknown field"),
}


@pytest.mark.parametrize("name", sorted(PARSE_ERRORS))
def test_from_json_rejects_malformed_input_with_one_line_message(name):
    text, expected = PARSE_ERRORS[name]
    with pytest.raises(DNAError) as info:
        dna.from_json(text)
    assert expected in str(info.value)
    assert_one_line(info.value)


# ----- fuzzing the parser: nothing but DNAError escapes -----

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def _parse_or_dna_error(text) -> DNA | None:
    try:
        parsed = dna.from_json(text)
    except DNAError as err:
        assert_one_line(err)
        return None
    # Whatever parses is valid and round-trips.
    assert dna.from_json(parsed.to_json()) == parsed
    return parsed


@pytest.mark.slow  # hundreds of examples (~10 s on a loaded 2-core machine)
@settings(deadline=None, max_examples=300)
@given(json_values)
def test_from_json_fuzz_arbitrary_json(value):
    _parse_or_dna_error(json.dumps(value))


@settings(deadline=None, max_examples=100)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_from_json_fuzz_arbitrary_text_and_bytes(text):
    _parse_or_dna_error(text)


BASES = [dna.initial().to_dict(), small_dna().to_dict(), evolved(4, 30).to_dict()]
INTERESTING = st.sampled_from([0, -1, 1, 2, 3, 2**53, 2**53 + 1, 10**30, True, None, "", "conv", "identity",
                               "bn_relu", "linear", "large_scale", 0.5, 1e308, [], {}])


def _containers(value, found):
    """All dicts and lists inside ``value`` (itself included)."""
    if isinstance(value, (dict, list)):
        found.append(value)
        for child in (value.values() if isinstance(value, dict) else value):
            _containers(child, found)
    return found


@st.composite
def mangled_dna_texts(draw):
    """A valid DNA's JSON with a few values, types, keys or list items changed."""
    d = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(_containers(d, [])))
        # deepcopy: sampled_from hands out the same [] / {} objects, and mutating them
        # later would change the strategy itself between runs
        replacement = copy.deepcopy(draw(INTERESTING | json_values))
        if isinstance(target, dict):
            key = draw(st.sampled_from(sorted(target) + ["extra"])) if target else "extra"
            op = draw(st.sampled_from(["set", "delete", "rename"]))
            if op == "set" or key not in target:
                target[key] = replacement
            elif op == "delete":
                del target[key]
            else:
                target[draw(st.text(max_size=8))] = target.pop(key)
        else:
            op = draw(st.sampled_from(["set", "delete", "duplicate", "append"]))
            if target and op != "append":
                i = draw(st.integers(0, len(target) - 1))
                if op == "set":
                    target[i] = replacement
                elif op == "delete":
                    del target[i]
                else:
                    target.append(copy.deepcopy(target[i]))
            else:
                target.append(replacement)
    return json.dumps(d)


@pytest.mark.slow  # hundreds of examples (~10 s on a loaded 2-core machine)
@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_dna_texts())
def test_from_json_fuzz_mangled_valid_dna(text):
    _parse_or_dna_error(text)

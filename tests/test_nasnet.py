"""The NASNet DNA (dna.nasnet): construction, JSON, hashing, validation of untrusted input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dna.bounds import Bounds
from dna.genome import DNAError
from dna.nasnet import (NUM_COMBINATIONS, OPS, Cell, Combination, initial_nasnet, nasnet_from_dict,
                        nasnet_from_json, outer_plan, random_nasnet, validate_nasnet)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _valid_dict() -> dict:
    return json.loads(random_nasnet(np.random.default_rng(7)).to_json())


def _cell(*combos: tuple) -> Cell:
    return Cell(tuple(Combination(*c) for c in combos))


# ----- making DNAs -----

@pytest.mark.parametrize("seed", range(50))
def test_random_dna_is_valid_and_reads_only_earlier_states(seed):
    d = random_nasnet(np.random.default_rng(seed))
    assert validate_nasnet(d) is d
    for cell in (d.normal, d.reduction):
        assert len(cell.combinations) == NUM_COMBINATIONS
        for k, c in enumerate(cell.combinations):
            assert 0 <= c.input_a < k + 2 and 0 <= c.input_b < k + 2
            assert c.op_a in OPS and c.op_b in OPS


def test_random_dna_is_deterministic_under_a_seed_and_varies_across_seeds():
    a = random_nasnet(np.random.default_rng(3))
    assert random_nasnet(np.random.default_rng(3)) == a
    hashes = {random_nasnet(np.random.default_rng(s)).content_hash() for s in range(30)}
    assert len(hashes) == 30


def test_random_cells_use_every_op_and_every_allowed_input():
    rng = np.random.default_rng(0)
    ops, inputs_of_last = set(), set()
    for _ in range(200):
        d = random_nasnet(rng)
        for c in d.normal.combinations + d.reduction.combinations:
            ops |= {c.op_a, c.op_b}
        inputs_of_last |= set(d.normal.combinations[-1].inputs)
    assert ops == set(OPS)
    assert inputs_of_last == set(range(6))


def test_initial_dna_is_random_and_marked_initial():
    d = initial_nasnet(np.random.default_rng(1), learning_rate=0.05)
    assert d.mutation == "initial" and d.learning_rate == 0.05 and d.kind == "nasnet"
    assert d.normal != initial_nasnet(np.random.default_rng(2)).normal


def test_unused_states_are_the_unread_ones_including_cell_inputs():
    cell = _cell((0, "sep3x3", 0, "identity"), (2, "avg3x3", 0, "max3x3"), (3, "identity", 2, "dil3x3"),
                 (0, "sep5x5", 4, "sep7x7"), (0, "conv1x7_7x1", 0, "identity"))
    assert cell.unused_states() == (1, 5, 6)  # state 1 is never read, 5 and 6 neither


# ----- JSON and hashing -----

def test_json_is_canonical_and_round_trips():
    d = random_nasnet(np.random.default_rng(11)).replace(mutation="op")
    text = d.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    obj = json.loads(text)
    assert obj["kind"] == "nasnet" and obj["schema"] == 1 and obj["mutation"] == "op"
    assert set(obj) == {"schema", "kind", "learning_rate", "mutation", "normal", "reduction"}
    assert len(obj["normal"]["combinations"]) == 5 and len(obj["normal"]["combinations"][0]) == 4
    assert nasnet_from_json(text) == d
    assert nasnet_from_json(text.encode()) == d
    assert nasnet_from_dict(obj) == d


def test_content_hash_ignores_provenance_but_not_architecture_or_learning_rate():
    d = random_nasnet(np.random.default_rng(5))
    assert d.replace(mutation="identity").content_hash() == d.content_hash()
    assert d.replace(learning_rate=0.2).content_hash() != d.content_hash()
    c = d.normal.combinations[2]
    other_op = next(o for o in OPS if o != c.op_b)
    changed = d.with_cell("normal", d.normal.with_combination(2, Combination(c.input_a, c.op_a, c.input_b, other_op)))
    assert changed.content_hash() != d.content_hash()
    swapped = d.replace(normal=d.reduction, reduction=d.normal)
    assert d.normal == d.reduction or swapped.content_hash() != d.content_hash()


# NASNet-A's cells under the default output rule, as evo wrote them before the concat list existed.
OLD_DNA_JSON = ('{"kind":"nasnet","learning_rate":0.1,"mutation":"op","normal":{"combinations":[[0,"sep5x5",1,'
                '"sep3x3"],[1,"sep5x5",1,"sep3x3"],[0,"avg3x3",1,"identity"],[1,"avg3x3",1,"avg3x3"],[0,"sep3x3",0,'
                '"identity"]]},"reduction":{"combinations":[[0,"sep5x5",1,"sep7x7"],[0,"max3x3",1,"sep7x7"],[0,'
                '"avg3x3",1,"sep5x5"],[3,"identity",2,"avg3x3"],[2,"sep3x3",0,"max3x3"]]},"schema":1}')
# Its content_hash() computed by evo at commit 26d0a36 (before the concat list).
OLD_DNA_HASH = "c773add9802a47cb14bf4b8aeb2543989791a54085fd94f5b6dc1bb454ea1a33"


def test_dna_written_before_the_concat_list_reads_writes_and_hashes_as_before():
    d = nasnet_from_json(OLD_DNA_JSON)
    assert d.normal.concat is None and d.reduction.concat is None
    assert d.to_json() == OLD_DNA_JSON
    assert d.content_hash() == OLD_DNA_HASH
    assert d.normal.output_states() == d.normal.unused_states() == (2, 3, 4, 5, 6)


def test_an_explicit_concat_round_trips_and_changes_the_hash_unless_it_is_the_default_rule():
    obj = json.loads(OLD_DNA_JSON)
    obj["normal"]["concat"] = [1, 2, 3, 4, 5, 6]      # NASNet-A as the reference concatenates it
    d = nasnet_from_dict(obj)
    assert d.normal.concat == (1, 2, 3, 4, 5, 6) and d.normal.output_states() == (1, 2, 3, 4, 5, 6)
    assert json.loads(d.to_json())["normal"]["concat"] == [1, 2, 3, 4, 5, 6]
    assert nasnet_from_json(d.to_json()) == d
    assert d.content_hash() != OLD_DNA_HASH
    obj["normal"]["concat"] = [2, 3, 4, 5, 6]         # spelled out, but the default rule: the same DNA
    same = nasnet_from_dict(obj)
    assert same.normal.concat is None and same.to_json() == OLD_DNA_JSON and same.content_hash() == OLD_DNA_HASH
    obj["normal"]["concat"] = [0, 2, 3, 4, 5, 6]      # an unread cell input may be in it, or left out
    assert nasnet_from_dict(obj).normal.output_states() == (0, 2, 3, 4, 5, 6)
    obj["reduction"]["concat"] = [5, 6]               # reduction's unread states are 4, 5, 6: 4 is missing
    with pytest.raises(DNAError, match=r"leaves out state\(s\) \[4\]"):
        nasnet_from_dict(obj)


def test_validate_checks_a_concat_built_in_code():
    d = nasnet_from_json(OLD_DNA_JSON)
    for bad, message in [((), "non-empty"), ([2, 3, 4, 5, 6], "non-empty list"), ((3, 2, 4, 5, 6), "ascending"),
                         ((2, 3, 4, 5, 6, 9), "not a hidden state"), ((2, 3, 4, 5), "leaves out state(s) [6]")]:
        with pytest.raises(DNAError, match=re.escape(message)):
            validate_nasnet(d.with_cell("normal", Cell(d.normal.combinations, bad)))  # type: ignore[arg-type]


def test_content_hash_is_the_same_in_another_process():
    d = random_nasnet(np.random.default_rng(9))
    code = ("import sys; from dna.nasnet import nasnet_from_json; "
            "print(nasnet_from_json(sys.stdin.read()).content_hash())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], input=d.to_json(), capture_output=True, text=True,
                         cwd=REPO, env=env, check=True)
    assert out.stdout.strip() == d.content_hash()


def test_importing_nasnet_dna_and_mutations_does_not_import_torch():
    code = ("import sys; import dna, dna.nasnet, mutations, mutations.nasnet; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# ----- untrusted input -----

def _set(path, value):
    def edit(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return obj
    return edit


def _delete(key):
    def edit(obj):
        del obj[key]
        return obj
    return edit


BAD_EDITS = [
    (_set(["schema"], 2), "schema version 2"),
    (_set(["schema"], True), "schema version"),
    (_delete("schema"), "no schema"),
    (_set(["kind"], "large_scale"), "unknown DNA kind 'large_scale'"),
    (_delete("kind"), "unknown DNA kind None"),
    (_set(["extra"], 1), "DNA has unknown field(s)"),
    (_delete("mutation"), "missing field(s): mutation"),
    (_delete("reduction"), "missing field(s): reduction"),
    (_set(["learning_rate"], "0.1"), "learning_rate must be a finite number"),
    (_set(["learning_rate"], float("inf")), "learning_rate must be a finite number"),
    (_set(["learning_rate"], 10**400), "learning_rate must be a finite number"),  # was an OverflowError
    (_set(["learning_rate"], 5.0), "outside bounds"),
    (_set(["learning_rate"], 0.0), "outside bounds"),
    (_set(["mutation"], 3), "mutation must be a string"),
    (_set(["mutation"], "x" * 100), "mutation is too long"),
    (_set(["normal"], []), "normal cell must be an object"),
    (_set(["normal", "extra"], 1), "normal cell has unknown field(s)"),
    (_set(["normal", "combinations"], {}), "combinations must be a list"),
    (lambda o: o["normal"]["combinations"].pop() and o, "normal cell has 4 combinations"),
    (lambda o: o["reduction"]["combinations"].append([0, "identity", 1, "identity"]) or o,
     "reduction cell has 6 combinations"),
    (_set(["normal", "combinations", 1], [0, "identity", 1]), "combination 1 must be a list"),
    (_set(["normal", "combinations", 1], {"input_a": 0}), "combination 1 must be a list"),
    (_set(["normal", "combinations", 0], [2, "identity", 0, "identity"]), "input_a=2 is not an earlier"),
    (_set(["reduction", "combinations", 3], [0, "identity", 5, "identity"]), "input_b=5 is not an earlier"),
    (_set(["normal", "combinations", 4], [-1, "identity", 0, "identity"]), "input_a=-1 is not an earlier"),
    (_set(["normal", "combinations", 4], [True, "identity", 0, "identity"]), "input_a must be an integer"),
    (_set(["normal", "combinations", 4], [1.0, "identity", 0, "identity"]), "input_a must be an integer"),
    (_set(["normal", "combinations", 4], [2**60, "identity", 0, "identity"]), "out of range"),
    (_set(["normal", "combinations", 2], [0, "conv3x3", 0, "identity"]), "unknown op_a 'conv3x3'"),
    (_set(["normal", "combinations", 2], [0, "identity", 0, None]), "op_b must be a string"),
    (_set(["normal", "concat"], None), "normal cell concat must be a list"),
    (_set(["normal", "concat"], []), "normal cell concat must be a non-empty list"),
    (_set(["normal", "concat"], [2, 3, 4, 5, 6, 7]), "7 is not a hidden state (0..6)"),
    (_set(["normal", "concat"], [True, 2, 3, 4, 5, 6]), "concat entry must be an integer"),
    (_set(["normal", "concat"], [2, 2, 3, 4, 5, 6]), "distinct hidden states in ascending order"),
    (_set(["normal", "concat"], [6, 5, 4, 3, 2]), "distinct hidden states in ascending order"),
    (_set(["normal", "concat"], list(range(8))), "concat has 8 entries"),
    (_set(["reduction", "concat"], [0]), "which no combination reads (they would be computed for nothing)"),
]


@pytest.mark.parametrize("edit,message", BAD_EDITS)
def test_bad_dna_is_rejected_with_one_line_naming_the_problem(edit, message):
    obj = edit(_valid_dict())
    with pytest.raises(DNAError) as info:
        nasnet_from_dict(obj)
    text = str(info.value)
    assert message in text and "\n" not in text
    with pytest.raises(DNAError):
        nasnet_from_json(json.dumps(obj))


@pytest.mark.parametrize("text", [b"", b"{", b"\xff\xfe", b"[1, 2]", b"null", b"[" * 100_000,
                                  b'{"schema": 1, "kind": "nasnet", "learning_rate": NaN, "mutation": "x", '
                                  b'"normal": {}, "reduction": {}}'])
def test_malformed_text_raises_only_dna_error(text):
    with pytest.raises(DNAError) as info:
        nasnet_from_json(text)
    assert "\n" not in str(info.value)


def test_run_bounds_decide_the_allowed_learning_rate():
    obj = _valid_dict()
    obj["learning_rate"] = 2.0
    assert nasnet_from_dict(obj, Bounds(max_learning_rate=4.0)).learning_rate == 2.0
    with pytest.raises(DNAError, match="outside bounds"):
        nasnet_from_dict(obj)


def test_validate_rejects_bad_dataclass_values():
    d = random_nasnet(np.random.default_rng(0))
    with pytest.raises(DNAError, match="learning_rate must be a finite float"):
        validate_nasnet(d.replace(learning_rate=float("nan")))
    with pytest.raises(DNAError, match="has 4 combinations"):
        validate_nasnet(d.replace(normal=Cell(d.normal.combinations[:4])))
    with pytest.raises(DNAError, match="input_b=6 is not an earlier"):
        validate_nasnet(d.with_cell("reduction", d.reduction.with_combination(4, Combination(0, "identity", 6, "identity"))))
    with pytest.raises(DNAError, match="expected a NASNet DNA"):
        validate_nasnet("not a dna")  # type: ignore[arg-type]
    with pytest.raises(DNAError, match="schema version 7"):
        validate_nasnet(d.replace(schema=7))
    assert validate_nasnet(d.replace(learning_rate=50.0), bounds=None).learning_rate == 50.0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(deadline=None, max_examples=150)
@given(value=json_values)
def test_arbitrary_json_raises_only_dna_error(value):
    with pytest.raises(DNAError):
        nasnet_from_json(json.dumps(value))


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_a_valid_dna_with_one_leaf_replaced_parses_or_raises_dna_error(data):
    obj = _valid_dict()
    cell = data.draw(st.sampled_from(["normal", "reduction"]))
    k = data.draw(st.integers(0, 4))
    slot = data.draw(st.integers(0, 3))
    value = data.draw(json_values)
    obj[cell]["combinations"][k][slot] = value
    try:
        d = nasnet_from_dict(obj)
    except DNAError as exc:
        assert "\n" not in str(exc)
    else:
        assert validate_nasnet(d) is d
        assert nasnet_from_json(d.to_json()) == d


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_any_concat_list_parses_to_a_valid_round_tripping_dna_or_raises_dna_error(data):
    obj = _valid_dict()
    cell = data.draw(st.sampled_from(["normal", "reduction"]))
    obj[cell]["concat"] = data.draw(st.lists(st.integers(-1, 8), max_size=8) | json_values)
    try:
        d = nasnet_from_dict(obj)
    except DNAError as exc:
        assert "\n" not in str(exc)
    else:
        assert validate_nasnet(d) is d
        assert set(d.cell(cell).output_states()) >= {s for s in d.cell(cell).unused_states() if s >= 2}
        assert nasnet_from_json(d.to_json()) == d


def test_outer_plan_is_three_stacks_with_doubling_filters():
    plan = outer_plan(2, 8)
    assert [(s.reduction, s.filters) for s in plan] == [
        (False, 8), (False, 8), (True, 16), (False, 16), (False, 16), (True, 32), (False, 32), (False, 32)]
    for bad in [(0, 8), (2, 1), (True, 8), (2, 8.0)]:
        with pytest.raises(ValueError, match="nasnet: "):
            outer_plan(*bad)

"""NASNet mutations (mutations.nasnet): each registered one, the chooser, and long chains."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dna.bounds import Bounds
from dna.genome import DNAError
from dna.nasnet import CELL_NAMES, OPS, NasnetDNA, nasnet_from_json, random_nasnet, validate_nasnet
from dna.published import PUBLISHED
from mutations import REGISTRY, Mutation
from mutations.nasnet import NASNET_MUTATIONS, mutate_nasnet

NAS = {name: REGISTRY[f"nasnet/{name}"] for name in NASNET_MUTATIONS}


def _slots(d: NasnetDNA) -> dict[tuple[str, int, str], tuple[int, str]]:
    """(cell, combination, side) -> (input, op)."""
    out = {}
    for name in CELL_NAMES:
        for k, c in enumerate(d.cell(name).combinations):
            out[(name, k, "a")] = (c.input_a, c.op_a)
            out[(name, k, "b")] = (c.input_b, c.op_b)
    return out


def _changed(parent: NasnetDNA, child: NasnetDNA) -> dict:
    p, c = _slots(parent), _slots(child)
    return {slot: (p[slot], c[slot]) for slot in p if p[slot] != c[slot]}


@pytest.mark.parametrize("name", sorted(NAS))
@pytest.mark.parametrize("seed", range(10))
def test_every_mutation_gives_a_valid_child_and_leaves_the_parent_alone(name, seed):
    parent = random_nasnet(np.random.default_rng(1000 + seed))
    before = parent.to_json()
    child = NAS[name](parent, np.random.default_rng(seed))
    assert child is not None
    assert validate_nasnet(child) is child
    assert nasnet_from_json(child.to_json()) == child
    assert parent.to_json() == before
    assert child.learning_rate == parent.learning_rate
    again = NAS[name](parent, np.random.default_rng(seed))
    assert again == child  # deterministic under a seed


@pytest.mark.parametrize("seed", range(40))
def test_hidden_state_mutation_rewires_exactly_one_input_to_another_earlier_state(seed):
    parent = random_nasnet(np.random.default_rng(seed))
    child = NAS["hidden_state"](parent, np.random.default_rng(seed + 1))
    changes = _changed(parent, child)
    assert len(changes) == 1
    (cell, k, side), ((old_in, old_op), (new_in, new_op)) = next(iter(changes.items()))
    assert old_op == new_op and old_in != new_in
    assert 0 <= new_in < k + 2
    assert child.content_hash() != parent.content_hash()


def test_hidden_state_mutation_reaches_every_slot_and_every_alternative():
    parent = random_nasnet(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    slots, targets_last = set(), set()
    for _ in range(1500):
        changes = _changed(parent, NAS["hidden_state"](parent, rng))
        (slot, (old, new)), = changes.items()
        slots.add(slot)
        if slot == ("normal", 4, "a"):
            targets_last.add(new[0])
    assert len(slots) == 20
    old_input = parent.normal.combinations[4].input_a
    assert targets_last == set(range(6)) - {old_input}


@pytest.mark.parametrize("seed", range(40))
def test_op_mutation_replaces_exactly_one_op_by_a_different_one(seed):
    parent = random_nasnet(np.random.default_rng(seed))
    child = NAS["op"](parent, np.random.default_rng(seed + 1))
    changes = _changed(parent, child)
    assert len(changes) == 1
    ((old_in, old_op), (new_in, new_op)), = changes.values()
    assert old_in == new_in and old_op != new_op and new_op in OPS


def test_op_mutation_reaches_every_other_op():
    parent = random_nasnet(np.random.default_rng(2))
    rng = np.random.default_rng(3)
    new_ops = Counter()
    for _ in range(2000):
        (slot, (old, new)), = _changed(parent, NAS["op"](parent, rng)).items()
        if slot == ("reduction", 0, "b"):
            new_ops[new[1]] += 1
    assert set(new_ops) == set(OPS) - {parent.reduction.combinations[0].op_b}


def test_identity_mutation_keeps_the_architecture():
    parent = random_nasnet(np.random.default_rng(4))
    child = mutate_nasnet(parent, np.random.default_rng(0), names=["identity"])
    assert child.mutation == "identity"
    assert child.content_hash() == parent.content_hash()


def test_mutate_names_the_mutation_used_and_chooses_uniformly():
    parent = random_nasnet(np.random.default_rng(5))
    rng = np.random.default_rng(6)
    counts = Counter()
    for _ in range(3000):
        child = mutate_nasnet(parent, rng)
        counts[child.mutation] += 1
        changes = _changed(parent, child)
        if child.mutation == "identity":
            assert not changes
        else:
            assert len(changes) == 1
            ((old_in, old_op), (new_in, new_op)), = changes.values()
            assert (old_in != new_in) if child.mutation == "hidden_state" else (old_op != new_op)
    assert set(counts) == set(NAS)
    for n in counts.values():
        assert 850 < n < 1150  # 1000 expected; sd about 26


def test_mutate_skips_mutations_that_do_not_apply(monkeypatch):
    never = Mutation("nasnet", "hidden_state", lambda d, b: (), NAS["hidden_state"].apply)
    monkeypatch.setitem(REGISTRY, "nasnet/hidden_state", never)
    parent = random_nasnet(np.random.default_rng(7))
    rng = np.random.default_rng(8)
    used = {mutate_nasnet(parent, rng, names=["hidden_state", "op"]).mutation for _ in range(50)}
    assert used == {"op"}
    with pytest.raises(ValueError, match="none of the mutations hidden_state applies"):
        mutate_nasnet(parent, rng, names=["hidden_state"])


def test_mutate_rejects_unknown_names_and_validates_against_bounds():
    parent = random_nasnet(np.random.default_rng(9))
    with pytest.raises(ValueError, match="unknown nasnet mutation"):
        mutate_nasnet(parent, np.random.default_rng(0), names=["op", "alter_learning_rate"])
    with pytest.raises(ValueError, match="applies"):
        mutate_nasnet(parent, np.random.default_rng(0), names=[])
    fast = parent.replace(learning_rate=3.0)
    with pytest.raises(DNAError, match="outside bounds"):
        mutate_nasnet(fast, np.random.default_rng(0))
    assert mutate_nasnet(fast, np.random.default_rng(0), bounds=Bounds(max_learning_rate=4.0)).learning_rate == 3.0


def test_mutate_is_deterministic_under_a_seed():
    parent = random_nasnet(np.random.default_rng(10))

    def chain(seed):
        rng, d = np.random.default_rng(seed), parent
        for _ in range(30):
            d = mutate_nasnet(d, rng)
        return d

    assert chain(1) == chain(1)
    assert chain(1).content_hash() != chain(2).content_hash()


@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 60))
def test_random_chains_of_mutations_stay_valid_and_acyclic(seed, length):
    rng = np.random.default_rng(seed)
    d = random_nasnet(rng)
    for _ in range(length):
        parent_json = d.to_json()
        d = mutate_nasnet(d, rng)
        assert nasnet_from_json(parent_json).to_json() == parent_json
        for name in CELL_NAMES:
            for k, c in enumerate(d.cell(name).combinations):
                assert max(c.inputs) < k + 2  # reads only earlier states: no loop
            assert d.cell(name).unused_states()
    assert nasnet_from_json(d.to_json()) == d


# ----- cells with an explicit output list (published cells seeding a run) -----

@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_mutating_a_published_cell_keeps_its_list_and_adds_only_the_state_left_unread(name):
    parent = PUBLISHED[name].dna
    for seed in range(60):
        child = NAS["hidden_state"](parent, np.random.default_rng(seed))
        ((cell, k, side), ((old_in, _), (new_in, _))), = _changed(parent, child).items()
        before, after = parent.cell(cell), child.cell(cell)
        assert child.cell("reduction" if cell == "normal" else "normal") == parent.cell(
            "reduction" if cell == "normal" else "normal")
        assert set(before.output_states()) <= set(after.output_states())
        # the only state that may join the output is the one the rewired input read, and it does
        # exactly when nothing reads it any more
        assert set(after.output_states()) - set(before.output_states()) <= {old_in}
        if old_in in after.unused_states():
            assert old_in in after.output_states()
        assert validate_nasnet(child) is child and nasnet_from_json(child.to_json()) == child
    for op_name in ("op", "identity"):
        child = NAS[op_name](parent, np.random.default_rng(0))
        assert all(child.cell(c).output_states() == parent.cell(c).output_states() for c in CELL_NAMES)


def test_rewiring_away_from_a_state_adds_it_to_an_explicit_list():
    # AmoebaNet-A's normal cell: combination 4 reads state 5, its only reader; rewire that input
    parent = PUBLISHED["amoebanet-a"].dna
    assert parent.normal.combinations[4].input_a == 5 and 5 not in parent.normal.output_states()
    for seed in range(40):
        child = NAS["hidden_state"](parent, np.random.default_rng(seed))
        if _changed(parent, child).keys() == {("normal", 4, "a")}:
            assert 5 in child.normal.output_states()
            assert child.normal.output_states() == (1, 3, 4, 5, 6)
            return
    pytest.fail("no draw rewired normal combination 4, input a")


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 40), name=st.sampled_from(sorted(PUBLISHED)))
def test_chains_from_published_cells_stay_valid_and_random_cells_never_get_a_list(seed, length, name):
    rng = np.random.default_rng(seed)
    d, plain = PUBLISHED[name].dna, random_nasnet(rng)
    for _ in range(length):
        d, plain = mutate_nasnet(d, rng), mutate_nasnet(plain, rng)
        assert nasnet_from_json(d.to_json()) == d
        assert plain.normal.concat is None and plain.reduction.concat is None

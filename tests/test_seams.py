"""Contract: every built-in evaluator, search space and strategy is what the worker takes
(evo.search.seams), so the worker calls them without probing."""

from __future__ import annotations

import inspect

import pytest

from evo.config import RunConfig, TrainSettings
from evo.search.seams import Evaluator, SearchSpace, Strategy
from evo.spaces import make_space, space_class, space_names
from evo.strategies import strategy_class, strategy_names

CONTRACT = inspect.signature(Evaluator.evaluate)


def synthetic():
    from evo.train.synthetic import SyntheticEvaluator

    config = RunConfig(dataset="synthetic")
    return SyntheticEvaluator(make_space(config), config.settings_of("synthetic"))


def tabular():
    from evo.train.tabular import TabularEvaluator, TabularSettings

    return TabularEvaluator("nb201-cifar10", TabularSettings())


def torch_evaluator():
    pytest.importorskip("torch")
    from evo.train.evaluator import TorchEvaluator

    return TorchEvaluator(make_space(RunConfig(dataset="digits")), "digits", TrainSettings(), device="cpu")


@pytest.mark.parametrize("make", [synthetic, tabular, torch_evaluator], ids=["synthetic", "tabular", "torch"])
def test_every_builtin_evaluator_satisfies_the_evaluator_protocol(make):
    evaluator = make()
    assert isinstance(evaluator, Evaluator)
    assert isinstance(evaluator.device_name, str) and evaluator.device_name
    params = inspect.signature(evaluator.evaluate).parameters
    for name, want in CONTRACT.parameters.items():
        if name == "self":
            continue
        assert name in params, f"{type(evaluator).__name__}.evaluate has no {name}"
        assert params[name].kind == want.kind, f"{type(evaluator).__name__}.evaluate: {name} is {params[name].kind}"
    assert all(p.default is not inspect.Parameter.empty for n, p in params.items() if n != "child")


def test_the_protocol_refuses_an_evaluator_that_would_have_to_be_probed():
    class NoPrepare:
        device_name = "x"

        def evaluate(self, child, **kwargs):
            return None

    assert not isinstance(NoPrepare(), Evaluator)


@pytest.mark.parametrize("name", space_names())
def test_every_registered_space_is_a_concrete_search_space(name):
    cls = space_class(name)
    assert issubclass(cls, SearchSpace) and not inspect.isabstract(cls)


@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_is_a_concrete_strategy(name):
    cls = strategy_class(name)
    assert issubclass(cls, Strategy) and not inspect.isabstract(cls)

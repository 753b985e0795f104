"""The learned strategies' policies (evo.strategies.controllers): sampling, and hand-written
gradients checked against torch's autograd on the same network."""

import numpy as np
import pytest

from evo.strategies.controllers import IndependentSoftmax, LstmController, adam_ascent

torch = pytest.importorskip("torch")

DECISIONS = (2, 3, 8, 8, 4)


def torch_lstm_objective(params, choices, decisions, a, b):
    """The LSTM controller written with torch ops: a * log p(choices) + b * entropy."""
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    H = t["lstm_b"].shape[0] // 4
    offsets = np.concatenate([[0], np.cumsum(decisions)]).astype(int)
    h, c, row = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64), 0
    logp, ent = 0, 0
    for k, choice in enumerate(choices):
        z = t["lstm_w"] @ torch.cat([t["embedding"][row], h]) + t["lstm_b"]
        i, f, g, o = torch.sigmoid(z[:H]), torch.sigmoid(z[H:2 * H]), torch.tanh(z[2 * H:3 * H]), torch.sigmoid(z[3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        lo, hi = offsets[k], offsets[k + 1]
        lp = torch.log_softmax(t["head_w"][lo:hi] @ h + t["head_b"][lo:hi], 0)
        logp = logp + lp[choice]
        ent = ent - (lp.exp() * lp).sum()
        row = 1 + lo + choice
    (a * logp + b * ent).backward()
    return logp.item(), ent.item(), {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (-0.7, 0.3), (0.0, 1.0)])
def test_lstm_gradient_matches_autograd(a, b):
    model = LstmController(DECISIONS, hidden=7, init_range=0.5)
    params = model.init(np.random.default_rng(0))
    choices, logp = model.sample(params, np.random.default_rng(1))
    fwd = model.forward(params, choices)
    assert fwd.logp == pytest.approx(logp)
    t_logp, t_ent, t_grads = torch_lstm_objective(params, choices, DECISIONS, a, b)
    assert fwd.logp == pytest.approx(t_logp, rel=1e-9)
    assert fwd.entropy == pytest.approx(t_ent, rel=1e-9)
    grads = fwd.grad(a, b)
    for k in params:
        np.testing.assert_allclose(grads[k], t_grads[k], rtol=1e-6, atol=1e-10, err_msg=k)


def test_softmax_gradient_matches_autograd():
    model = IndependentSoftmax(DECISIONS)
    params = {"logits": np.random.default_rng(2).normal(size=sum(DECISIONS)).astype(np.float32)}
    choices = (1, 0, 7, 3, 2)
    logits = torch.tensor(params["logits"], dtype=torch.float64, requires_grad=True)
    logp, ent, lo = 0, 0, 0
    for n, c in zip(DECISIONS, choices):
        lp = torch.log_softmax(logits[lo:lo + n], 0)
        logp, ent, lo = logp + lp[c], ent - (lp.exp() * lp).sum(), lo + n
    (0.4 * logp - 2.0 * ent).backward()
    fwd = model.forward(params, choices)
    assert fwd.logp == pytest.approx(logp.item()) and fwd.entropy == pytest.approx(ent.item())
    np.testing.assert_allclose(fwd.grad(0.4, -2.0)["logits"], logits.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model", [IndependentSoftmax(DECISIONS), LstmController(DECISIONS, hidden=16)])
def test_ascent_on_log_probability_makes_the_choices_likelier(model):
    params = model.init(np.random.default_rng(3))
    choices = (1, 2, 5, 0, 3)
    before = model.forward(params, choices).logp
    moments = {}
    for step in range(1, 30):
        params, moments = adam_ascent(params, moments, model.forward(params, choices).grad(1.0, 0.0), step, 0.05)
    assert model.forward(params, choices).logp > before + 1.0


@pytest.mark.parametrize("model", [IndependentSoftmax(DECISIONS), LstmController(DECISIONS, hidden=16)])
def test_sampling_is_in_range_and_deterministic_for_a_seed(model):
    params = model.init(np.random.default_rng(4))
    draws = [model.sample(params, np.random.default_rng(9)) for _ in range(2)]
    assert draws[0] == draws[1]
    choices, logp = draws[0]
    assert len(choices) == len(DECISIONS) and all(0 <= c < n for c, n in zip(choices, DECISIONS))
    assert logp < 0 and model.forward(params, choices).logp == pytest.approx(logp)

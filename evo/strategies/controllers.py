"""The two policies a learned strategy samples architectures from, in numpy (no torch, so
a worker of a learned strategy stays as light as any other).

- :class:`LstmController`: the NASNet paper's controller (Zoph et al. 2018, appendix A.2;
  the RNN of Zoph & Le 2017): a one-layer LSTM that makes the decisions one after another,
  each with its own softmax over that decision's choices, feeding the embedding of each
  choice back as the next input (the first input is a learned start embedding).
- :class:`IndependentSoftmax`: one free softmax per decision (NAS-Bench-201's REINFORCE
  baseline, D-X-Y/AutoDL-Projects ``exps/NATS-algos/reinforce.py``).

Both give, for a sequence of choices, its log-probability, the summed entropy of the
decisions' distributions, and the gradient of ``a * log p(choices) + b * entropy`` with
respect to every parameter (exact, by hand: tests check it against torch's autograd).
Parameters are plain dicts of float arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

Params = Mapping[str, np.ndarray]


def _offsets(decisions: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(decisions)]).astype(int)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _entropy_grad(p: np.ndarray) -> tuple[float, np.ndarray]:
    """The entropy of ``p`` and its gradient with respect to the logits."""
    logp = np.log(np.maximum(p, 1e-30))
    h = float(-(p * logp).sum())
    return h, -p * (logp + h)


@dataclass
class Pass:
    """One forward pass over a sequence of choices: its log-probability, entropy, and
    ``grad(a, b)``, the gradient of ``a * logp + b * entropy`` for every parameter."""

    logp: float
    entropy: float
    grad: Callable[[float, float], dict[str, np.ndarray]]


class IndependentSoftmax:
    """One softmax per decision, logits initialised as NAS-Bench-201's REINFORCE does
    (1e-3 times a standard normal)."""

    def __init__(self, decisions: Sequence[int]):
        self.decisions = tuple(decisions)
        self.offsets = _offsets(self.decisions)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape."""
        return {"logits": (int(self.offsets[-1]),)}

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Fresh parameters."""
        return {"logits": (1e-3 * rng.standard_normal(int(self.offsets[-1]))).astype(np.float32)}

    def _probs(self, params: Params) -> list[np.ndarray]:
        z = params["logits"].astype(np.float64)
        return [_softmax(z[a:b]) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def sample(self, params: Params, rng: np.random.Generator) -> tuple[tuple[int, ...], float]:
        """Choices drawn from the policy, and their log-probability."""
        choices, logp = [], 0.0
        for p in self._probs(params):
            c = int(rng.choice(len(p), p=p))
            choices.append(c)
            logp += float(np.log(p[c]))
        return tuple(choices), logp

    def forward(self, params: Params, choices: Sequence[int]) -> Pass:
        """The pass over ``choices`` (see :class:`Pass`)."""
        probs = self._probs(params)
        logp = sum(float(np.log(p[c])) for p, c in zip(probs, choices))
        ents = [_entropy_grad(p) for p in probs]

        def grad(a: float, b: float) -> dict[str, np.ndarray]:
            g = np.zeros(int(self.offsets[-1]))
            for k, (p, c) in enumerate(zip(probs, choices)):
                onehot = np.zeros(len(p))
                onehot[c] = 1.0
                g[self.offsets[k]:self.offsets[k + 1]] = a * (onehot - p) + b * ents[k][1]
            return {"logits": g}

        return Pass(logp, sum(h for h, _ in ents), grad)


class LstmController:
    """A one-layer LSTM of ``hidden`` units (gates in the order input, forget, cell,
    output), one softmax head per decision, and an embedding per choice plus a start
    embedding; every weight initialised uniformly in [-init_range, init_range]."""

    def __init__(self, decisions: Sequence[int], hidden: int = 100, init_range: float = 0.1):
        self.decisions = tuple(decisions)
        self.offsets = _offsets(self.decisions)
        self.hidden = hidden
        self.init_range = init_range

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape."""
        n, h = int(self.offsets[-1]), self.hidden
        return {"embedding": (n + 1, h), "lstm_w": (4 * h, 2 * h), "lstm_b": (4 * h,),
                "head_w": (n, h), "head_b": (n,)}

    def init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Fresh parameters."""
        r = self.init_range
        return {k: rng.uniform(-r, r, size=s).astype(np.float32) for k, s in self.shapes().items()}

    def _run(self, params: Params, choices: Sequence[int] | None, rng: np.random.Generator | None):
        """Step the LSTM through the decisions, taking ``choices`` or sampling them."""
        emb, w, bias = (params[k].astype(np.float64) for k in ("embedding", "lstm_w", "lstm_b"))
        hw, hb = params["head_w"].astype(np.float64), params["head_b"].astype(np.float64)
        h = np.zeros(self.hidden)
        c = np.zeros(self.hidden)
        row, steps, taken = 0, [], []
        for k in range(len(self.decisions)):
            x = emb[row]
            xh = np.concatenate([x, h])
            z = w @ xh + bias
            H = self.hidden
            i, f, o = (1 / (1 + np.exp(-z[s * H:(s + 1) * H])) for s in (0, 1, 3))
            g = np.tanh(z[2 * H:3 * H])
            c_prev, c = c, f * c + i * g
            tc = np.tanh(c)
            h = o * tc
            lo, hi = self.offsets[k], self.offsets[k + 1]
            p = _softmax(hw[lo:hi] @ h + hb[lo:hi])
            a = int(rng.choice(len(p), p=p)) if choices is None else int(choices[k])
            steps.append((row, xh, c_prev, i, f, g, o, tc, h, p))
            taken.append(a)
            row = 1 + lo + a
        return steps, taken

    def sample(self, params: Params, rng: np.random.Generator) -> tuple[tuple[int, ...], float]:
        """Choices drawn from the policy, and their log-probability."""
        steps, taken = self._run(params, None, rng)
        return tuple(taken), float(sum(np.log(s[-1][a]) for s, a in zip(steps, taken)))

    def forward(self, params: Params, choices: Sequence[int]) -> Pass:
        """The pass over ``choices`` (see :class:`Pass`)."""
        steps, _ = self._run(params, choices, None)
        logp = float(sum(np.log(s[-1][a]) for s, a in zip(steps, choices)))
        ents = [_entropy_grad(s[-1]) for s in steps]
        w = params["lstm_w"].astype(np.float64)
        hw = params["head_w"].astype(np.float64)
        H = self.hidden

        def grad(a: float, b: float) -> dict[str, np.ndarray]:
            g = {k: np.zeros(s) for k, s in self.shapes().items()}
            dh_next, dc_next = np.zeros(H), np.zeros(H)
            for k in reversed(range(len(steps))):
                row, xh, c_prev, i, f, gg, o, tc, h, p = steps[k]
                lo, hi = self.offsets[k], self.offsets[k + 1]
                onehot = np.zeros(len(p))
                onehot[choices[k]] = 1.0
                dlogits = a * (onehot - p) + b * ents[k][1]
                g["head_w"][lo:hi] += np.outer(dlogits, h)
                g["head_b"][lo:hi] += dlogits
                dh = hw[lo:hi].T @ dlogits + dh_next
                do = dh * tc
                dc = dh * o * (1 - tc * tc) + dc_next
                dz = np.concatenate([dc * gg * i * (1 - i), dc * c_prev * f * (1 - f),
                                     dc * i * (1 - gg * gg), do * o * (1 - o)])
                g["lstm_w"] += np.outer(dz, xh)
                g["lstm_b"] += dz
                dxh = w.T @ dz
                g["embedding"][row] += dxh[:H]
                dh_next, dc_next = dxh[H:], dc * f
            return g

        return Pass(logp, sum(h for h, _ in ents), grad)


def adam_ascent(params: Params, moments: Params, grads: Params, step: int, lr: float,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> tuple[dict, dict]:
    """One Adam step that *increases* the objective whose gradient is ``grads``; ``step``
    is this step's number (1 for the first). Returns new params and moments (float32);
    missing moments start at zero."""
    new_p, new_m = {}, {}
    for k, p in params.items():
        m = beta1 * moments.get(f"m:{k}", np.zeros_like(p)).astype(np.float64) + (1 - beta1) * grads[k]
        v = beta2 * moments.get(f"v:{k}", np.zeros_like(p)).astype(np.float64) + (1 - beta2) * grads[k] ** 2
        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        new_p[k] = (p.astype(np.float64) + lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
        new_m[f"m:{k}"], new_m[f"v:{k}"] = m.astype(np.float32), v.astype(np.float32)
    return new_p, new_m

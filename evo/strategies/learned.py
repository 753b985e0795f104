"""Learned strategies: a controller samples each child's architecture, and learns from the
children's fitness (their rewards), with the policy kept in the store as versioned state.

- ``rl``: the controller of the NASNet paper (Zoph et al. 2018, appendix A.2/A.3) as Real
  et al. 2019 use it for their RL baseline: a one-layer LSTM of 100 units, one softmax per
  decision, trained with PPO (learning rate 0.00035, entropy weight 1e-5, a reward baseline
  that is an exponential moving average of previous rewards with decay 0.95, weights
  initialised uniformly in [-0.1, 0.1]), updated from minibatches of 20 children (A.3). It
  searches the run's search space, e.g. the 2019 paper's NASNet-style space (40 decisions
  over 8 ops), not NASNet's own (5 steps per block: 50 decisions over 13 ops). Adam, PPO's
  clipping range 0.2 and one gradient step per update are this implementation's choices
  (the paper does not give them).
- ``reinforce``: REINFORCE over one independent softmax per decision, as NAS-Bench-201's
  baseline (D-X-Y/AutoDL-Projects ``exps/NATS-algos/reinforce.py``: Adam, learning rate
  0.01 in its usage lines, baseline an unbiased moving average with momentum 0.9, logits
  initialised at 1e-3 times a standard normal), one update per child as there.

The baseline. A child's advantage is its reward less the moving average of the rewards
taken in *before* it (the paper: "an exponential moving average of previous rewards"); only
then is its reward folded in. Before the first reward the baseline is 0, so the first
advantage is the first reward (as the reference controllers' baseline variables start at
0). NAS-Bench-201's reference folds the current reward in first (its first advantage is 0);
``reinforce`` takes the paper's order too.

No coordinator, and one version per minibatch. A worker proposes a child by sampling from
the newest policy version it can read, version n (the child's metrics record ``policy``,
``policy_version``, the choices and their log-probability). Once the child is published,
the worker takes it in: it copies that record, with the child's reward, into the first free
slot of version n's *intake* (``policy/v{n}-{k}.json``, k < B - 1 for ``controller.batch_size``
B), with create-if-absent. The worker whose child finds all B - 1 slots taken is the B-th:
it reads the slots and makes version n + 1 from exactly those B - 1 records and its own
(create-if-absent too). If another worker created n + 1 first, it rebases: its child goes
into n + 1's intake. So each child is taken in by exactly one slot or version (the
create-if-absent of each name decides every race), is learned from exactly once, and the
store holds one policy version (parameters, moments: about a megabyte for the LSTM) per B
children, plus one small record per child. A worker killed anywhere loses at most its own
child's record; every version and slot stays whole, and nothing waits on a dead worker
(any later child can be the B-th). A slow worker whose slot lands on a version that was
meanwhile learned from and pruned sees the newer version without its child, withdraws the
slot and takes the child in again. The store keeps the newest ``controller.keep_versions``
versions and their intake.

Stale samples. Updates are asynchronous, as in the paper's distributed controller: a child
sampled from version n may be learned from at version n + k. For ``rl``, PPO's ratio to the
sampling log-probability, clipped, is what makes that safe. For ``reinforce``, each child's
gradient is weighted by the truncated importance weight min(1, p_now / p_sampled) (as
V-trace truncates at 1): a child that the policy has since made more likely counts as
on-policy, one it has made less likely counts less, and no child weighs more than an
on-policy one, so the variance stays bounded. Weighting keeps every child, where skipping
those older than a bound would throw evaluations away (each one a trained network; with W
workers nearly every child is a few versions old).

The population is kept at P like random search's: the less fit of a random pair dies, so
the store holds the best architectures found.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from evo.registry import RunView
from evo.strategies import selection
from evo.strategies.controller_settings import ControllerSettings
from storage import PolicyFacet, UnreadableEntry

from evo.strategies import Population, Proposal, Published, Strategy, register_strategy
from evo.strategies.controllers import IndependentSoftmax, LstmController, adam_ascent
from evo.strategies.policy_chain import clusters, first_number, next_number, reachable_above
from evo.strategies.policy_state import (
    MAX_PARAM, MAX_RECENT, MAX_VERSION_GAP, Intake, PolicyError, PolicyVersion, Sample, Update, check_bounds,
    new_id, parse_intake, parse_policy,
)

log = logging.getLogger("evo.strategies")

MAX_REBASES = 64        # tries to create the next version before giving the update up
MUTATION = "controller"  # what a controller's child records as the mutation that made it


class LearnedStrategy(Strategy):
    """A policy in the store, sampled to propose children and updated from their rewards."""

    needs_decisions: ClassVar[bool] = True
    defaults: ClassVar[dict[str, float]]   # learning_rate, entropy_weight, baseline_decay
    settings_class, settings_key = ControllerSettings, "controller"   # one block for rl and reinforce
    settings: ControllerSettings

    def __init__(self, run: RunView, policy: PolicyFacet, space: Any):
        super().__init__(run, policy, space)
        settings = self.settings
        self.learning_rate = _given(settings.learning_rate, self.defaults["learning_rate"])
        self.entropy_weight = _given(settings.entropy_weight, self.defaults["entropy_weight"])
        self.baseline_decay = _given(settings.baseline_decay, self.defaults["baseline_decay"])
        self.keep_versions = settings.keep_versions
        self.batch_size = settings.batch_size or self.default_batch
        self.model = self.make_model(space.decisions, settings)
        self.shapes = self.model.shapes()
        self._current: PolicyVersion | None = None
        self._bad: set[int] = set()       # version numbers this worker found unusable
        self._blocked: set[int] = set()   # numbers held by foreign entries that could not be moved aside
        self._beyond: set[int] = set()    # numbers beyond the chain already logged

    def make_model(self, decisions: tuple[int, ...], settings: Any) -> Any:
        """The controller (see :mod:`evo.strategies.controllers`)."""
        raise NotImplementedError

    steps_per_update: int = 1
    default_batch: int = 1

    def gradient(self, params: dict[str, np.ndarray], choices: tuple[int, ...], logp_sampled: float,
                 advantage: float) -> dict[str, np.ndarray]:
        """The ascent direction, at ``params``, of one gradient step from one child."""
        raise NotImplementedError

    def batch_gradient(self, params: dict[str, np.ndarray], batch: tuple[Sample, ...]) -> dict[str, np.ndarray]:
        """The ascent direction, at ``params``, of one gradient step from a minibatch: the
        mean of its children's (each from its recorded choices and log-probability)."""
        total: dict[str, np.ndarray] = {}
        for sample in batch:
            for k, g in self.gradient(params, sample.choices, sample.logp, sample.advantage).items():
                total[k] = total[k] + g if k in total else g
        return {k: g / len(batch) for k, g in total.items()}

    # ----- Strategy -----
    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        policy, _ = self.latest()
        choices, logp = self.model.sample(policy.params, rng)
        dna = self.space.from_decisions(choices).replace(mutation=MUTATION)
        note = {"policy": self.name, "policy_version": policy.version, "policy_choices": list(choices),
                "policy_logp": logp}
        return Proposal(dna=dna, victim=selection.pairwise(population.members, rng)[1], note=note)

    def victim(self, population: Population, rng: np.random.Generator):
        if len(population) < 2:
            return None
        return selection.pairwise(population.members, rng)[1]

    def observe(self, child: Published) -> None:
        note = child.proposal.note
        if note.get("policy") != self.name:
            return
        mine = Intake(child.id, tuple(int(c) for c in note["policy_choices"]), float(note["policy_logp"]),
                      int(note["policy_version"]), float(child.fitness), child.worker[:200] or "-", self.policy.now())
        for _ in range(MAX_REBASES):
            base, number = self.latest()
            if number is None:
                log.warning("policy update for %s skipped: the %d version numbers after version %d are taken "
                            "(see evo check)", child.id, MAX_VERSION_GAP, base.version)
                return
            slots = self.batch_size - 1 - len(base.pending)   # base's intake holds the first B - 1 children
            if slots > 0:
                taken = self._take_in(base, slots, mine)
                if taken is None:
                    continue    # the slot was made on a version pruned meanwhile, and withdrawn
                if taken:
                    return
            # The intake is full: this child is the B-th, and makes the update from all of them.
            try:
                new = self.updated(base, self._intake_of(base, slots) + (mine,))
                new = replace(new, version=number)
                check_bounds(new)
            except PolicyError as exc:   # never publish a version no reader would accept
                log.warning("policy update for %s skipped: it would be out of bounds: %s", child.id, exc)
                return
            try:
                created = self.policy.create_policy(new.version, new.to_bytes())
            except UnreadableEntry as exc:   # a foreign entry holds the name and cannot be moved aside
                log.warning("%s: policy version %d skipped past: %s", self.policy.url, new.version, exc)
                self._blocked.add(new.version)
                continue
            if not created:
                continue    # another worker made that version first: rebase onto it
            if self._in_chain(new, child.id):
                self._current = new
                self.policy.prune_policies(new.version + 1 - self.keep_versions)
                return
            # An orphan: between our read and our create, that number was made, built on and
            # pruned by others (a slow worker), so the chain went on without this version.
            self.policy.delete_policy(new.version)
        log.warning("policy update for %s given up after %d lost races", child.id, MAX_REBASES)

    def _take_in(self, base: PolicyVersion, slots: int, mine: Intake) -> bool | None:
        """Put ``mine`` into the first free one of ``base``'s ``slots`` intake slots: True when
        it is in, False when they are all taken (``mine`` is the B-th child), None when the slot
        it took turned out to be on a version pruned meanwhile (withdrawn; take it in again)."""
        present = set(self.policy.intake().get(base.version, ()))
        for slot in range(slots):
            if slot in present:
                continue
            data = mine.to_bytes(self.name, base.version, slot, base.id)
            try:
                if not self.policy.create_intake(base.version, slot, data):
                    continue    # another worker's child took it first
            except UnreadableEntry as exc:   # a foreign entry holds the name and cannot be moved aside
                log.warning("%s: policy intake slot %d of version %d skipped past: %s", self.policy.url, slot,
                            base.version, exc)
                continue
            if self._slot_orphaned(base, mine.child):
                self.policy.delete_intake(base.version, slot)
                return None
            return True
        return False

    def _slot_orphaned(self, base: PolicyVersion, child: str) -> bool:
        """True if the intake slot just created for ``child`` on ``base`` will never be learned
        from: the update after ``base`` exists without it. That happens only to a slow worker,
        when base's intake was full, learned from and pruned between its listing and its create."""
        for version in reachable_above(self.policy.policy_versions(), base.version):
            policy = self._read(version)
            if policy is None:
                continue
            if child in {u.child for u in policy.recent}:
                return False
            # The update after base holds its whole minibatch in its recent updates; a later
            # version holds them if it reaches back to base (else nobody can tell: a child
            # learned from twice is worse than one not learned from, so keep the slot).
            return policy.parent_id == base.id or policy.updates - base.updates <= len(policy.recent)
        return False

    def _intake_of(self, base: PolicyVersion, slots: int) -> tuple[Intake, ...]:
        """The children waiting in ``base``'s intake, in slot order; a slot that is unreadable,
        out of bounds or not taken in on this very version is skipped (that entry is lost)."""
        out = []
        for slot in range(slots):
            try:
                data = self.policy.read_intake(base.version, slot)
                if data is None:
                    continue    # moved aside by evo check --repair
                out.append(parse_intake(data, strategy=self.name, decisions=tuple(self.space.decisions),
                                        version=base.version, slot=slot, base_id=base.id, now=self.policy.now()))
            except (UnreadableEntry, PolicyError) as exc:
                log.warning("%s: policy intake slot %d of version %d skipped: %s", self.policy.url, slot,
                            base.version, exc)
        return tuple(out)

    def _in_chain(self, mine: PolicyVersion, child: str) -> bool:
        """True unless the version this worker just created is an orphan: a newer version
        exists that was not built on it."""
        newer = reachable_above(self.policy.policy_versions(), mine.version)
        if not newer:
            return True
        successor = self._read(mine.version + 1)
        if successor is not None:
            return successor.parent_id == mine.id
        # Its successor is gone already (pruned): then the newest version's recent updates
        # hold this child if, and only if, the chain went through this version.
        for version in reversed(newer):
            policy = self._read(version)
            if policy is not None:
                return policy.updates - mine.updates >= len(policy.recent) or \
                    child in {u.child for u in policy.recent}
        return True

    # ----- the policy in the store -----
    def latest(self) -> tuple[PolicyVersion, int | None]:
        """The head of the chain (:mod:`evo.strategies.policy_chain`: the newest usable version
        of the lowest cluster of names holding one; names beyond it are never used), and the
        number the next version takes (None when the numbers after the head are all taken).
        Creates the first version when there is none."""
        for _ in range(MAX_REBASES):
            versions = self.policy.policy_versions()
            self._bad &= set(versions)   # a number moved aside may be made again, whole
            gone = False
            for cluster in clusters(versions):
                for version in reversed(cluster):
                    policy = self._read(version)
                    if policy is not None:
                        self._note_beyond([v for v in versions if v > cluster[-1]], cluster[-1])
                        return policy, next_number(version, set(cluster) | self._blocked)
                    if version not in self._bad:
                        gone = True   # pruned since the listing: newer versions exist, list again
                        break
                if gone:
                    break
            if gone:
                continue
            first = first_number(versions, self._blocked)
            policy = self.first_version(first)
            try:
                created = self.policy.create_policy(first, policy.to_bytes())
            except UnreadableEntry as exc:
                log.warning("%s: policy version %d skipped past: %s", self.policy.url, first, exc)
                self._blocked.add(first)
                continue
            if created:
                self._current = policy
                return policy, next_number(first, set(versions) | self._blocked)
        raise RuntimeError(f"{self.policy.url}: no usable policy version after {MAX_REBASES} tries")

    def _note_beyond(self, beyond: list[int], top: int) -> None:
        """Log, once per name, the versions beyond the chain (planted numbers; ignored)."""
        new = [v for v in beyond if v not in self._beyond]
        if new:
            self._beyond.update(new)
            log.warning("%s: policy versions %s ignored: more than %d beyond the chain's names (up to %d); "
                        "see evo check", self.policy.url, ", ".join(map(str, new[:5])), MAX_VERSION_GAP, top)

    def first_version(self, version: int) -> PolicyVersion:
        """The untrained policy (the same in every worker of a run: seeded by the run's seed)."""
        params = self.model.init(np.random.default_rng([self.run.seed, 0x9011C7]))
        return PolicyVersion(self.name, version, None, tuple(self.space.decisions), params, id=new_id())

    def _read(self, version: int) -> PolicyVersion | None:
        if self._current is not None and self._current.version == version:
            return self._current
        if version in self._bad:
            return None
        try:
            data = self.policy.read_policy(version)
            if data is None:
                return None
            policy = parse_policy(data, strategy=self.name, decisions=tuple(self.space.decisions),
                                  shapes=self.shapes, version=version, now=self.policy.now())
        except (UnreadableEntry, PolicyError) as exc:
            log.warning("%s: policy version %d skipped: %s", self.policy.url, version, exc)
            self._bad.add(version)
            return None
        self._current = policy
        return policy

    def updated(self, base: PolicyVersion, batch: tuple[Intake, ...]) -> PolicyVersion:
        """The version after ``base`` (its number is the caller's) that learns from ``batch``,
        the children taken in since ``base``, in order (plus the ``pending`` ones of a version
        written before intake records existed, first): each child's advantage against the
        baseline of the rewards before it, then its reward folded into the baseline; then one
        update (``steps_per_update`` gradient steps) from exactly these children's recorded
        choices and log-probabilities."""
        policy, samples, updates = base, list(base.pending), []
        for r in batch:
            baseline = policy.baseline
            advantage = r.reward - (0.0 if baseline is None else baseline)
            policy = policy.with_baseline(r.reward, self.baseline_decay)
            samples.append(Sample(r.child, r.choices, r.logp, r.sampled, advantage))
            updates.append(Update(r.child, r.reward, advantage, r.sampled, r.worker, r.time))
        params, moments, steps = policy.params, policy.moments, policy.steps
        with np.errstate(all="ignore"):   # an overflow is caught by check_bounds before any create
            for _ in range(self.steps_per_update):
                steps += 1
                grads = self.batch_gradient(params, tuple(samples))
                params, moments = adam_ascent(params, moments, grads, steps, self.learning_rate)
        # projected onto the bounds every reader requires (a non-finite value stays non-finite)
        params = {k: np.clip(a, -MAX_PARAM, MAX_PARAM) for k, a in params.items()}
        return replace(policy, parent=base.version, id=new_id(), parent_id=base.id, params=params,
                       moments=moments, steps=steps, pending=(), updates=base.updates + len(batch),
                       recent=(base.recent + tuple(updates))[-MAX_RECENT:])


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


@register_strategy
class Ppo(LearnedStrategy):
    """The NASNet paper's RL controller (an LSTM trained with PPO on minibatches of 20) over
    the run's space: in nasnet, the 2019 paper's RL-baseline space, not NASNet's own."""

    name = "rl"
    default_batch = 20
    defaults = {"learning_rate": 0.00035, "entropy_weight": 1e-5, "baseline_decay": 0.95}

    def make_model(self, decisions: tuple[int, ...], settings: Any) -> LstmController:
        self.clip, self.steps_per_update = settings.ppo_clip, settings.ppo_epochs
        return LstmController(decisions, hidden=settings.hidden_size, init_range=0.1)

    def gradient(self, params, choices, logp_sampled, advantage):
        # PPO's clipped surrogate min(r A, clip(r, 1 - e, 1 + e) A) plus the entropy bonus:
        # its gradient is r A d(log p) where the clip is not active, 0 where it is. r is the
        # ratio to the version that sampled the child, which may be several versions back.
        fwd = self.model.forward(params, choices)
        ratio = math.exp(min(fwd.logp - logp_sampled, 50.0))
        clipped = (advantage > 0 and ratio > 1 + self.clip) or (advantage < 0 and ratio < 1 - self.clip)
        return fwd.grad(0.0 if clipped else ratio * advantage, self.entropy_weight)


@register_strategy
class Reinforce(LearnedStrategy):
    """REINFORCE over independent softmaxes (NAS-Bench-201's baseline)."""

    name = "reinforce"
    defaults = {"learning_rate": 0.01, "entropy_weight": 0.0, "baseline_decay": 0.9}

    def make_model(self, decisions: tuple[int, ...], settings: Any) -> IndependentSoftmax:
        return IndependentSoftmax(decisions)

    def gradient(self, params, choices, logp_sampled, advantage):
        # corrected for a child sampled by an older version: the truncated importance weight
        # min(1, p_now / p_sampled) (see the module's docstring)
        fwd = self.model.forward(params, choices)
        weight = math.exp(min(fwd.logp - logp_sampled, 0.0))
        return fwd.grad(weight * advantage, self.entropy_weight)

"""What a learned strategy's policy looks like in a store, for people and audits: the newest
version, its recent rewards, and whether the versions present form one consistent chain.
Torch-free; reads only ``policy/`` (through the store's ``policy`` facet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import PolicyFacet, UnreadableEntry

from evo.strategies import make_strategy, strategy_class
from evo.strategies.policy_chain import clusters
from evo.strategies.policy_state import MAX_VERSION_GAP, PolicyError, PolicyVersion, parse_intake, parse_policy


@dataclass(frozen=True)
class PolicyReport:
    """The policy of a run: ``latest`` (the newest usable version, None if there is none),
    every version number present, and the ``problems`` found (one line each: unreadable or
    foreign versions, a version whose parent or update count does not follow its parent's,
    a child learned from twice). ``orphans``: versions that are not in the chain (a writer
    re-created a number after it was pruned, and was killed before withdrawing it).
    ``unusable``: versions that cannot be read or parsed, or are out of bounds
    (:func:`evo.strategies.policy_state.check_bounds`); ``beyond``: versions beyond the chain
    (:mod:`evo.strategies.policy_chain`: planted numbers that workers ignore). ``evo check
    --repair`` moves both aside; ``latest`` is the chain's head, which it never touches.
    ``waiting``: the children in the head's intake (taken in, to be learned from by the next
    version); ``bad_slots``: intake slots (version, slot) no update will ever read (unreadable,
    not an intake record of this run, taken in on another version of that number, a slot past
    the minibatch's, or on a version that is unusable, beyond the chain or not there), which
    ``--repair`` moves aside too."""

    strategy: str
    versions: tuple[int, ...]
    latest: PolicyVersion | None
    problems: tuple[str, ...] = field(default=())
    orphans: tuple[int, ...] = field(default=())
    unusable: tuple[int, ...] = field(default=())
    beyond: tuple[int, ...] = field(default=())
    waiting: int = 0
    bad_slots: tuple[tuple[int, int], ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        """JSON-ready: version, versions kept, updates, baseline and the recent rewards."""
        p = self.latest
        recent = [u.reward for u in p.recent] if p else []
        return {"strategy": self.strategy, "version": p.version if p else None, "versions_kept": len(self.versions),
                "updates": p.updates if p else 0, "waiting": self.waiting, "baseline": p.baseline if p else None,
                "recent_rewards": recent, "recent_mean": sum(recent) / len(recent) if recent else None,
                "orphans": list(self.orphans), "problems": list(self.problems)}


def is_learned(config: Any) -> bool:
    """True when the run's strategy keeps a policy in the store."""
    return bool(getattr(strategy_class(config.selection), "needs_decisions", False))


def read_policy_report(policy: PolicyFacet, config: Any, space: Any = None) -> PolicyReport | None:
    """The report of the run's policy in ``policy`` (the store's facet; None when the run's
    strategy is not a learned one).

    Reads every version present (at most ``controller.keep_versions`` plus what crashed
    workers left), checks each, and checks the chain: each version's parent is an earlier
    version, and a version made from a version present (the same id) holds between one and
    ``controller.batch_size`` updates more, and its recent updates extend its parent's. Then
    reads the intake slots of the versions kept.
    """
    if not is_learned(config):
        return None
    strategy = make_strategy(config, policy, space)
    # The intake is listed before the versions: a slot is only ever made on a version that
    # exists, so a slot above every version listed after it is planted, never one in flight.
    intake = policy.intake()
    versions = tuple(policy.policy_versions())
    parsed: dict[int, PolicyVersion] = {}
    problems: list[str] = []
    unusable: list[int] = []
    for v in versions:
        try:
            data = policy.read_policy(v)
            if data is None:
                continue
            parsed[v] = parse_policy(data, strategy=strategy.name, decisions=tuple(strategy.space.decisions),
                                     shapes=strategy.shapes, version=v, now=policy.now())
        except (UnreadableEntry, PolicyError) as exc:
            problems.append(f"policy version {v}: {exc}")
            unusable.append(v)
    latest, beyond = None, []
    for cluster in clusters(list(versions)):
        if latest is not None:
            beyond += [v for v in cluster if v in parsed]   # the unusable ones are listed already
        elif any(v in parsed for v in cluster):
            latest = parsed[max(v for v in cluster if v in parsed)]
    for v in beyond:
        problems.append(f"policy version {v}: beyond the chain (more than {MAX_VERSION_GAP} numbers past the "
                        f"names up to the chain's head, version {latest.version}); workers ignore it")
        del parsed[v]
    orphans = []
    for v, p in parsed.items():
        parent = parsed.get(p.parent) if p.parent is not None else None
        children = [u.child for u in p.recent]
        if len(children) != len(set(children)):
            problems.append(f"policy version {v}: a child was learned from twice")
        if parent is not None and parent.id != p.parent_id:
            orphans.append(parent.version)   # re-created after a prune by a slow writer; not in the chain
            continue
        if parent is None:
            continue
        learned = p.updates - parent.updates   # the minibatch this version learned from
        if not 1 <= learned <= strategy.batch_size:
            problems.append(f"policy version {v}: {p.updates} updates, its parent {parent.version} {parent.updates} "
                            f"(a version learns from 1 to {strategy.batch_size} children)")
        elif len(p.recent) > learned and [u.child for u in p.recent[:-learned]] != \
                [u.child for u in parent.recent][-(len(p.recent) - learned):]:
            problems.append(f"policy version {v}: its updates do not extend its parent {parent.version}'s")
    waiting, bad_slots = _read_intake(policy, strategy, intake, parsed, latest, versions, problems)
    return PolicyReport(strategy.name, versions, latest, tuple(problems), tuple(sorted(orphans)),
                        tuple(unusable), tuple(beyond), waiting, tuple(bad_slots))


def _read_intake(policy: PolicyFacet, strategy: Any, intake: dict[int, list[int]], parsed: dict[int, PolicyVersion],
                 latest: PolicyVersion | None, versions: tuple[int, ...], problems: list[str]
                 ) -> tuple[int, list[tuple[int, int]]]:
    """The number of children waiting in the head's intake, and the slots no update will read
    (each also one line in ``problems``). Slots below every version present are a prune's
    leftovers (the next prune deletes them): neither."""
    waiting, bad = 0, []
    lowest = min(versions, default=None)
    for v, slots in intake.items():
        if lowest is not None and v < lowest:
            continue
        base = parsed.get(v)
        for slot in slots:
            if base is None:
                why = "its version is not in the chain" if v in versions else "its version is not there"
            elif slot >= strategy.batch_size - 1 - len(base.pending):
                why = f"past the minibatch's {strategy.batch_size - 1 - len(base.pending)} slots; no update reads it"
            else:
                try:
                    data = policy.read_intake(v, slot)
                    if data is None:
                        continue   # pruned meanwhile
                    parse_intake(data, strategy=strategy.name, decisions=tuple(strategy.space.decisions),
                                 version=v, slot=slot, base_id=base.id, now=policy.now())
                    waiting += base is latest
                    continue
                except (UnreadableEntry, PolicyError) as exc:
                    why = str(exc)
            problems.append(f"policy intake slot {slot} of version {v}: {why}")
            bad.append((v, slot))
    return waiting, bad


def audit_policy(store: Any, config: Any) -> dict[str, Any] | None:
    """The policy checked against the population (None for strategies that keep none):
    the report's summary and problems, plus ``controller_children`` (individuals the
    policy proposed, alive or dead), and ``updates_missing``: controller children whose
    update never landed (their worker was killed after publishing, before its version was
    created). More updates than controller children would mean a child was learned from
    twice: that, any problem of the chain, and a learned-from child the store does not
    know, are listed in ``problems``. Children waiting in the head's intake are neither
    learned from yet nor missing."""
    report = read_policy_report(store.policy, config)
    if report is None:
        return None
    from evo.spaces import make_space

    store = store.with_run(bounds=config.bounds, dna_validator=make_space(config).parse)
    census = store.history.census(read_alive=True)
    known = {info.id for info in census.listed} | census.dead_ids | census.quarantined_ids
    proposed = {r["id"] for r in census.history if r.get("metrics", {}).get("policy") == report.strategy}
    proposed |= {ident for ident, c in census.commits.items()
                 if isinstance(c, dict) and c.get("metrics", {}).get("policy") == report.strategy}
    problems = list(report.problems)
    latest = report.latest
    updates = latest.updates if latest else 0
    if updates > len(proposed):
        problems.append(f"{updates} updates from {len(proposed)} controller children: some child counted twice")
    if latest is not None:
        unknown = [u.child for u in latest.recent if u.child not in known]
        if unknown:
            problems.append(f"policy version {latest.version} learned from children the store does not know: "
                            f"{', '.join(unknown[:3])}")
    return {**report.summary(), "problems": problems, "controller_children": len(proposed),
            "updates_missing": len(proposed) - updates - report.waiting}

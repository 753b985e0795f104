"""What a learned strategy's policy looks like in a store, for people and audits: the newest
version, its recent rewards, and whether the versions present form one consistent chain.
Torch-free; reads only ``policy/`` (through the store's ``policy`` facet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage import PolicyFacet, UnreadableEntry

from evo.strategies import make_strategy, strategy_class
from evo.strategies.policy_chain import clusters
from evo.strategies.policy_state import MAX_VERSION_GAP, PolicyError, PolicyVersion, parse_policy


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
    --repair`` moves both aside; ``latest`` is the chain's head, which it never touches."""

    strategy: str
    versions: tuple[int, ...]
    latest: PolicyVersion | None
    problems: tuple[str, ...] = field(default=())
    orphans: tuple[int, ...] = field(default=())
    unusable: tuple[int, ...] = field(default=())
    beyond: tuple[int, ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        """JSON-ready: version, versions kept, updates, baseline and the recent rewards."""
        p = self.latest
        recent = [u.reward for u in p.recent] if p else []
        return {"strategy": self.strategy, "version": p.version if p else None, "versions_kept": len(self.versions),
                "updates": p.updates if p else 0, "baseline": p.baseline if p else None,
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
    version, and a version made from a version present (the same id) holds one update more
    and its recent updates extend its parent's.
    """
    if not is_learned(config):
        return None
    strategy = make_strategy(config, policy, space)
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
        if p.updates != parent.updates + 1:
            problems.append(f"policy version {v}: {p.updates} updates, its parent {parent.version} {parent.updates}")
        if len(p.recent) > 1 and \
                [u.child for u in p.recent[:-1]] != [u.child for u in parent.recent][-(len(p.recent) - 1):]:
            problems.append(f"policy version {v}: its updates do not extend its parent {parent.version}'s")
    return PolicyReport(strategy.name, versions, latest, tuple(problems), tuple(sorted(orphans)),
                        tuple(unusable), tuple(beyond))


def audit_policy(store: Any, config: Any) -> dict[str, Any] | None:
    """The policy checked against the population (None for strategies that keep none):
    the report's summary and problems, plus ``controller_children`` (individuals the
    policy proposed, alive or dead), and ``updates_missing``: controller children whose
    update never landed (their worker was killed after publishing, before its version was
    created). More updates than controller children would mean a child was learned from
    twice: that, any problem of the chain, and a learned-from child the store does not
    know, are listed in ``problems``."""
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
            "updates_missing": len(proposed) - updates}

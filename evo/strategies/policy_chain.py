"""Which policy version numbers belong to the chain, and which number the next version takes:
numbering that a planted name cannot hijack.

Writers make each version at most :data:`MAX_VERSION_GAP` numbers above its parent (they
skip past taken numbers, never further), and prune only below the head; so the names of one
run's chain never lie more than that gap apart. The names present are split into *clusters*
where two consecutive names are more than the gap apart; the chain is the lowest cluster
that holds a usable version, and its head the newest usable version in it. Names in higher
clusters are *beyond the chain* (planted: ``v9999999999.json`` cannot become the head, nor
push the next number past the numbering's end); ``evo check`` reports them and ``--repair``
moves them aside. Lower clusters hold only unusable names (the writers prune them). The next
number is the first free one above the head, within the gap: derived from the chain, never
from the largest name present. A well-formed version planted within the gap of the head, or
below every other one, is taken as the chain (as any writer of the store could do by taking
the next number); the bounds of :mod:`evo.strategies.policy_state` limit what it can hold.
"""

from __future__ import annotations

from typing import Collection, Sequence

from evo.strategies.policy_state import MAX_VERSION_GAP

VERSION_LIMIT = 10**10   # version names have 10 digits


def clusters(versions: Sequence[int]) -> list[list[int]]:
    """``versions`` (ascending) split wherever two consecutive ones are more than
    :data:`MAX_VERSION_GAP` apart; lowest cluster first."""
    out: list[list[int]] = []
    for v in versions:
        if out and v - out[-1][-1] <= MAX_VERSION_GAP:
            out[-1].append(v)
        else:
            out.append([v])
    return out


def reachable_above(versions: Sequence[int], version: int) -> list[int]:
    """The names of ``versions`` (ascending) above ``version`` that are in its cluster (each
    within the gap of the one before, starting from ``version``)."""
    out, last = [], version
    for v in versions:
        if v <= version:
            continue
        if v - last > MAX_VERSION_GAP:
            break
        out.append(v)
        last = v
    return out


def next_number(head: int, taken: Collection[int]) -> int | None:
    """The first number above ``head`` that is not ``taken``, or None when the
    :data:`MAX_VERSION_GAP` numbers above it are all taken (or the numbering ends)."""
    for n in range(head + 1, min(head + MAX_VERSION_GAP, VERSION_LIMIT - 1) + 1):
        if n not in taken:
            return n
    return None


def first_number(versions: Sequence[int], taken: Collection[int]) -> int:
    """The number of a fresh first version when no usable version exists: above the lowest
    cluster of names (so that it is not below names that the writers would then prune as
    old), or from 0 when that cluster is at the end of the numbering."""
    n = clusters(versions)[0][-1] + 1 if versions else 0
    if n >= VERSION_LIMIT - MAX_VERSION_GAP:
        n = 0
    while n in taken:
        n += 1
    return n

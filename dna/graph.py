"""Graph queries on a DNA: topological order, reachability. Pure functions, no torch."""

from __future__ import annotations

from collections import defaultdict, deque

from .genome import DNA, DNAError


def topological_order(dna: DNA) -> tuple[int, ...]:
    """Vertex ids so that every edge goes from an earlier to a later vertex.

    Ties are broken by vertex id, so the order is deterministic. Raises DNAError naming a
    vertex on a cycle if the graph is not acyclic.
    """
    indegree = {v.id: 0 for v in dna.vertices}
    succ: dict[int, list[int]] = defaultdict(list)
    for e in dna.edges:
        succ[e.src].append(e.dst)
        indegree[e.dst] = indegree.get(e.dst, 0) + 1
    ready = sorted(v for v, d in indegree.items() if d == 0)
    queue = deque(ready)
    order: list[int] = []
    while queue:
        v = queue.popleft()
        order.append(v)
        newly = []
        for w in succ.get(v, ()):
            indegree[w] -= 1
            if indegree[w] == 0:
                newly.append(w)
        for w in sorted(newly):
            queue.append(w)
    if len(order) != len(indegree):
        stuck = sorted(v for v, d in indegree.items() if d > 0)
        raise DNAError(f"graph has a cycle through vertex {stuck[0]}")
    return tuple(order)


def reachable_from(dna: DNA, start: int, forward: bool = True) -> set[int]:
    """Vertex ids reachable from ``start`` following edges forward (or backward)."""
    nbrs: dict[int, list[int]] = defaultdict(list)
    for e in dna.edges:
        if forward:
            nbrs[e.src].append(e.dst)
        else:
            nbrs[e.dst].append(e.src)
    seen = {start}
    stack = [start]
    while stack:
        v = stack.pop()
        for w in nbrs.get(v, ()):
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def is_ancestor(dna: DNA, a: int, b: int) -> bool:
    """True if there is a directed path from ``a`` to ``b`` (a vertex is its own ancestor)."""
    return b in reachable_from(dna, a)

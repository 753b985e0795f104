"""Channel counts read from the DNA alone, without knowing the input image."""

from __future__ import annotations

from dna import DNA
from dna.shapes import along_primary_edges


def symbolic_channels(dna: DNA) -> dict[int, int | None]:
    """Output channel count of every vertex, or None where it is the input's (unknown) count.

    A vertex takes its primary (lowest-id) incoming edge's output: a conv gives its
    ``channels``, an identity passes on its source's count. The input vertex is None, and so
    is every vertex whose chain of primary edges reaches the input through identities only.
    The DNA must be acyclic with every non-input vertex having an incoming edge (any valid DNA).
    """
    return along_primary_edges(dna, None, lambda primary, src: primary.channels if primary.is_conv else src)

"""Mutations of one convolution's numbers: stride, output channels, filter size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dna import DNA, Bounds

from ._draws import new_channels, odd_sizes_near, stride_options
from ._large_scale import register


def _with_edge(dna: DNA, edge_id: int, **changes: int) -> DNA:
    """The DNA with one edge's fields changed (same id, same place in the tuple)."""
    return dna.replace(edges=tuple(replace(e, **changes) if e.id == edge_id else e for e in dna.edges))


def _convs_with_stride_choice(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    return tuple(e.id for e in dna.conv_edges if stride_options(e.stride, bounds.max_stride))


@register("alter_stride", candidates=_convs_with_stride_choice)
def alter_stride(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """A random convolution's stride doubled or halved (powers of two in [1, max_stride])."""
    options = stride_options(dna.edge(edge_id).stride, bounds.max_stride)
    return _with_edge(dna, edge_id, stride=options[int(rng.integers(len(options)))])


def _convs_if_channels_can_change(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    return tuple(e.id for e in dna.conv_edges) if bounds.max_channels >= 2 else ()


@register("alter_channels", candidates=_convs_if_channels_can_change)
def alter_channels(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """A random convolution's output channels: round(c * 2**U(-1, 1)) in [1, max_channels], changed."""
    c = dna.edge(edge_id).channels
    return _with_edge(dna, edge_id, channels=new_channels(c, rng, bounds.max_channels))


_FILTER_AXES = ("filter_h", "filter_w")


def _convs_with_filter_choice(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    return tuple(e.id for e in dna.conv_edges
                 if any(odd_sizes_near(getattr(e, axis), bounds.max_filter_size) for axis in _FILTER_AXES))


@register("alter_filter_size", candidates=_convs_with_filter_choice)
def alter_filter_size(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """A random convolution's filter height or width (chosen at random) set to a new odd size.

    The new size is uniform among the odd sizes in [1, max_filter_size] within a factor of
    two of the current one (or two away from it, so that 1 can grow to 3).
    """
    edge = dna.edge(edge_id)
    axes = [axis for axis in _FILTER_AXES if odd_sizes_near(getattr(edge, axis), bounds.max_filter_size)]
    axis = axes[int(rng.integers(len(axes)))]
    sizes = odd_sizes_near(getattr(edge, axis), bounds.max_filter_size)
    return _with_edge(dna, edge_id, **{axis: sizes[int(rng.integers(len(sizes)))]})

"""The genome: DNA as plain data, its validation and shape inference.

Torch-free: ``import dna`` costs no torch import. Model building lives in ``dna.build`` and
weight inheritance in ``dna.inherit``, which import torch when they are imported.
"""

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import DNA, SCHEMA_VERSION, DNAError, Edge, Vertex, from_dict, initial
from .graph import is_ancestor, reachable_from, topological_order
from .shapes import count_parameters, infer_shapes
from .validate import from_json, validate

__all__ = [
    "DNA", "Vertex", "Edge", "Bounds", "DEFAULT_BOUNDS", "DNAError", "SCHEMA_VERSION",
    "initial", "validate", "from_json", "from_dict", "topological_order", "reachable_from",
    "is_ancestor", "infer_shapes", "count_parameters",
]

"""Weight inheritance: a child keeps its parent's tensors wherever the architecture allows.

A tensor of a built model belongs to the vertex or edge whose id its state-dict name carries
(``vertices.v{id}.*``, ``edges.e{id}.weight``); the classifier (``classifier.*``, no id in its
name) belongs to the output vertex. Ids survive mutation and are never reused, so a child
tensor is taken from the parent when the parent has a tensor of the same name and the same
shape, and its owner is the same part (same id, same kind; for the classifier, the same
output vertex id) in both DNAs. Everything else keeps the child's fresh initialisation. This
is the paper's rule ("keep the weights of every layer whose shape is unchanged") made
mechanical; ``reset_weights`` renumbers every id, the output vertex's too, so nothing matches
and nothing is inherited.

The parent's tensors come from a shared store and are not trusted: unknown names, non-tensors,
wrong shapes, odd layouts and non-finite values are skipped (the child tensor stays fresh),
other dtypes are cast. Imports torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .genome import DNA

_OWNER = re.compile(r"^(vertices\.v|edges\.e)(\d+)\.")


@dataclass(frozen=True)
class InheritReport:
    """What :func:`inherit` copied.

    ``tensors_*`` count state-dict entries (buffers such as BatchNorm running statistics
    included); ``params_*`` count trainable parameter elements. ``fresh_keys`` names the child
    tensors that kept their fresh initialisation, in state-dict order.
    """

    tensors_inherited: int
    tensors_fresh: int
    params_inherited: int
    params_fresh: int
    fresh_keys: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        """Share of trainable parameter elements inherited (0.0 for a model without any)."""
        total = self.params_inherited + self.params_fresh
        return self.params_inherited / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts and ``fraction`` (without the key list)."""
        d = asdict(self)
        del d["fresh_keys"]
        d["fraction"] = self.fraction
        return d


def _owners(dna: DNA) -> dict[str, tuple[str, int]]:
    """Owner name (``vertices.v3``, ``edges.e7``, ``classifier``) -> what identifies the owner."""
    owners = {f"vertices.v{v.id}": (v.kind, v.id) for v in dna.vertices}
    owners.update({f"edges.e{e.id}": (e.kind, e.id) for e in dna.edges})
    owners["classifier"] = ("output", dna.output_id)
    return owners


def _owner_of(name: str) -> str | None:
    """The owner name a state-dict key carries, or None for a key of no known form."""
    match = _OWNER.match(name)
    if match is not None:
        return match.group(1) + match.group(2)
    return "classifier" if name.startswith("classifier.") else None


def _architecture(dna: DNA) -> tuple:
    return (frozenset(dna.vertices), frozenset(dna.edges), dna.input_id, dna.output_id)


def _usable(value: Any, like: torch.Tensor) -> bool:
    """True if ``value`` is a plain tensor that can stand in for ``like``."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_meta:
        return False
    if value.is_complex() or tuple(value.shape) != tuple(like.shape):
        return False
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return False
    return True


@torch.no_grad()
def inherit(parent_state: Mapping[str, torch.Tensor], parent_dna: DNA, child_dna: DNA,
            child_model: nn.Module) -> InheritReport:
    """Copy into ``child_model`` (in place) every parent tensor it can use; report what was copied.

    A child tensor is inherited when ``parent_state`` has a tensor under the same name with the
    same shape, finite values and a real (non-complex) dtype, and the part that owns it is the
    same in ``parent_dna`` and ``child_dna`` (see the module docstring). Copies are cast to the
    child tensor's dtype and device. Mismatches in ``parent_state`` never raise; they leave the
    child tensor fresh. Raises ``TypeError`` if ``parent_state`` is not a mapping and
    ``ValueError`` if ``child_model`` is an EvoNet built from another architecture than
    ``child_dna`` (both are caller bugs, not bad data).
    """
    if not isinstance(parent_state, Mapping):
        raise TypeError(f"inherit: parent_state must be a mapping of names to tensors, "
                        f"got {type(parent_state).__name__}")
    built_from = getattr(child_model, "dna", None)
    if isinstance(built_from, DNA) and _architecture(built_from) != _architecture(child_dna):
        raise ValueError("inherit: child_model was built from a different architecture than child_dna")
    parent_owners = _owners(parent_dna)
    child_owners = _owners(child_dna)
    trainable = {name for name, p in child_model.named_parameters() if p.requires_grad}

    tensors_inherited = tensors_fresh = params_inherited = params_fresh = 0
    fresh: list[str] = []
    for name, target in child_model.state_dict(keep_vars=True).items():
        owner = _owner_of(name)
        same_owner = owner is not None and owner in child_owners and \
            parent_owners.get(owner) == child_owners[owner]
        source = parent_state.get(name)
        ok = same_owner and _usable(source, target)
        if ok:
            target.copy_(source)
            tensors_inherited += 1
        else:
            tensors_fresh += 1
            fresh.append(name)
        if name in trainable:
            if ok:
                params_inherited += target.numel()
            else:
                params_fresh += target.numel()
    return InheritReport(tensors_inherited, tensors_fresh, params_inherited, params_fresh, tuple(fresh))

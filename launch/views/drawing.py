"""Drawings of an individual's architecture: graphviz when installed, matplotlib otherwise.

:func:`architecture_graph` turns a DNA (as stored: a JSON object) into plain nodes and
labelled edges; :func:`draw_architecture` renders them to a PNG. Large-scale DNAs draw
their vertex graph (edges labelled with the convolution they carry); NASNet DNAs draw the
normal and the reduction cell side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Graph:
    """Nodes (id -> label) and edges (src, dst, label), grouped into named clusters."""

    nodes: dict[str, str]
    edges: list[tuple[str, str, str]]
    clusters: dict[str, list[str]]


def architecture_graph(dna: dict) -> Graph:
    """The drawable graph of a stored DNA of either kind; UserError if it is neither."""
    if dna.get("kind") == "nasnet":
        return _nasnet_graph(dna)
    if isinstance(dna.get("vertices"), list) and isinstance(dna.get("edges"), list):
        return _large_scale_graph(dna)
    raise UserError(f"cannot draw a DNA of kind {dna.get('kind')!r}")


def _large_scale_graph(dna: dict) -> Graph:
    nodes = {}
    for v in dna["vertices"]:
        vid = v["id"]
        role = "input" if vid == dna["input_id"] else "output" if vid == dna["output_id"] else f"v{vid}"
        nodes[f"v{vid}"] = f"{role}\n{'BN+ReLU' if v['kind'] == 'bn_relu' else 'linear'}"
    edges = []
    for e in sorted(dna["edges"], key=lambda e: e["id"]):
        label = "identity" if e["kind"] == "identity" else \
            f"conv {e['filter_h']}x{e['filter_w']}, {e['channels']}ch" + (f", /{e['stride']}" if e["stride"] > 1 else "")
        edges.append((f"v{e['src']}", f"v{e['dst']}", label))
    nodes["pool"] = "global pool\n+ linear"
    edges.append((f"v{dna['output_id']}", "pool", ""))
    return Graph(nodes, edges, {"": list(nodes)})


def _nasnet_graph(dna: dict) -> Graph:
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    clusters: dict[str, list[str]] = {}
    for cell in ("normal", "reduction"):
        combos = dna[cell]["combinations"]
        names = [f"{cell}:h{i}" for i in range(2 + len(combos))]
        nodes[names[0]] = "h[i] (previous cell)"
        nodes[names[1]] = "h[i-1]"
        read = set()
        for k, (a, op_a, b, op_b) in enumerate(combos):
            nodes[names[k + 2]] = f"+ (state {k + 2})"
            edges.append((names[a], names[k + 2], op_a))
            edges.append((names[b], names[k + 2], op_b))
            read |= {a, b}
        out = f"{cell}:out"
        nodes[out] = f"{cell} cell output\n(concat)"
        concat = dna[cell].get("concat")  # an explicit output list (published cells), else the unread states
        for s in range(len(names)):
            if (s in concat) if isinstance(concat, list) else (s not in read):
                edges.append((names[s], out, ""))
        clusters[f"{cell} cell"] = names + [out]
    return Graph(nodes, edges, clusters)


# Formats both renderers write (graphviz's `dot` and matplotlib); the file's extension picks one.
ARCH_FORMATS = ["pdf", "png", "svg"]


def draw_architecture(dna: dict, path: str, title: str = "") -> str:
    """Render ``dna`` to ``path`` (.png, .pdf or .svg, by its extension); returns which renderer
    drew it (graphviz|matplotlib)."""
    graph = architecture_graph(dna)
    try:
        _draw_graphviz(graph, path, title)
        return "graphviz"
    except Exception:  # no python package, no `dot` binary, or it failed: matplotlib instead
        _draw_matplotlib(graph, path, title)
        return "matplotlib"


def _draw_graphviz(graph: Graph, path: str, title: str) -> None:
    import graphviz  # optional: the python package, plus the `dot` binary

    g = graphviz.Digraph(graph_attr={"rankdir": "TB", "label": title, "labelloc": "t"},
                         node_attr={"shape": "box", "style": "rounded", "fontsize": "10"},
                         edge_attr={"fontsize": "9"})
    for name, members in graph.clusters.items():
        with g.subgraph(name=f"cluster_{name or 'main'}") as sub:
            sub.attr(label=name)
            for n in members:
                sub.node(n, graph.nodes[n])
    for s, d, label in graph.edges:
        g.edge(s, d, label=label)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    drawing = g.pipe(format=ext if ext in ARCH_FORMATS else "png")
    with open(path, "wb") as f:
        f.write(drawing)


def _layers(graph: Graph, members: list[str]) -> dict[str, int]:
    """Longest-path layer of each node (sources at 0)."""
    inside = set(members)
    preds: dict[str, list[str]] = {n: [] for n in members}
    for s, d, _ in graph.edges:
        if s in inside and d in inside:
            preds[d].append(s)
    layer: dict[str, int] = {}

    def depth(n: str, seen: frozenset = frozenset()) -> int:
        if n not in layer:
            layer[n] = 0 if not preds[n] or n in seen else 1 + max(depth(p, seen | {n}) for p in preds[n])
        return layer[n]

    for n in members:
        depth(n)
    return layer


def layout(graph: Graph) -> tuple[dict[str, tuple[float, float]], float, int]:
    """Where to draw each node: (x, y) by node (each cluster side by side, layers top down at
    y = -1.4 per layer), the total width and the deepest layer. Used by the matplotlib
    drawing and by ``evo report``'s interactive drawings."""
    pos: dict[str, tuple[float, float]] = {}
    x0 = 0.0
    max_depth = 1
    for _, members in graph.clusters.items():
        layer = _layers(graph, members)
        by_layer: dict[int, list[str]] = {}
        for n in members:
            by_layer.setdefault(layer[n], []).append(n)
        width = max(len(v) for v in by_layer.values())
        for depth, names in by_layer.items():
            for i, n in enumerate(names):
                pos[n] = (x0 + (i - (len(names) - 1) / 2) * 2.2 + width * 1.1, -depth * 1.4)
        max_depth = max(max_depth, max(by_layer))
        x0 += width * 2.2 + 1.5
    return pos, x0, max_depth


def _draw_matplotlib(graph: Graph, path: str, title: str) -> None:
    from .plotting import pyplot

    plt = pyplot()
    clusters = list(graph.clusters.items())
    pos, x0, max_depth = layout(graph)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * x0), max(3.0, 1.0 * (max_depth + 1))))
    for s, d, label in graph.edges:
        (xs, ys), (xd, yd) = pos[s], pos[d]
        ax.annotate("", xy=(xd, yd + 0.25), xytext=(xs, ys - 0.25),
                    arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 0.8})
        if label:
            ax.text((xs + xd) / 2, (ys + yd) / 2, label, fontsize=6, ha="center", va="center", color="0.15",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    for n, (x, y) in pos.items():
        ax.text(x, y, graph.nodes[n], fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.3", "fc": "#dde8f5", "ec": "#4a6f9c"})
    for name, members in clusters:
        if name:
            xs = [pos[n][0] for n in members]
            ax.text(sum(xs) / len(xs), 0.9, name, ha="center", fontsize=9, weight="bold")
    ax.set_xlim(min(p[0] for p in pos.values()) - 1.5, max(p[0] for p in pos.values()) + 1.5)
    ax.set_ylim(-max_depth * 1.4 - 0.8, 1.3)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

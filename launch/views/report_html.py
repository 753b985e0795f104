"""`evo report`'s page: :func:`render` turns :func:`launch.views.report_data.report_data` into one
self-contained HTML file (plotly.js, the figures' data, the architecture drawings and the
click-to-lineage script all inside it: it opens offline, from any laptop, with no server).

The figures are plotly figures built as plain dicts (no per-point validation: 20,000 points
serialize in well under a second). Everything that came from the store (mutation and worker
names, hosts, retrain sources) is escaped before it reaches the page, and the lineage panel
is built with DOM text nodes, never innerHTML.
"""

from __future__ import annotations

import base64
import html
import json
import time
from typing import Any

from ..errors import UserError

# A trace with more points than this is drawn with WebGL (scattergl), as plotly advises.
WEBGL_POINTS = 5000
GREY, RED, BLUE, ORANGE, GREEN = "#9a9a9a", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c"
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True}


def plotly_modules():
    """(plotly.io, plotly.offline) or a one-line UserError naming the extra to install."""
    try:
        import plotly.io as pio
        import plotly.offline as offline
    except ImportError:
        raise UserError("evo report needs plotly, which is not installed: "
                        "pip install 'evo[report]' (or pip install plotly)") from None
    return pio, offline


def esc(x: Any) -> str:
    """``x`` as text safe inside HTML (and plotly's hover labels, which read a few tags)."""
    return html.escape(str(x), quote=True)


def script_json(obj: Any) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c") \
        .replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def time_unit(span_seconds: float) -> tuple[str, float]:
    """(unit name, seconds per unit) for a time axis of ``span_seconds``."""
    if span_seconds > 3 * 86400:
        return "days", 86400.0
    if span_seconds > 3 * 3600:
        return "hours", 3600.0
    if span_seconds > 180:
        return "minutes", 60.0
    return "seconds", 1.0


def fmt(x: float | None, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals, or ``-`` for None."""
    return "-" if x is None else f"{x:.{digits}f}"


def duration(seconds: float) -> str:
    """A short duration (``42s``, ``5m07s``, ``3h12m``), as the other commands write them."""
    from .snapshot import ago

    return ago(seconds)


# ----- figures (plain plotly dicts) -----

def typed(values: Any, dtype: str) -> dict[str, str]:
    """A numeric array as plotly.js's typed-array form (``{"dtype", "bdata"}``: base64 of the
    little-endian values): a fraction of the size and time of a JSON list of numbers."""
    import numpy as np

    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": {"float64": "f8", "float32": "f4", "int32": "i4"}[arr.dtype.name],
            "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def _scatter(n: int) -> str:
    """The trace type for a figure of ``n`` points. Every trace of a figure gets the same one:
    plotly draws WebGL traces above SVG ones, which would hide a line under the points."""
    return "scattergl" if n > WEBGL_POINTS else "scatter"


def progress_figure(data: dict[str, Any]) -> dict[str, Any]:
    """Fitness against birth time of every individual (dead grey, alive red), the best so far
    and an empty "clicked lineage" trace that the page's script fills (its index is the last).
    Each point's ``customdata`` is its index in the embedded columns; the page's script makes
    the hover labels (id, mutation) from those, so no id is in the file twice."""
    import numpy as np

    pts = data["points"]
    span = max(pts["t"], default=0.0)
    unit, scale = time_unit(span)
    t = np.asarray(pts["t"], dtype=np.float64) / scale
    fit = np.asarray(pts["fitness"], dtype=np.float64)
    alive = np.asarray(pts["alive"], dtype=bool)
    kind = _scatter(len(t))
    traces = []
    for name, mask, style in (("dead", ~alive, {"color": GREY, "size": 5, "opacity": 0.6}),
                              ("alive", alive, {"color": RED, "size": 8, "line": {"width": 0.5, "color": "black"}})):
        idx = np.flatnonzero(mask)
        traces.append({
            "type": kind, "mode": "markers", "name": f"{name} ({len(idx)})",
            "x": typed(t[idx], "float64"), "y": typed(fit[idx], "float32"), "customdata": typed(idx, "int32"),
            "marker": style,
            "hovertemplate": "%{text}<br>fitness %{y:.4f}<br>born +%{x:.2f} " + unit + "<extra>" + name + "</extra>"})
    steps = data["best_so_far"]
    if steps:
        xs = [s["t"] / scale for s in steps] + [span / scale]
        ys = [s["fitness"] for s in steps] + [steps[-1]["fitness"]]
        traces.append({"type": kind, "mode": "lines", "name": f"best so far ({ys[-1]:.4f})",
                       "x": xs, "y": ys, "line": {"shape": "hv", "color": BLUE, "width": 2}, "hoverinfo": "skip"})
    traces.append({"type": kind, "mode": "lines+markers", "name": "clicked lineage", "x": [], "y": [],
                   "line": {"color": ORANGE, "width": 2}, "marker": {"size": 9, "color": ORANGE},
                   "hoverinfo": "skip", "visible": True})
    return {"data": traces, "layout": {
        "title": {"text": f"{data['summary']['born']} individuals: click a point for its lineage", "font": {"size": 14}},
        "xaxis": {"title": {"text": f"birth ({unit} since the first)"}, "zeroline": False},
        "yaxis": {"title": {"text": "validation accuracy (fitness)"}},
        "hovermode": "closest", "dragmode": "zoom", "height": 480, "margin": {"t": 50, "r": 20},
        "legend": {"orientation": "h", "y": -0.18}, "meta": {"time_scale": scale}}}


def lineage_figure(lin: dict[str, Any]) -> dict[str, Any]:
    """The best individual's fitness along its lineage, one marker per generation."""
    steps = lin["steps"]
    text = [f"{s['id']}<br>{esc(s['mutation'])}" for s in steps]
    return {"data": [{"type": "scatter", "mode": "lines+markers", "name": "lineage",
                      "x": list(range(len(steps))), "y": [s["fitness"] for s in steps], "text": text,
                      "line": {"shape": "hv", "color": BLUE}, "marker": {"size": 7},
                      "hovertemplate": "generation %{x}<br>%{text}<br>fitness %{y:.4f}<extra></extra>"}],
            "layout": {"xaxis": {"title": {"text": "generation"}}, "yaxis": {"title": {"text": "fitness"}},
                       "height": 320, "margin": {"t": 20, "r": 20}, "showlegend": False}}


def improvements_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mutation: children made (light) and children fitter than their parent (dark)."""
    names = [esc(r["mutation"]) for r in rows][::-1]
    rates = [f"{100 * r['rate']:.0f}%" if r["rate"] is not None else "-" for r in rows][::-1]
    return {"data": [
        {"type": "bar", "orientation": "h", "name": "children", "y": names, "x": [r["children"] for r in rows][::-1],
         "marker": {"color": "#c6dbef"}, "hovertemplate": "%{y}: %{x} children<extra></extra>"},
        {"type": "bar", "orientation": "h", "name": "fitter than the parent", "y": names,
         "x": [r["improved"] for r in rows][::-1], "marker": {"color": GREEN}, "text": rates,
         "textposition": "outside", "hovertemplate": "%{y}: %{x} improved (%{text})<extra></extra>"}],
        "layout": {"barmode": "overlay", "height": max(220, 28 * len(rows) + 90), "margin": {"t": 20, "l": 160, "r": 40},
                   "xaxis": {"title": {"text": "children"}}, "legend": {"orientation": "h", "y": -0.25}}}


def health_figures(h: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(births per time bin with the workers heartbeating and the lost ones marked; one bar per
    worker from its start to its last heartbeat, by status; None without heartbeats)."""
    edges = h["bins"]["edges"]
    unit, scale = time_unit(edges[-1] if edges else 0.0)
    centers = [(a + b) / 2 / scale for a, b in zip(edges, edges[1:])]
    traces = [{"type": "bar", "name": f"births per {duration(h['bin_seconds'])}", "x": centers, "y": h["bins"]["births"],
               "marker": {"color": "#6baed6"}, "hovertemplate": "%{y} births<extra></extra>"},
              {"type": "scatter", "mode": "lines", "name": "workers heartbeating", "x": centers,
               "y": h["bins"]["workers"], "yaxis": "y2", "line": {"color": "black", "shape": "hv"},
               "hovertemplate": "%{y} workers<extra></extra>"}]
    if h["lost"]:
        traces.append({"type": "scatter", "mode": "markers", "name": f"worker lost ({len(h['lost'])})",
                       "x": [lost["t"] / scale for lost in h["lost"]], "y": [0] * len(h["lost"]), "yaxis": "y2",
                       "text": [esc(lost["worker"]) for lost in h["lost"]],
                       "marker": {"symbol": "x", "size": 11, "color": RED},
                       "hovertemplate": "%{text} last seen<extra>lost</extra>"})
    over_time = {"data": traces, "layout": {
        "height": 300, "margin": {"t": 20, "r": 60}, "xaxis": {"title": {"text": f"{unit} since the first birth"}},
        "yaxis": {"title": {"text": "births"}},
        "yaxis2": {"title": {"text": "workers"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                   "tickformat": "d"},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom"}, "bargap": 0.05}}
    workers = h["workers"]
    if not workers:
        return over_time, None
    colours = {"active": GREEN, "stopped": GREY, "lost": RED}
    timeline = []
    for status in ("active", "stopped", "lost"):
        ws = [w for w in workers if w["status"] == status]
        if not ws:
            continue
        xs, ys, text = [], [], []
        for w in ws:
            label = f"{w['births']} births, {w['failures']} failed, {w['race_losses']} races lost"
            xs += [w["start"] / scale, w["last_seen"] / scale, None]
            ys += [esc(w["worker"])] * 2 + [None]
            text += [label, label, None]
        timeline.append({"type": "scatter", "mode": "lines", "name": f"{status} ({len(ws)})", "x": xs, "y": ys,
                         "text": text, "line": {"color": colours[status], "width": 6},
                         "hovertemplate": "%{y}: %{text}<extra>" + status + "</extra>"})
    return over_time, {"data": timeline, "layout": {
        "height": min(1600, max(180, 18 * len(workers) + 100)), "margin": {"t": 20, "l": 170, "r": 20},
        "xaxis": {"title": {"text": f"{unit} since the first birth"}}, "yaxis": {"type": "category", "automargin": True},
        "legend": {"orientation": "h", "y": 1.0, "yanchor": "bottom"}}}


def strategy_figure(s: dict[str, Any]) -> dict[str, Any]:
    """Reward (fitness) of the learned strategy's children by birth order, coloured by the
    policy version that proposed them, with their moving mean."""
    return {"data": [
        {"type": _scatter(len(s["order"])), "mode": "markers", "name": "reward (fitness)",
         "x": typed(s["order"], "int32"), "y": typed(s["reward"], "float64"),
         "marker": {"size": 5, "color": typed(s["version"], "int32"), "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": {"text": "policy<br>version"}}},
         "hovertemplate": "child %{x}<br>reward %{y:.4f}<br>policy version %{marker.color}<extra></extra>"},
        {"type": _scatter(len(s["order"])), "mode": "lines", "name": f"moving mean ({s['window']})",
         "x": typed(s["order"], "int32"),
         "y": typed(s["moving_mean"], "float64"), "line": {"color": RED, "width": 2}, "hoverinfo": "skip"}],
        "layout": {"height": 360, "margin": {"t": 20, "r": 20},
                   "xaxis": {"title": {"text": "child of the learned strategy (birth order)"}},
                   "yaxis": {"title": {"text": "reward = fitness"}}, "legend": {"orientation": "h", "y": -0.25}}}


# ----- architecture drawings -----

def architecture_figure(dna: dict[str, Any], title: str) -> dict[str, Any]:
    """A drawing of ``dna`` as a plotly figure: launch.views.drawing's graph (vertices and the
    convolutions on edges; NASNet: the two cells) at launch.views.drawing's layout, nodes as boxes,
    edges as arrows with their labels. UserError when the DNA is of a kind it cannot draw."""
    from .drawing import architecture_graph, layout

    graph = architecture_graph(dna)
    pos, width, depth = layout(graph)
    notes = []
    lx, ly, lt = [], [], []
    for src, dst, label in graph.edges:
        (xs, ys), (xd, yd) = pos[src], pos[dst]
        notes.append({"x": xd, "y": yd + 0.28, "ax": xs, "ay": ys - 0.28, "xref": "x", "yref": "y", "axref": "x",
                      "ayref": "y", "text": "", "showarrow": True, "arrowhead": 2, "arrowwidth": 1,
                      "arrowcolor": "#777"})
        if label:
            lx.append((xs + xd) / 2)
            ly.append((ys + yd) / 2)
            lt.append(esc(label))
    for name, (x, y) in pos.items():
        notes.append({"x": x, "y": y, "xref": "x", "yref": "y", "showarrow": False,
                      "text": esc(graph.nodes[name]).replace("\n", "<br>"), "font": {"size": 10},
                      "bgcolor": "#dde8f5", "bordercolor": "#4a6f9c", "borderpad": 3})
    for name, members in graph.clusters.items():
        if name:
            xs = [pos[n][0] for n in members]
            notes.append({"x": sum(xs) / len(xs), "y": 0.9, "xref": "x", "yref": "y", "showarrow": False,
                          "text": f"<b>{esc(name)}</b>", "font": {"size": 12}})
    xs = [p[0] for p in pos.values()]
    height = min(1600, max(260, int(62 * 1.4 * (depth + 1)) + 70))
    return {"data": [{"type": "scatter", "mode": "text", "x": lx, "y": ly, "text": lt, "hoverinfo": "skip",
                      "textfont": {"size": 9, "color": "#333"}}],
            "layout": {"title": {"text": title, "font": {"size": 12}, "x": 0.01, "xanchor": "left"},
                       "annotations": notes, "showlegend": False,
                       "height": height, "margin": {"t": 40, "l": 10, "r": 10, "b": 10},
                       "xaxis": {"visible": False, "range": [min(xs) - 1.6, max(xs) + 1.6]},
                       "yaxis": {"visible": False, "range": [-depth * 1.4 - 0.8, 1.3]},
                       "plot_bgcolor": "white"}}


def architecture_figures(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Drawings of the first ``k`` rows' architectures: ``{"id", "figure"}`` each, or
    ``{"id", "problem"}`` when its DNA is unreadable or of a kind that cannot be drawn."""
    out = []
    for row in rows[:k]:
        if row["dna"] is None:
            out.append({"id": row["id"], "problem": "its DNA could not be read"})
            continue
        try:
            title = f"#{row['rank']} {row['id']}  fitness {row['fitness']:.4f}"
            out.append({"id": row["id"], "figure": architecture_figure(row["dna"], title)})
        except (UserError, ValueError, KeyError, TypeError, IndexError) as exc:
            out.append({"id": row["id"], "problem": f"cannot be drawn: {exc}"})
    return out


# ----- the page -----

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#20344c;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}nav{padding:6px 24px;background:#e8edf3;font-size:13px}
nav a{margin-right:14px;color:#20344c}section{background:#fff;margin:14px 24px;padding:10px 18px;
border:1px solid #ddd;border-radius:6px}h2{font-size:16px;margin:6px 0 10px}
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f1f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}.id{font-family:monospace}
.up{color:#2ca02c}.down{color:#d62728}.note{font-size:12px;color:#555}
ol.tree{font-size:12px;max-height:520px;overflow:auto;margin:8px 0;padding-left:44px}
ol.tree li{position:relative;padding:2px 0 2px 12px;border-left:2px solid #9ab}
ol.tree li:before{content:"";position:absolute;left:-6px;top:8px;width:8px;height:8px;border-radius:50%;
background:#9ab}ol.tree li.up:before{background:#2ca02c}ol.tree li.down:before{background:#d62728}
.arch{display:inline-block;width:48%;min-width:420px;margin:6px;vertical-align:top;font-size:11px;
border:1px solid #ddd}#clicked-lineage{font-size:12px;min-height:2em}
.cards span{display:inline-block;margin:0 18px 4px 0;font-size:13px}.cards b{font-size:16px}
"""

# The page's script, before any figure: the embedded columns of every individual, hover labels
# made from them once the progress figure is drawn, and the "clicked lineage" panel and trace
# filled when a point is clicked (parent indices followed back to the first ancestor on record).
# Text from the store reaches the page through textContent, or escaped for plotly's labels.
PAGE_JS = """
(function(){
var P=JSON.parse(document.getElementById('evo-points').textContent);
var orphan={};P.orphans.forEach(function(i){orphan[i]=1;});
function decode(v){  // a typed array as the file holds it ({dtype, bdata}) or a plain array
  if(!v||!v.bdata)return v;var b=atob(v.bdata),u=new Uint8Array(b.length);
  for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
  return new ({i4:Int32Array,f4:Float32Array,f8:Float64Array}[v.dtype])(u.buffer);}
function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;');}
function chain(i){var c=[],seen={};while(i>=0&&!seen[i]){seen[i]=1;c.push(i);i=P.parent[i];}return c.reverse();}
function cell(tr,text,cls){var td=document.createElement('td');td.textContent=text;if(cls)td.className=cls;tr.appendChild(td);}
function show(gd,i){
  var c=chain(i),panel=document.getElementById('clicked-lineage'),scale=gd.layout.meta.time_scale;
  panel.textContent='';
  var h=document.createElement('p');h.id='clicked-title';
  h.textContent='lineage of '+P.id[i]+': '+(c.length-1)+' generation(s)'+(orphan[c[0]]?' (the chain stops: an ancestor has no record)':'');
  panel.appendChild(h);
  var t=document.createElement('table');t.id='clicked-steps';var hr=document.createElement('tr');
  ['#','id','mutation','fitness','change','born (s after the first)','state'].forEach(function(x){var th=document.createElement('th');th.textContent=x;hr.appendChild(th);});
  t.appendChild(hr);
  c.forEach(function(j,k){var tr=document.createElement('tr');tr.setAttribute('data-id',P.id[j]);
    var d=k?P.fitness[j]-P.fitness[c[k-1]]:null;
    cell(tr,String(k),'num');cell(tr,P.id[j],'id');cell(tr,P.mutations[P.mutation[j]]);
    cell(tr,P.fitness[j].toFixed(4),'num');cell(tr,d===null?'':(d>=0?'+':'')+d.toFixed(4),d===null?'num':(d>0?'num up':'num down'));
    cell(tr,P.t[j].toFixed(1),'num');cell(tr,P.alive[j]?'alive':'dead');t.appendChild(tr);});
  panel.appendChild(t);
  Plotly.restyle(gd,{x:[c.map(function(j){return P.t[j]/scale;})],y:[c.map(function(j){return P.fitness[j];})]},[gd.data.length-1]);
}
window.evoPoints=P;window.evoDecode=decode;
window.evoProgressReady=function(gd){
  var muts=P.mutations.map(esc),texts=[],traces=[];
  gd.data.forEach(function(tr,k){var idx=decode(tr.customdata);if(idx&&idx.length){traces.push(k);
    texts.push(Array.prototype.map.call(idx,function(i){return P.id[i]+'<br>'+muts[P.mutation[i]];}));}});
  if(traces.length)Plotly.restyle(gd,{text:texts},traces);
  gd.on('plotly_click',function(ev){var p=ev.points&&ev.points[0];if(!p||p.customdata===undefined)return;show(gd,+p.customdata);});
  document.getElementById('progress-figure').setAttribute('data-ready','1');
};
})();
"""


def figure_html(fig: dict[str, Any], div_id: str, pio, post_script: str | None = None) -> str:
    """One figure as a ``<div>`` and the script that draws it (plotly.js is loaded once, in the
    head); ``post_script`` runs once it is drawn (``{plot_id}`` is its div's id)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, validate=False,
                       config=PLOT_CONFIG, default_width="100%", default_height=f"{fig['layout'].get('height', 400)}px",
                       post_script=post_script)


def _table(header: list[str], rows: list[list[tuple[str, str]]], table_id: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{text}</td>' for text, cls in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _lineage_tree(lin: dict[str, Any]) -> str:
    """The lineage as a tree's one branch, from the root (the initial model) down: each
    generation with its mutation and fitness step (improvements green, losses red)."""
    out = []
    if not lin["complete"]:
        out.append(f'<p class="note">The chain stops: ancestor <span class="id">{esc(lin["missing"])}</span> '
                   "has no record (quarantined?).</p>")
    out.append('<ol class="tree" id="best-lineage" start="0">')
    for s in lin["steps"]:
        d = s["delta"]
        cls = "" if d is None else "up" if d > 0 else "down" if d < 0 else ""
        step = "" if d is None else f' <span class="{cls}">({d:+.4f})</span>'
        out.append(f'<li data-id="{esc(s["id"])}" class="{cls}"><b>{esc(s["mutation"])}</b> &rarr; fitness '
                   f'{s["fitness"]:.4f}{step} <span class="id">{esc(s["id"])}</span> <span class="note">'
                   f'+{duration(s["t"])}, {"alive" if s["alive"] else "dead"}</span></li>')
    out.append("</ol>")
    return "".join(out)


def render(data: dict[str, Any], arch: list[dict[str, Any]]) -> str:
    """The whole page for ``data`` (:func:`launch.views.report_data.report_data`) and the drawings
    ``arch`` (:func:`architecture_figures`), as one HTML string with every asset inside."""
    pio, offline = plotly_modules()
    s = data["summary"]
    c = s["config"]
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s["time"]))
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<title>evo report: {esc(s["url"])}</title><style>{CSS}</style>'
             f'<script type="text/javascript">{offline.get_plotlyjs()}</script></head><body>',
             f'<header><h1>evo report: {esc(s["url"])}</h1><p>{esc(c["dataset"])}, P={esc(c["population_size"])}, '
             f'{esc(c["selection"])}, {esc(c["search_space"])}, {esc(c["steps"])} steps/child; read {taken}</p></header>']
    nav = [("progress", "progress"), ("best-lineage-section", "best lineage"), ("top", "top individuals"),
           ("improvements", "mutations that improved"), ("workers", "worker health")]
    if data["retrains"]:
        nav.append(("retrains", "retrain results"))
    if data["strategy"]:
        nav.append(("strategy", "strategy state"))
    parts.append("<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in nav) + "</nav>")
    best = data["best"]
    cards = [("born", s["born"]), ("alive", s["alive"]), ("killed", s["killed"]), ("quarantined", s["quarantined"]),
             ("best fitness", fmt(best["fitness"]) if best else "-"), ("median (alive)", fmt(s["median"])),
             ("individuals/hour", fmt(s["individuals_per_hour"], 1)), ("failed children", s["failures"]),
             ("workers active", s["workers_active"]), ("workers lost", s["workers_lost"])]
    parts.append('<section id="summary" class="cards">' + "".join(
        f"<span>{esc(k)} <b>{esc(v)}</b></span>" for k, v in cards)
        + (f'<p class="note">{s["broken"]} broken store entries were skipped (see evo check).</p>' if s["broken"] else "")
        + "</section>")
    if not data["points"]["id"]:
        parts.append('<section id="progress"><h2>Progress</h2><p>No individual has been published yet.</p></section>')
        parts.append("</body></html>")
        return "".join(parts)

    parts.append(f'<script type="application/json" id="evo-points">{script_json(data["points"])}</script>'
                 f"<script>{PAGE_JS}</script>")
    parts.append('<section id="progress"><h2>Progress</h2>'
                 '<p class="note">Every individual that ever lived. Drag to zoom, double-click to reset; '
                 'hover for id, mutation and fitness; click a point to see its lineage below.</p>'
                 + figure_html(progress_figure(data), "progress-figure", pio,
                               "evoProgressReady(document.getElementById('{plot_id}'));")
                 + '<div id="clicked-lineage"><p class="note">No point clicked yet.</p></div></section>')

    lin = data["lineage"]
    parts.append(f'<section id="best-lineage-section"><h2>Lineage of the best individual '
                 f'({esc(best["id"])}, fitness {best["fitness"]:.4f}, {"alive" if best["alive"] else "dead"}): '
                 f'{lin["generations"]} generation(s)</h2>'
                 + figure_html(lineage_figure(lin), "lineage-figure", pio) + _lineage_tree(lin) + "</section>")

    rows = [[(str(r["rank"]), "num"), (esc(r["id"]), "id"), (fmt(r["fitness"]), "num"),
             (f"{r['params']:,}" if r["params"] is not None else "-", "num"), (duration(r["age"]), "num"),
             ("alive" if r["alive"] else "dead", ""), (esc(r["mutation"]), ""), (esc(r["worker"]), "id")]
            for r in data["top"]]
    pics = "".join(f'<div class="arch">{figure_html(a["figure"], f"arch-figure-{i}", pio)}</div>' if "figure" in a
                   else f'<div class="arch note">{esc(a["id"])}: {esc(a["problem"])}</div>'
                   for i, a in enumerate(arch, 1))
    parts.append('<section id="top"><h2>Top individuals (alive and dead, by fitness)</h2>'
                 + _table(["#", "id", "fitness", "parameters", "age (lived)", "state", "mutation", "worker"], rows,
                          "top-table")
                 + f'<h2>Architectures of the top {data["drawn"]}</h2><div id="architectures">{pics}</div></section>')

    imp = data["improvements"]
    if imp:
        rows = [[(esc(r["mutation"]), ""), (str(r["children"]), "num"), (str(r["improved"]), "num"),
                 (f"{100 * r['rate']:.1f}%" if r["rate"] is not None else "-", "num"),
                 (fmt(r["mean_delta"], 4), "num"), (fmt(r["best_delta"], 4), "num"),
                 (str(r["unknown_parent"]), "num")] for r in imp]
        body = (figure_html(improvements_figure(imp), "improvements-figure", pio)
                + _table(["mutation", "children", "fitter than parent", "rate", "mean change", "best change",
                          "parent unknown"], rows, "improvements-table"))
    else:
        body = '<p class="note">No child of a parent yet.</p>'
    parts.append('<section id="improvements"><h2>Which mutations produced improvements</h2>'
                 '<p class="note">A child improved when its fitness is above its parent\'s.</p>' + body + "</section>")

    h = data["health"]
    over_time, timeline = health_figures(h)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(h["counts"].items())) or "no heartbeats"
    wrows = [[(esc(w["worker"]), "id"), (esc(w["host"]), ""), (esc(w["status"]), ""), (esc(w["state"]), ""),
              (str(w["births"]), "num"), (str(w["failures"]), "num"), (str(w["race_losses"]), "num"),
              (esc(w["job"] or "-"), "")] for w in h["workers"]]
    parts.append(f'<section id="workers"><h2>Worker health over time</h2><p class="note">{len(h["workers"])} '
                 f'workers ({esc(counts)}); {h["failures"]} failed children in all.</p>'
                 + figure_html(over_time, "health-figure", pio)
                 + (figure_html(timeline, "workers-figure", pio) if timeline else "")
                 + _table(["worker", "host", "status", "state", "births", "failed", "races lost", "job"], wrows,
                          "workers-table") + "</section>")

    if data["retrains"]:
        rrows = [[(esc(r["rid"]), "id"), (esc(r["state"]), ""), (esc(r["source"]), "id"),
                  (fmt(r["searched_fitness"]), "num"), (fmt(r["test_accuracy"]), "num"),
                  (esc(r["epochs"] if r["epochs"] is not None else "-"), "num"),
                  (f"{r['parameters']:,}" if isinstance(r["parameters"], int) else "-", "num"),
                  (esc(r["error"] or ""), "")] for r in data["retrains"]]
        parts.append('<section id="retrains"><h2>Retrain results (evo retrain)</h2>'
                     + _table(["retrain", "state", "source", "searched val", "TEST accuracy", "epochs", "parameters",
                               "error"], rrows, "retrains-table") + "</section>")

    st = data["strategy"]
    if st:
        vrows = [[(str(v["version"]), "num"), (str(v["children"]), "num"), (fmt(v["mean"]), "num"),
                  (fmt(v["best"]), "num")] for v in st["per_version"]]
        names = ", ".join(f"{esc(k)} ({n})" for k, n in sorted(st["policies"].items()))
        parts.append(f'<section id="strategy"><h2>Strategy state: learned controller</h2><p class="note">'
                     f'{len(st["order"])} children proposed by {names}; reward = fitness.</p>'
                     + figure_html(strategy_figure(st), "strategy-figure", pio)
                     + _table(["policy version", "children", "mean reward", "best reward"], vrows, "strategy-table")
                     + "</section>")

    parts.append("</body></html>")
    return "".join(parts)

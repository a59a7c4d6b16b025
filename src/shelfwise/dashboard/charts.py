"""Plots as plotly.js figure specs (drawn in the browser) with their numbers as a table.

A :class:`Chart` is what a template shows: a title, the figure (JSON for ``Plotly.newPlot``)
and the same numbers as rows, one click away. Built by hand from plain lists: the Python
plotly package is used only for the plotly.js file it ships.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Values = Sequence[float | None]
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563",
          "#ca8a04", "#db2777", "#65a30d"]


@dataclass
class Chart:
    id: str
    title: str
    figure: dict[str, Any]
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


def day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def _layout(ytitle: str, xtitle: str = "", **extra: Any) -> dict[str, Any]:
    return {"margin": {"l": 56, "r": 16, "t": 12, "b": 44}, "height": 300,
            "legend": {"orientation": "h", "y": -0.2}, "yaxis": {"title": {"text": ytitle},
                                                                  "rangemode": "tozero"},
            "xaxis": {"title": {"text": xtitle}}, "font": {"size": 12},
            "paper_bgcolor": "rgba(0,0,0,0)", **extra}


def lines(chart_id: str, title: str, x: Sequence[Any], series: Mapping[str, Values], *,
          xtitle: str = "", ytitle: str = "", x_label: str = "",
          lower: Mapping[str, Values] | None = None,
          upper: Mapping[str, Values] | None = None, stacked: bool = False) -> Chart:
    """One line per series over a shared x (``stacked``: stacked bars); ``lower``/``upper``
    draw an interval band."""
    data: list[dict[str, Any]] = []
    for k, (name, ys) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        if stacked:
            data.append({"x": list(x), "y": list(ys), "name": name, "type": "bar",
                         "marker": {"color": color}})
            continue
        if lower and upper and name in lower:
            data.append({"x": list(x) + list(x)[::-1],
                         "y": list(upper[name]) + list(lower[name])[::-1],
                         "type": "scatter", "fill": "toself", "line": {"width": 0},
                         "fillcolor": color + "22", "hoverinfo": "skip", "showlegend": False})
        data.append({"x": list(x), "y": list(ys), "name": name, "type": "scatter",
                     "mode": "lines+markers" if len(x) < 40 else "lines",
                     "line": {"color": color}})
    cols = [x_label or xtitle or "x"]
    rows: list[list[Any]] = []
    for j, xv in enumerate(x):
        row: list[Any] = [xv]
        for name, ys in series.items():
            row.append(_num(ys[j]))
            if lower and upper and name in lower:
                row.append(f"[{_num(lower[name][j])}, {_num(upper[name][j])}]")
        rows.append(row)
    for name in series:
        cols.append(name)
        if lower and upper and name in lower:
            cols.append(f"{name} 95%")
    layout = _layout(ytitle, xtitle, barmode="stack") if stacked else _layout(ytitle, xtitle)
    if len(x) < 3:  # a date axis spreads one or two points over milliseconds
        layout["xaxis"]["type"] = "category"
    return Chart(chart_id, title, {"data": data, "layout": layout}, cols, rows)


def bars(chart_id: str, title: str, categories: Sequence[str],
         series: Mapping[str, Values], *, ytitle: str = "",
         x_label: str = "", horizontal: bool = False) -> Chart:
    """Grouped bars: one bar per series for each category."""
    data = []
    for k, (name, ys) in enumerate(series.items()):
        vals = [None if v is None else float(v) for v in ys]
        bar: dict[str, Any] = {"name": name, "type": "bar",
                               "marker": {"color": COLORS[k % len(COLORS)]}}
        bar.update({"y": list(categories), "x": vals, "orientation": "h"} if horizontal
                   else {"x": list(categories), "y": vals})
        data.append(bar)
    layout = _layout(ytitle, barmode="group")
    if horizontal:
        layout.update({"yaxis": {"automargin": True, "autorange": "reversed"},
                       "xaxis": {"title": {"text": ytitle}}})
        layout["height"] = max(300, 28 * len(categories) * max(1, len(series)) // 2 + 80)
    rows = [[c, *[_num(ys[j]) for ys in series.values()]] for j, c in enumerate(categories)]
    return Chart(chart_id, title, {"data": data, "layout": layout},
                 [x_label or "", *series.keys()], rows)


def scatter_lines(chart_id: str, title: str, series: dict[str, tuple[list[float],
                                                                     list[float], list[str]]],
                  *, xtitle: str, ytitle: str, columns: list[str]) -> Chart:
    """Lines through labelled points (an accuracy–diversity curve per method)."""
    data, rows = [], []
    for k, (name, (xs, ys, labels)) in enumerate(series.items()):
        data.append({"x": xs, "y": ys, "text": labels, "name": name, "type": "scatter",
                     "mode": "lines+markers", "line": {"color": COLORS[k % len(COLORS)]},
                     "hovertemplate": "%{text}<br>" + xtitle + " %{x:.4f}<br>" + ytitle
                     + " %{y:.4f}<extra>" + name + "</extra>"})
        rows += [[name, lab, _num(x), _num(y)] for x, y, lab in zip(xs, ys, labels,
                                                                     strict=True)]
    layout = _layout(ytitle, xtitle)
    layout["yaxis"]["rangemode"] = "normal"
    return Chart(chart_id, title, {"data": data, "layout": layout}, columns, rows)


def _num(v: Any) -> Any:
    if v is None:
        return "–"
    if isinstance(v, float):
        return round(v, 4) if abs(v) < 1000 else round(v, 1)
    return v

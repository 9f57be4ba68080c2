"""The report's charts as inline SVG: matplotlib (Agg), greyscale-safe, colour-blind-safe, with alt text.

Colours come from the Okabe–Ito palette; every series also differs by hatching or
marker shape so a greyscale print keeps them apart. Each chart is returned as an
`<svg role="img">` string whose `<title>` and `aria-label` carry the alt text, with
ids prefixed so several charts can share one page. Text stays text
(`svg.fonttype = none`), so a PDF made from the page keeps it searchable.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass
from html import escape
from typing import Sequence

from edgeinfer.errors import require
from edgeinfer.explain.views import _signed

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
}


@dataclass(frozen=True)
class Bar:
    """One driver: its label (the input's name), its signed contribution, and the input's value with unit, drawn
    after the name ("glucose = 162 mg/dL")."""

    label: str
    contribution: float
    value: str = ""


@dataclass(frozen=True)
class Point:
    """One window on the timeline."""

    x: float
    risk: float
    alert: bool = False
    explained: bool = False


def _pyplot():
    matplotlib = require("matplotlib", extra="report", purpose="drawing report charts")
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot", extra="report", purpose="drawing report charts")


_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "edgeinfer-report",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "hatch.linewidth": 0.8,
    "text.parse_math": False,      # labels are user data: "cost ($) = 50 $" is text, not math between two '$'
}


@contextlib.contextmanager
def _drawing(plt):
    """The charts' matplotlib settings, and its warnings kept off stderr where it still draws the chart: a glyph its
    fonts lack (an emoji in a feature's name) and a tight layout it cannot make (a label of 3,000 characters) were
    UserWarnings on the stderr of `edgeinfer report`."""
    with plt.rc_context(_RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        yield


LABEL_CHARS = 50       # a bar's label longer than this is shortened on the chart (the table beside it keeps it)
VALUE_CHARS = 30       # ... its value kept whole up to this ("162 mg/dL"), its name cut to make room


def bar_label(bar: Bar) -> str:
    """A bar's label as the chart draws it, "name = value": up to LABEL_CHARS characters, a longer name cut at its
    end with an ellipsis and the value kept whole (a value over VALUE_CHARS, a long category name, is cut too). A
    3,000-character input name drew the chart far off the page; a cut within the value could misread it ("r…5
    mg/mmol" for 3.25 mg/mmol)."""
    name, value = bar.label, bar.value
    if len(name) + len(value) + 3 * bool(value) <= LABEL_CHARS:
        return f"{name} = {value}" if value else name
    value = value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS - 1].rstrip() + "…"
    room = LABEL_CHARS - (len(value) + 3 if value else 0)
    name = name if len(name) <= room else name[:room - 1].rstrip() + "…"
    return f"{name} = {value}" if value else name


def drivers_chart(bars: Sequence[Bar], *, quantity: str, unit_note: str, alt: str, key: str) -> str:
    """Horizontal bars: contributions to `quantity`; raising (orange, hatched /) vs lowering (blue, hatched \\):
    told apart without colour. (Dots, "...", made each chart's SVG 10x larger: 160 kB.)"""
    plt = _pyplot()
    with _drawing(plt):
        return _to_svg(_drivers_figure(plt, bars, quantity=quantity, unit_note=unit_note), alt=alt, key=key)


def _drivers_figure(plt, bars: Sequence[Bar], *, quantity: str, unit_note: str):
    """The drivers chart's figure (`drivers_chart`), each label shortened by `bar_label`."""
    height = 0.9 + 0.42 * max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(6.8, height))
    labels = [bar_label(b) for b in bars][::-1]
    values = [b.contribution for b in bars][::-1]
    colours = [OKABE_ITO["vermillion"] if v > 0 else OKABE_ITO["blue"] for v in values]
    hatches = ["///" if v > 0 else "\\\\\\" for v in values]
    rects = ax.barh(range(len(values)), values, color=colours, edgecolor="black", linewidth=0.6)
    for rect, hatch in zip(rects, hatches):
        rect.set_hatch(hatch)
    ax.set_yticks(range(len(values)), labels)
    ax.axvline(0, color="black", linewidth=0.8)
    span = max([abs(v) for v in values] + [1e-9])
    ax.set_xlim(-span * 1.35, span * 1.35)
    for i, v in enumerate(values):
        ax.text(v + (span * 0.03 if v >= 0 else -span * 0.03), i, _signed(v, 3), va="center",
                ha="left" if v >= 0 else "right", fontsize=8)
    ax.set_xlabel(f"change in {quantity} ({unit_note})")
    from matplotlib.patches import Patch

    ax.legend(handles=[
        Patch(facecolor=OKABE_ITO["vermillion"], edgecolor="black", hatch="///", label="raises it"),
        Patch(facecolor=OKABE_ITO["blue"], edgecolor="black", hatch="\\\\\\", label="lowers it"),
    ], loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


MARKED_WINDOWS = 200      # up to this many windows, each is a dot on the line; beyond, the line alone
LINE_BINS = 1000          # beyond twice this many windows, the line runs through each bin's lowest and highest


def _line(points: Sequence[Point], *, bins: int = LINE_BINS) -> list[Point]:
    """The points the risk line is drawn through: all of them, or for a long session, in each of `bins` runs of
    consecutive windows the lowest and the highest (in window order), so that every peak and trough is drawn, at
    a size that does not grow with the session (the chart is too narrow to show more)."""
    if len(points) <= 2 * bins:
        return list(points)
    kept = []
    for b in range(bins):
        run = points[b * len(points) // bins:(b + 1) * len(points) // bins]
        low = min(range(len(run)), key=lambda i: run[i].risk)
        high = max(range(len(run)), key=lambda i: run[i].risk)
        kept += [run[i] for i in sorted({low, high})]
    return kept


def timeline_chart(points: Sequence[Point], *, quantity: str, threshold: float | None, xlabel: str,
                   alt: str, key: str, breaks: Sequence[float] = ()) -> str:
    """Risk per window as a line; alerts as vermillion triangles, explained windows as open black circles; at each
    x in `breaks` (a gap in the rows: the windows restarted) the line stops and a grey dotted line stands.

    A long session (over MARKED_WINDOWS windows) has no dot per window, and past 2 * LINE_BINS its line runs
    through each bin's extremes (see `_line`): the chart's size stays bounded; alerts are all marked."""
    plt = _pyplot()
    with _drawing(plt):
        fig, ax = plt.subplots(figsize=(6.8, 2.8))
        # a NaN point at each break: matplotlib leaves the line open there
        line = sorted([*_line(points), *(Point(x, float("nan")) for x in breaks)], key=lambda p: p.x)
        xs = [p.x for p in line]
        ys = [p.risk for p in line]
        dots = {"marker": ".", "markersize": 4} if len(points) <= MARKED_WINDOWS else {"linewidth": 1.0}
        ax.plot(xs, ys, **{"color": OKABE_ITO["blue"], "linewidth": 1.4, **dots}, label=quantity)
        if breaks:
            ax.vlines(list(breaks), 0.0, 1.0, colors="#999999", linestyles=":", linewidth=1.0,
                      label="gap in the rows (windows restarted)")
        if threshold is not None:
            ax.axhline(threshold, color="black", linestyle="--", linewidth=0.9, label=f"decision threshold {threshold:g}")
        alerts = [p for p in points if p.alert]
        if alerts:
            ax.scatter([p.x for p in alerts], [p.risk for p in alerts], marker="^", s=60, zorder=3,
                       color=OKABE_ITO["vermillion"], edgecolor="black", linewidths=0.6, label="alert")
        explained = [p for p in points if p.explained]
        if explained:
            ax.scatter([p.x for p in explained], [p.risk for p in explained], marker="o", s=90, zorder=4,
                       facecolors="none", edgecolors="black", linewidths=1.2, label="explained window")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{quantity}\n(probability, 0–1)")
        ax.set_xlabel(xlabel)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=4, fontsize=8, frameon=False)
        fig.tight_layout()
        return _to_svg(fig, alt=alt, key=key)


_TAG = re.compile(r"<[^>]*>")
_ID = re.compile(r'\bid="([^"]+)"')
_REFERENCE = re.compile(r'(\bid="|url\(#|"#)([^"()]+)(?=[")])')     # an id, and the two ways SVG refers to one


def _to_svg(fig, *, alt: str, key: str) -> str:
    plt = _pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE: the SVG lives inside HTML
    # each id made the chart's own (a page holds several charts), inside tags only: a label's text such as
    # 'dose id="patch_1"' read 'dose id="k-patch_1"'
    ids = {name for tag in _TAG.findall(svg) for name in _ID.findall(tag)}

    def scoped(tag: re.Match) -> str:
        return _REFERENCE.sub(lambda m: m[1] + (f"{key}-{m[2]}" if m[2] in ids else m[2]), tag[0])

    svg = _TAG.sub(scoped, svg)
    title_id = f"{key}-title"
    svg = svg.replace(
        "<svg ",
        f'<svg role="img" aria-labelledby="{title_id}" aria-label="{escape(alt, quote=True)}" class="chart" ',
        1,
    )
    head_end = svg.index(">", svg.index("<svg")) + 1
    svg = svg[:head_end] + f'<title id="{title_id}">{escape(alt)}</title>' + svg[head_end:]
    # Fixed pixel sizes from matplotlib become scalable: the CSS sets the width, the viewBox keeps the shape.
    svg = re.sub(r'(<svg[^>]*?) width="[^"]+" height="[^"]+"', r"\1", svg, count=1)
    return svg

"""One look for every figure of a study, and the check that a figure is laid out cleanly.

* :func:`strategy_styles`: one colour and one marker per strategy, assigned in the study's order
  (the order of its tables and config), so a strategy looks the same in every figure whatever
  subset of strategies a figure shows: the first ten take tab10's distinct colours (a study lists
  its own strategies before its sweeps' grid points), any beyond them husl's. Artists drawn for a strategy carry the gid
  ``strategy:<name>`` (:func:`tag`), so tests read colours from the matplotlib objects.
* :data:`INFERENCE`: the two inference settings (without and with the inner loop) told apart by
  marker fill, never by colour.
* :func:`save`: the PNG the HTML report embeds and every other format of ``report.format``
  (``pdf``, ``svg``) next to it, after :func:`layout_problems` found nothing (or logged what it found).
* :func:`layout_problems`: axes whose drawn extents (labels and ticks included) overlap, texts that
  overlap each other, blank bands between neighbouring panels, legends drawn over data points, data
  points outside their axes and error bars that run off them (a figure cuts a value beyond its axis
  at the edge and marks it there).
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from ..plan.config import report_formats  # noqa: E402
from ..analysis.statistics import t_interval  # noqa: E402

log = logging.getLogger(__name__)
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h")
TAG = "strategy:"


@dataclass(frozen=True)
class Look:
    """How one strategy is drawn."""

    color: tuple[float, float, float]
    marker: str


#: inference without / with the inner loop: open / filled markers (colour stays the strategy's)
INFERENCE = {False: {"mfc": "white", "mew": 1.6}, True: {}}


def apply_theme(options: Mapping[str, Any]) -> None:
    """The seaborn theme of ``report.style`` and ``report.context``."""
    sns.set_theme(style=options.get("style", "whitegrid"), context=options.get("context", "notebook"))


def order(options: Mapping[str, Any], present: Iterable[str] = ()) -> list[str]:
    """The study's strategies in its order (``options["strategies"]``), then any other name in
    ``present`` in order of appearance."""
    return list(dict.fromkeys([*options.get("strategies", []), *present]))


def strategy_styles(options: Mapping[str, Any], present: Iterable[str] = ()) -> dict[str, Look]:
    """Colour and marker of every strategy (see the module docstring)."""
    names = order(options, present)
    colors = sns.color_palette("tab10", 10)[:len(names)] + sns.color_palette("husl", max(len(names) - 10, 0))
    return {n: Look(tuple(c), MARKERS[i % len(MARKERS)]) for i, (n, c) in enumerate(zip(names, colors))}


def tag(artists: Any, strategy: str) -> None:
    """Mark ``artists`` (one or a container of them) as drawn for ``strategy``."""
    items = artists if isinstance(artists, (list, tuple)) else [artists]
    for artist in items:
        if isinstance(artist, (list, tuple)):
            tag(artist, strategy)
        elif artist is not None and hasattr(artist, "set_gid"):
            artist.set_gid(TAG + strategy)


def figure_paths(path: str | Path, options: Mapping[str, Any]) -> list[Path]:
    """The files a figure is written to: ``path`` (PNG) and one per other format of ``report.format``."""
    path = Path(path)
    return [path.with_suffix(f".{ext}") for ext in report_formats(options.get("format", "png"))]


def plain_log_ticks(ax: plt.Axes, axis: str = "y") -> None:
    """Plain numbers on a log axis: a few labelled ticks, no crowded minor labels."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def strategy_handles(looks: Mapping[str, Look], present: Iterable[str]) -> list[Line2D]:
    """Legend entries for the strategies in ``present``, in the study's order."""
    shown = set(present)
    return [Line2D([], [], color=look.color, marker=look.marker, lw=2, label=name)
            for name, look in looks.items() if name in shown]


def mean_ci_by(d: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per value of ``x``: the mean of ``y`` over seeds and its Student-t 95% CI (``lo``, ``hi``)."""
    rows = []
    for value, g in d.groupby(x, sort=True):
        values = g[y].dropna().tolist()
        if values:
            lo, hi = t_interval(values)
            rows.append({x: value, "mean": float(np.mean(values)), "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=[x, "mean", "lo", "hi"])


def panel_grid(n: int, columns: int, width: float, height: float) -> tuple[plt.Figure, list[plt.Axes], list[plt.Axes]]:
    """``n`` panels in rows of at most ``columns`` (constrained layout): (figure, panels, spare slots)."""
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n], flat[n:]


def place_legend(fig: plt.Figure, spare: list[plt.Axes], handles: list[Any], **kwargs: Any) -> None:
    """The legend in the first spare slot of the grid if there is one, else beside the panels."""
    if not handles:
        return
    if spare:
        spare[0].legend(handles=handles, loc="center", fontsize=9, frameon=False, **kwargs)
    else:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, **kwargs)


def nothing_to_plot(frame: Any, columns: Iterable[str], path: str | Path, options: Mapping[str, Any],
                    what: str) -> bool:
    """Write a figure that says why it is empty (e.g. every run diverged) and return True, if ``frame``
    has no rows or lacks ``columns``; the workflow then still completes and the report explains."""
    if len(frame) and set(columns) <= set(frame.columns) and frame[list(columns)].notna().any().all():
        return False
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: nothing to plot\n(see report.md for run status)", ha="center", va="center",
            fontsize=12)
    save(fig, path, options)
    return True


# --------------------------------------------------------------------------- layout
def _boxes(fig: plt.Figure) -> list[tuple[plt.Axes, Bbox]]:
    renderer = fig.canvas.get_renderer()
    # the panel with its ticks, labels and title; data artists are clipped to the panel and left out
    return [(ax, ax.get_tightbbox(renderer, bbox_extra_artists=[])) for ax in fig.axes
            if ax.get_visible() and ax.has_data()]


def _parts(ax: plt.Axes, renderer: Any) -> list[Bbox]:
    """What a panel draws besides its data: its area, tick labels, axis labels and titles."""
    area = ax.get_window_extent(renderer)
    texts = [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title]  # noqa: SLF001
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    # tick labels that are drawn: those of ticks inside the view (matplotlib keeps a few outside it)
    for labels, inside in ((ax.get_xticklabels(), lambda b: area.x0 - 1 <= (b.x0 + b.x1) / 2 <= area.x1 + 1),
                           (ax.get_yticklabels(), lambda b: area.y0 - 1 <= (b.y0 + b.y1) / 2 <= area.y1 + 1)):
        boxes += [b for t in labels if t.get_visible() and t.get_text()
                  and inside(b := t.get_window_extent(renderer))]
    return [area, *boxes]


def _overlap(a: Bbox, b: Bbox, slack: float) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


def _legend_over_data(ax: plt.Axes, legend: Any, renderer: Any) -> bool:
    box = legend.get_window_extent(renderer)
    points = [line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
              for line in ax.get_lines() if line.get_visible() and len(line.get_xdata())]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
               if c.get_visible() and len(c.get_offsets())]
    if not points:
        return False
    xy = np.concatenate([p for p in points if p.size])
    xy = xy[np.isfinite(xy).all(axis=1)]
    inside = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
    return bool(inside.any())


def _texts(fig: plt.Figure, renderer: Any) -> list[tuple[str, Bbox]]:
    """(text, extent) of every text a panel draws over its data (labels, annotations) and of the
    figure's own texts."""
    artists = [t for ax in fig.axes if ax.get_visible() for t in ax.texts]
    artists += list(fig.texts)
    return [(t.get_text(), t.get_window_extent(renderer)) for t in artists if t.get_visible() and t.get_text().strip()]


def _marked(line: Line2D) -> bool:
    return line.get_marker() not in (None, "None", "", " ", "none")


def _outside(ax: plt.Axes, renderer: Any, slack: float) -> tuple[int, int]:
    """(data points drawn outside ``ax``, error-bar ends beyond it): points are the markers of its
    lines and the offsets of its scatters; error bars are its line collections' segments."""
    area = ax.get_window_extent(renderer)

    def beyond(xy: np.ndarray) -> int:
        xy = xy[np.isfinite(xy).all(axis=1)]
        return int(((xy[:, 0] < area.x0 - slack) | (xy[:, 0] > area.x1 + slack)
                    | (xy[:, 1] < area.y0 - slack) | (xy[:, 1] > area.y1 + slack)).sum())

    points = [line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
              for line in ax.get_lines() if line.get_visible() and _marked(line) and len(line.get_xdata())]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
               if isinstance(c, PathCollection) and c.get_visible() and len(c.get_offsets())]
    ends = [c.get_transform().transform(np.asarray(seg, dtype=float)) for c in ax.collections
            if isinstance(c, LineCollection) and c.get_visible() for seg in c.get_segments() if len(seg)]
    return (sum(beyond(p) for p in points if p.size), sum(beyond(e) for e in ends))


def layout_problems(fig: plt.Figure, band: float = 0.15, slack: float = 2.0) -> list[str]:
    """What is wrong with ``fig``'s layout at its size and dpi (empty when nothing is):

    * two panels whose areas, tick labels, axis labels or titles overlap each other by more than
      ``slack`` pixels;
    * two texts drawn over the panels (labels, annotations, the figure's own texts) that overlap;
    * a blank band wider than ``band`` of the figure's width between horizontal neighbours;
    * a legend inside an axes that covers one of its data points;
    * a data point (a marker, a scatter point) outside its axes, or an error bar that runs off them:
      a value beyond the axis belongs at the edge, marked there, not stretched or cut silently.
    """
    if not hasattr(fig.canvas, "get_renderer"):  # a closed figure: give it a canvas again
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = _boxes(fig)
    problems = []
    parts = {id(ax): _parts(ax, renderer) for ax, _ in boxes}
    for (a, _), (b, _) in itertools.combinations(boxes, 2):
        if any(_overlap(p, q, slack) for p in parts[id(a)] for q in parts[id(b)]):
            problems.append(f"panels {a.get_label() or a.get_title()!r} and {b.get_label() or b.get_title()!r} overlap")
    # figure-level texts and legends (suptitle, legends beside the panels) against the panels and each other
    extras = [a.get_window_extent(renderer) for a in [fig._suptitle, *fig.legends]  # noqa: SLF001
              if a is not None and a.get_visible()]
    if any(_overlap(e, p, slack) for e in extras for ps in parts.values() for p in ps) or any(
            _overlap(e, f, slack) for e, f in itertools.combinations(extras, 2)):
        problems.append("the figure's title or legend overlaps a panel or each other")
    width = fig.bbox.width
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        same_row = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 0.5 * min(box_a.height, box_b.height)
        left, right = sorted((box_a, box_b), key=lambda bx: bx.x0)
        between = [bx for _, bx in boxes if bx.x0 >= left.x1 - slack and bx.x1 <= right.x0 + slack]
        if same_row and not between and right.x0 - left.x1 > band * width:
            problems.append(f"a blank band of {(right.x0 - left.x1) / width:.0%} of the width between panels")
    for ax, _ in boxes:
        legend = ax.get_legend()
        if legend is not None and legend.get_visible() and _legend_over_data(ax, legend, renderer):
            problems.append(f"the legend of panel {ax.get_title()!r} covers data")
    for (a, box_a), (b, box_b) in itertools.combinations(_texts(fig, renderer), 2):
        if _overlap(box_a, box_b, slack):
            problems.append(f"the texts {a!r} and {b!r} overlap")
    for ax, _ in boxes:
        points, ends = _outside(ax, renderer, slack)
        if points:
            problems.append(f"panel {ax.get_title() or ax.get_label()!r}: {points} data point(s) outside the axes")
        if ends:
            problems.append(f"panel {ax.get_title() or ax.get_label()!r}: {ends} error-bar end(s) run off the axes "
                            "unmarked")
    return problems


def save(fig: plt.Figure, path: str | Path, options: Mapping[str, Any]) -> plt.Figure:
    """Write ``fig`` to every configured format (:func:`figure_paths`), log any layout problem,
    close it and return it (tests inspect the closed figure's artists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for problem in layout_problems(fig):
        log.warning("%s: %s", path.name, problem)
    for target in figure_paths(path, options):
        fig.savefig(target, dpi=options.get("dpi", 150), bbox_inches="tight")
    plt.close(fig)
    return fig

"""PNG plots of builds and sweeps (matplotlib, the ``explore`` extra): area breakdowns, utilization per layer,
accuracy against cycles or area with the Pareto front. Small figures (about 640 x 400 pixels at 100 dpi)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .area_model import PARTS

__all__ = ["available", "area_breakdown", "utilization", "tradeoff", "pareto_front", "MISSING"]

#: What a report says where a plot could not be drawn.
MISSING = "matplotlib is not installed (pip install -e '.[explore]')"

_LABELS = {"pe_array": "PEs", "buffers": "buffers (SRAM)", "control": "control", "postprocess": "post-processing"}
_COLOURS = {"pe_array": "#4c72b0", "buffers": "#dd8452", "control": "#55a868", "postprocess": "#c44e52"}


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def area_breakdown(bars: Sequence[tuple[str, dict]], path: Path, title: str) -> Path:
    """Stacked bars of the analytic area estimate: one bar per (label, parts) with :data:`PARTS` stacked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(bars) + 2.5), 4.0))
    bottom = [0.0] * len(bars)
    x = range(len(bars))
    for part in PARTS:
        heights = [parts[part] / 1e3 for _, parts in bars]
        ax.bar(x, heights, bottom=bottom, label=_LABELS[part], color=_COLOURS[part])
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(list(x), [label for label, _ in bars], rotation=30 if len(bars) > 4 else 0, ha="right"
                  if len(bars) > 4 else "center", fontsize=8)
    ax.set_ylabel("thousand NAND2 equivalents (estimate)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def utilization(layers: Sequence[dict], path: Path, title: str) -> Path:
    """Bars of MAC utilization per layer (``name``, ``utilization`` in 0..1, ``cycles``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(layers) + 2.5), 3.6))
    names = [layer["name"].strip("/").replace("/", " ")[:18] for layer in layers]
    values = [100 * layer["utilization"] for layer in layers]
    bars = ax.bar(range(len(layers)), values, color="#4c72b0")
    for bar, layer in zip(bars, layers):
        ax.annotate(f"{layer['cycles']} cyc", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(layers)), names, rotation=30 if len(layers) > 4 else 0, fontsize=8)
    ax.set_ylabel("MAC utilization %")
    ax.set_ylim(0, max(values + [1.0]) * 1.2)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal x (cost) and higher or equal y (accuracy), one
    of them strictly. Sorted by x."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((ox <= x and oy >= y) and (ox < x or oy > y) for ox, oy in points):
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def tradeoff(points: Sequence[dict], x_key: str, x_label: str, path: Path, title: str) -> Path:
    """Accuracy (%) against ``x_key`` of each point (``label``, ``accuracy``, ``x_key``), one marker per format,
    the Pareto front (less of x, more accuracy) drawn as a line with its points ringed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    formats = sorted({p["format"] for p in points})
    markers = "osD^v<>p*h"
    for k, fmt in enumerate(formats):
        mine = [p for p in points if p["format"] == fmt]
        ax.scatter([p[x_key] for p in mine], [100 * p["accuracy"] for p in mine], marker=markers[k % len(markers)],
                   label=fmt, s=36, zorder=3)
    xy = [(p[x_key], p["accuracy"]) for p in points]
    front = pareto_front(xy)
    ax.plot([xy[i][0] for i in front], [100 * xy[i][1] for i in front], color="black", lw=1, ls="--",
            zorder=2, label="Pareto front")
    ax.scatter([xy[i][0] for i in front], [100 * xy[i][1] for i in front], s=140, facecolors="none",
               edgecolors="black", zorder=4)
    for p in points:
        ax.annotate(p["shape"], (p[x_key], 100 * p["accuracy"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    xs = [p[x_key] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("accuracy %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)

"""The study's figures (matplotlib ``Figure`` objects drawn without pyplot: no display, no global backend change).

* :func:`plot_relative_accuracy`: the survey's Fig. 4 (Zhang et al., TPAMI 2023): one marker per method at (top-1
  accuracy, relative accuracy), the softmax baseline as a grey circle, class re-balancing as squares, information
  augmentation as triangles, module improvement as diamonds.
* :func:`plot_per_class`: per-class test accuracy of every method over the classes sorted by training count (head
  to tail), where a method moves accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

#: marker and colour of each family: (marker, colour, legend label)
FAMILY_STYLE: dict[str, tuple[str, str, str]] = {
    "baseline": ("o", "tab:gray", "softmax baseline"),
    "re-balancing": ("s", "tab:blue", "class re-balancing"),
    "augmentation": ("^", "tab:green", "information augmentation"),
    "module": ("D", "tab:red", "module improvement"),
}


def _style(family: str) -> tuple[str, str, str]:
    if family not in FAMILY_STYLE:
        raise ValueError(f"family must be one of {tuple(FAMILY_STYLE)}, got {family!r}")
    return FAMILY_STYLE[family]


def plot_relative_accuracy(points: Sequence[Mapping[str, object]], path: str | Path | None = None) -> Figure:
    """Fig. 4: accuracy (x, %) against relative accuracy (y, %), one marker per method, annotated with its name.

    Args:
        points: ``{"name", "family", "acc", "ra"}`` per method (accuracies in ``[0, 1]``).
        path: PNG to write (``None``: only return the figure).

    Returns:
        The figure; each method is one scatter collection whose ``gid`` is its name.
    """
    fig = Figure(figsize=(7.0, 5.0), dpi=120)
    ax = fig.subplots()
    for point in points:
        marker, colour, _ = _style(str(point["family"]))
        x, y = 100.0 * float(point["acc"]), 100.0 * float(point["ra"])  # type: ignore[arg-type]
        ax.scatter(
            [x],
            [y],
            marker=marker,
            s=70,
            color=colour,
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
            gid=str(point["name"]),
        )
        ax.annotate(str(point["name"]), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    used = dict.fromkeys(str(p["family"]) for p in points)
    handles = [
        Line2D(
            [],
            [],
            marker=FAMILY_STYLE[f][0],
            color=FAMILY_STYLE[f][1],
            markeredgecolor="black",
            linestyle="",
            label=FAMILY_STYLE[f][2],
        )
        for f in FAMILY_STYLE
        if f in used
    ]
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xlabel("top-1 accuracy on the balanced test set (%)")
    ax.set_ylabel("relative accuracy RA = A_t / max(A_v, A_b) (%)")
    ax.set_title("Accuracy vs relative accuracy")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_per_class(
    curves: Mapping[str, tuple[str, Sequence[float | None]]],
    train_counts: Sequence[int],
    class_names: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Per-class accuracy (%) of every method over the classes sorted by training count, head class first.

    Args:
        curves: ``{method: (family, per-class accuracy in class-index order)}`` (``None``: no test image).
        train_counts: training images per class of the long-tailed set (the order of the x axis).
        class_names: class names for the x ticks (shown up to 40 classes).
        path: PNG to write (``None``: only return the figure).

    Raises:
        ValueError: a curve's length differs from ``train_counts``.
    """
    order = sorted(range(len(train_counts)), key=lambda c: (-train_counts[c], c))
    fig = Figure(figsize=(max(7.0, 0.25 * len(order)), 6.0), dpi=120)
    ax, counts_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    positions = list(range(len(order)))
    for name, (family, accs) in curves.items():
        if len(accs) != len(train_counts):
            raise ValueError(f"method {name!r} has {len(accs)} per-class accuracies for {len(train_counts)} classes")
        marker, colour, _ = _style(family)
        ys = [float("nan") if accs[c] is None else 100.0 * float(accs[c]) for c in order]  # type: ignore[arg-type]
        width = 2.2 if family == "baseline" else 1.0
        ax.plot(
            positions,
            ys,
            marker=marker,
            markersize=3,
            linewidth=width,
            alpha=0.85,
            label=name,
            color=colour if family == "baseline" else None,
        )
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Per-class accuracy, classes sorted by training count (head to tail)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=max(1, len(curves) // 12), loc="lower left")
    counts_ax.bar(positions, [train_counts[c] for c in order], color="tab:gray")
    counts_ax.set_ylabel("training images")
    if class_names is not None and len(order) <= 40:
        counts_ax.set_xticks(positions, [str(class_names[c]) for c in order], rotation=90, fontsize=7)
    else:
        counts_ax.set_xlabel("class rank by training count")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


__all__ = ["FAMILY_STYLE", "plot_per_class", "plot_relative_accuracy"]

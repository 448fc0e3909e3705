"""End-of-test report: a many/medium/few-shot table, a per-class accuracy plot and a JSON of the numbers.

Long-tailed papers (Kang et al., ICLR 2020; Zhang et al., "Deep Long-Tailed Learning: A Survey", TPAMI 2023,
Sec. 5) report top-1 accuracy on a balanced test set next to its split by the number of *training* images ``n_c``
of each class: many-shot ``n_c > many_threshold`` (100), few-shot ``n_c < few_threshold`` (20), medium-shot the
rest. The per-class curve ``a_c`` against ``n_c`` shows where a method moves accuracy (head vs tail).

The callback only formats results that the module already computed: ``pl_module.last_test_results`` (the dict of
:meth:`lt_lightning.metrics.LongTailAccuracy.compute`, summed over processes, so identical on every rank) and
``pl_module.class_counts``. It computes nothing that could differ from the logged ``test/*`` values.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from rich import get_console
from rich.table import Table
from torch import Tensor

from lt_lightning.metrics.calibration import CALIBRATION_SCALAR_KEYS
from lt_lightning.metrics.long_tail_accuracy import (
    DEFAULT_FEW_THRESHOLD,
    DEFAULT_MANY_THRESHOLD,
    SCALAR_KEYS,
    shot_group_masks,
)

__all__ = [
    "CALIBRATION_KEYS",
    "GROUPS",
    "REQUIRED_KEYS",
    "TestReport",
    "build_report",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "plot_reliability",
    "report_table",
]

GROUPS: tuple[str, ...] = ("many", "medium", "few")
"""Shot groups, head to tail."""

REQUIRED_KEYS: tuple[str, ...] = (*SCALAR_KEYS, "per_class", "correct", "total")
"""Keys the report reads from ``pl_module.last_test_results``."""

CALIBRATION_KEYS: tuple[str, ...] = (
    *CALIBRATION_SCALAR_KEYS,
    "reliability_acc",
    "reliability_conf",
    "reliability_count",
    "confusion_matrix",
)
"""Keys of :meth:`lt_lightning.metrics.CalibrationMetric.compute` the report reads when all are present (optional:
without them the report has no ``calibration`` / ``confusion_matrix`` and no reliability / confusion PNGs)."""

RELIABILITY_FILE = "reliability.png"
CONFUSION_FILE = "confusion_matrix.png"
CONFUSION_TEXT_MAX_CLASSES = 20
"""Above this many classes the confusion-matrix PNG has no per-cell numbers (readable for 100 classes)."""

_GROUP_COLORS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:green", None: "tab:gray"}


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined accuracy (no test image in the group) is written as ``null``."""
    return None if math.isnan(value) else float(value)


def _format_percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.2f}"


def build_report(
    results: Mapping[str, Tensor],
    class_counts: Sequence[float] | Tensor | None,
    many_threshold: int = DEFAULT_MANY_THRESHOLD,
    few_threshold: int = DEFAULT_FEW_THRESHOLD,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Collect the test results into a JSON-serialisable dict (NaN written as ``None``).

    Args:
        results: output of :meth:`LongTailAccuracy.compute` (:data:`REQUIRED_KEYS`).
        class_counts: ``[C]`` training images per class, or ``None`` when unknown (no shot groups then).
        many_threshold: classes with more training images are many-shot.
        few_threshold: classes with fewer training images are few-shot.
        class_names: ``C`` class names (default ``"0" .. "C-1"``).

    Returns:
        ``{"scalars", "thresholds", "groups", "classes"}``: ``scalars`` holds the :data:`SCALAR_KEYS` values;
        ``groups[g]`` the accuracy, number of classes (all / with test images), test images and correct ones of
        group ``g``; ``classes`` per-class columns in class-index order (``index``, ``name``, ``train_count``,
        ``group``, ``test_correct``, ``test_total``, ``acc``) and ``order_by_train_count`` (class indices sorted
        by training count, descending, ties by index).

    Raises:
        ValueError: a required key is missing, or the lengths of ``per_class``, ``correct``, ``total``,
            ``class_counts`` and ``class_names`` disagree.
    """
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise ValueError(f"results lacks the keys {missing}; expected those of LongTailAccuracy.compute()")
    per_class = results["per_class"].detach().cpu().double().numpy()
    correct = results["correct"].detach().cpu().long().numpy()
    total = results["total"].detach().cpu().long().numpy()
    num_classes = per_class.shape[0]
    if per_class.ndim != 1 or correct.shape != (num_classes,) or total.shape != (num_classes,):
        raise ValueError(
            f"results['per_class'], ['correct'] and ['total'] must be [C] tensors of one length, got shapes "
            f"{per_class.shape}, {correct.shape}, {total.shape}"
        )
    counts: np.ndarray | None = None
    if class_counts is not None:
        counts = torch.as_tensor(class_counts).detach().cpu().double().flatten().numpy()
        if counts.shape != (num_classes,):
            raise ValueError(f"class_counts has {counts.shape[0]} entries but the results have {num_classes} classes")
    names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries but the results have {num_classes} classes")

    tested = total > 0
    group_of: list[str | None] = [None] * num_classes
    groups: dict[str, dict[str, Any]] = {}
    if counts is not None:
        masks = shot_group_masks(torch.from_numpy(counts), many_threshold, few_threshold)
        for name in GROUPS:
            mask = getattr(masks, name).numpy()
            for c in np.flatnonzero(mask):
                group_of[int(c)] = name
            groups[name] = {
                "acc": _finite_or_none(float(results[f"acc_{name}"])),
                "num_classes": int(mask.sum()),
                "num_classes_tested": int((mask & tested).sum()),
                "test_images": int(total[mask].sum()),
                "test_correct": int(correct[mask].sum()),
            }
        order = np.argsort(-counts, kind="stable")
    else:
        order = np.arange(num_classes)

    return {
        "scalars": {k: _finite_or_none(float(results[k])) for k in SCALAR_KEYS},
        "thresholds": {"many": int(many_threshold), "few": int(few_threshold)},
        "num_classes": int(num_classes),
        "num_classes_tested": int(tested.sum()),
        "test_images": int(total.sum()),
        "test_correct": int(correct.sum()),
        "groups": groups,
        "classes": {
            "index": list(range(num_classes)),
            "name": names,
            "train_count": None if counts is None else [int(round(n)) for n in counts],
            "group": group_of,
            "test_correct": correct.tolist(),
            "test_total": total.tolist(),
            "acc": [_finite_or_none(float(a)) for a in per_class],
        },
        "order_by_train_count": [int(c) for c in order],
        **_calibration_report(results, num_classes),
    }


def _calibration_report(results: Mapping[str, Tensor], num_classes: int) -> dict[str, Any]:
    """``calibration`` (ECE, NLL, per group, reliability curve) and ``confusion_matrix`` (``[C][C]`` counts, row =
    true class, column = prediction, class-index order) when ``results`` has all :data:`CALIBRATION_KEYS`."""
    if not all(k in results for k in CALIBRATION_KEYS):
        return {}
    confusion = results["confusion_matrix"].detach().cpu().long()
    if confusion.shape != (num_classes, num_classes):
        raise ValueError(f"results['confusion_matrix'] must be [{num_classes}, {num_classes}], got {confusion.shape}")
    count = results["reliability_count"].detach().cpu().long()
    num_bins = int(count.numel())

    def floats(key: str) -> list[float | None]:
        return [_finite_or_none(float(v)) for v in results[key].detach().cpu().double().flatten()]

    return {
        "calibration": {
            "ece": _finite_or_none(float(results["ece"])),
            "nll": _finite_or_none(float(results["nll"])),
            "groups": {
                g: {
                    "ece": _finite_or_none(float(results[f"ece_{g}"])),
                    "nll": _finite_or_none(float(results[f"nll_{g}"])),
                }
                for g in GROUPS
            },
            "reliability": {
                "bin_edges": [b / num_bins for b in range(num_bins + 1)],
                "accuracy": floats("reliability_acc"),
                "confidence": floats("reliability_conf"),
                "count": count.tolist(),
            },
        },
        "confusion_matrix": confusion.tolist(),
    }


def report_table(report: Mapping[str, Any]) -> Table:
    """A rich table of a :func:`build_report` dict: overall top-1, class-balanced and the three shot groups.

    Columns: accuracy in %, classes in the row's group (``k/n`` when only ``k`` of them have test images; group
    means average over those ``k``), and test images. ``–`` marks an undefined accuracy (no test image).
    """
    thresholds = report["thresholds"]
    many, few = thresholds["many"], thresholds["few"]
    table = Table(
        title="Test accuracy (long-tailed)",
        caption=f"by training images n: many n > {many}, few n < {few}",
    )
    table.add_column("split")
    table.add_column("accuracy (%)", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("test images", justify="right")

    def classes_cell(tested: int, all_: int) -> str:
        return str(all_) if tested == all_ else f"{tested}/{all_}"

    all_classes = classes_cell(report["num_classes_tested"], report["num_classes"])
    scalars = report["scalars"]
    table.add_row("overall top-1", _format_percent(scalars["acc"]), all_classes, str(report["test_images"]))
    table.add_row("class-balanced", _format_percent(scalars["acc_balanced"]), all_classes, str(report["test_images"]))
    groups = report["groups"]
    for name in GROUPS:
        if name in groups:
            g = groups[name]
            cells = (classes_cell(g["num_classes_tested"], g["num_classes"]), str(g["test_images"]))
        else:
            cells = ("?", "?")  # training counts unknown
        table.add_row(f"{name}-shot", _format_percent(scalars[f"acc_{name}"]), *cells)
    return table


def plot_per_class_accuracy(report: Mapping[str, Any]) -> bytes:
    """PNG (matplotlib, Agg canvas) of per-class test accuracy, classes sorted by training count (descending).

    Bars: accuracy of each class, coloured by shot group; ``x`` markers: classes without test images; dotted black
    lines: group means; dashed verticals: the many/medium and medium/few boundaries; black line (right, log axis): the
    training count of each class. The x axis is the class rank by training count.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    classes = report["classes"]
    order = np.asarray(report["order_by_train_count"], dtype=np.int64)
    num_classes = int(order.shape[0])
    acc = np.array([np.nan if a is None else 100.0 * a for a in classes["acc"]], dtype=np.float64)[order]
    group = [classes["group"][c] for c in order]
    x = np.arange(num_classes)

    fig = Figure(figsize=(min(16.0, max(7.0, 4.0 + 0.12 * num_classes)), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(
        x,
        np.nan_to_num(acc, nan=0.0),
        width=1.0 if num_classes > 50 else 0.8,
        color=[_GROUP_COLORS[g] for g in group],
        linewidth=0,
    )
    untested = np.isnan(acc)
    if untested.any():
        ax.plot(x[untested], np.zeros(int(untested.sum())), "x", color="black", clip_on=False)
    ax.set_xlim(-0.5, num_classes - 0.5)
    ax.set_ylim(0.0, 100.0)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("class rank by training images (0 = most)")
    if num_classes <= 30:
        ax.set_xticks(x, [f"{r}\n{classes['name'][c]}" for r, c in zip(x, order, strict=True)], fontsize=7)

    handles = []
    groups = report["groups"]
    if classes["train_count"] is not None:
        counts = np.asarray(classes["train_count"], dtype=np.float64)[order]
        twin = ax.twinx()
        (count_line,) = twin.plot(
            x, np.where(counts > 0, counts, np.nan), color="black", linewidth=1.2, label="training images"
        )
        twin.set_yscale("log")
        twin.set_ylabel("training images (log scale)")
        start = 0
        thresholds = report["thresholds"]
        labels = {
            "many": f"many-shot (> {thresholds['many']})",
            "medium": f"medium-shot ({thresholds['few']}–{thresholds['many']})",
            "few": f"few-shot (< {thresholds['few']})",
        }
        for name in GROUPS:
            size = groups[name]["num_classes"]
            if size == 0:
                continue
            if start > 0:
                ax.axvline(start - 0.5, color="gray", linestyle="--", linewidth=1.0)
            mean = groups[name]["acc"]
            if mean is not None:
                ax.hlines(100.0 * mean, start - 0.5, start + size - 0.5, colors="black", linestyles=":", zorder=3)
            handles.append(Patch(color=_GROUP_COLORS[name], label=f"{labels[name]}: {_format_percent(mean)}%"))
            start += size
        handles.append(count_line)
    if untested.any():
        handles.append(ax.plot([], [], "x", color="black", label="no test images")[0])
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    scalars = report["scalars"]
    ax.set_title(
        f"Per-class test accuracy: top-1 {_format_percent(scalars['acc'])}%, "
        f"class-balanced {_format_percent(scalars['acc_balanced'])}%"
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def plot_reliability(report: Mapping[str, Any]) -> bytes:
    """PNG of the reliability diagram (Guo et al., ICML 2017, Fig. 1): per-bin accuracy against confidence.

    Top: bars of each bin's accuracy (empty bins left out), red outline up to the bin's mean confidence (the gap),
    the diagonal of perfect calibration; title ECE and NLL. Bottom: the number of test images per bin (log axis).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cal = report["calibration"]
    rel = cal["reliability"]
    edges = np.asarray(rel["bin_edges"], dtype=np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    acc = np.array([np.nan if a is None else a for a in rel["accuracy"]], dtype=np.float64)
    conf = np.array([np.nan if c is None else c for c in rel["confidence"]], dtype=np.float64)
    count = np.asarray(rel["count"], dtype=np.float64)
    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    filled = count > 0
    ax.bar(
        centers[filled], acc[filled], width=width, color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy"
    )
    ax.bar(
        centers[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width,
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ece, nll = cal["ece"], cal["nll"]
    ax.set_title(
        f"Reliability: ECE {_format_percent(ece)}%, NLL {'–' if nll is None else f'{nll:.3f}'} ({len(centers)} bins)"
    )
    ax_count.bar(centers, np.where(filled, count, np.nan), width=width, color="gray", edgecolor="black", linewidth=0.5)
    if filled.any():
        ax_count.set_yscale("log")
    ax_count.set_xlabel("confidence (max softmax probability)")
    ax_count.set_ylabel("test images")
    return _png(fig)


def plot_confusion_matrix(report: Mapping[str, Any]) -> bytes:
    """PNG of the row-normalised confusion matrix, rows and columns in :func:`build_report`'s
    ``order_by_train_count`` (head first): cell ``(i, j)`` is the fraction of the test images of the ``i``-th class
    predicted as the ``j``-th. Shot-group boundaries dashed; per-cell numbers only up to
    :data:`CONFUSION_TEXT_MAX_CLASSES` classes, class names as ticks up to 30.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.asarray(report["order_by_train_count"], dtype=np.int64)
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)[np.ix_(order, order)]
    rows = matrix.sum(axis=1, keepdims=True)
    normed = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    num_classes = int(order.shape[0])
    side = min(14.0, max(5.0, 3.0 + 0.1 * num_classes))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(normed, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class's test images")
    if num_classes <= CONFUSION_TEXT_MAX_CLASSES:
        for i in range(num_classes):
            for j in range(num_classes):
                if matrix[i, j] > 0:
                    value = normed[i, j]
                    color = "white" if value > 0.5 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    if num_classes <= 30:
        names = [report["classes"]["name"][c] for c in order]
        ax.set_xticks(np.arange(num_classes), names, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(num_classes), names, fontsize=7)
    start = 0
    for name in GROUPS:
        size = report["groups"].get(name, {}).get("num_classes", 0)
        if 0 < start and size > 0:
            ax.axhline(start - 0.5, color="gray", linestyle="--", linewidth=0.8)
            ax.axvline(start - 0.5, color="gray", linestyle="--", linewidth=0.8)
        start += size
    ax.set_xlabel("predicted class (by training images, head first)")
    ax.set_ylabel("true class (by training images, head first)")
    ax.set_title("Confusion matrix (row-normalised)")
    return _png(fig)


class TestReport(Callback):
    """Print a many/medium/few-shot table after testing and save a per-class accuracy plot and JSON.

    On ``on_test_end`` (global rank zero only) it reads ``pl_module.last_test_results`` (the dict of
    :meth:`~lt_lightning.metrics.LongTailAccuracy.compute`), ``pl_module.class_counts`` and the
    ``many_threshold`` / ``few_threshold`` hyper-parameters (defaults 100 / 20), then

    * prints a rich table to the console (rows overall top-1, class-balanced, many-, medium-, few-shot; columns
      accuracy in %, classes, test images);
    * writes ``<filename>.png`` (per-class accuracy against the training-count rank, group boundaries marked),
      ``reliability.png`` (:func:`plot_reliability`), ``confusion_matrix.png`` (:func:`plot_confusion_matrix`; both
      when the results carry the calibration keys of :class:`~lt_lightning.metrics.CalibrationMetric`) and
      ``<filename>.json`` (:func:`build_report`: scalars, groups, per-class accuracy and counts, ``calibration``,
      ``confusion_matrix``, ``ckpt_path``) into ``trainer.log_dir`` (``trainer.default_root_dir`` when that is
      ``None``), and logs the paths.

    A module without ``last_test_results`` (a user's own LightningModule) gets one warning and no report.
    ``trainer.log_dir`` is a collective under DDP, so every rank reads it before rank zero writes.

    Args:
        enabled: produce the report at all.
        plot: write the PNGs (the table and the JSON are written regardless).
        filename: stem of the output files (a plain file name, no directory).
    """

    __test__ = False  # the name starts with "Test": keep pytest from collecting it where it is imported

    def __init__(self, enabled: bool = True, plot: bool = True, filename: str = "per_class_accuracy") -> None:
        super().__init__()
        if not isinstance(filename, str) or filename.strip() in ("", ".", "..") or any(s in filename for s in "/\\"):
            raise ValueError(f"filename must be a plain file name without a directory, got {filename!r}")
        self.enabled = bool(enabled)
        self.plot = bool(plot)
        self.filename = filename
        self._warned = False
        self.last_paths: dict[str, str] = {}
        """Paths written by the last report (``"json"``, and ``"png"``, ``"reliability_png"``,
        ``"confusion_png"`` when plotted); empty on other ranks."""

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            rank_zero_warn(message, category=UserWarning)
            self._warned = True

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        results = getattr(pl_module, "last_test_results", None)
        if not isinstance(results, Mapping) or not results:
            what = "has no `last_test_results`" if results is None else "has empty `last_test_results`"
            self._warn_once(
                f"TestReport: {type(pl_module).__name__} {what} (expected the dict of LongTailAccuracy.compute(), "
                "as LongTailModule sets it in on_test_epoch_end); no test report is written."
            )
            return
        missing = [k for k in REQUIRED_KEYS if k not in results]
        if missing:
            self._warn_once(
                f"TestReport: {type(pl_module).__name__}.last_test_results lacks {missing}; no test report is written."
            )
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must call it
        if not trainer.is_global_zero:
            return
        hparams = getattr(pl_module, "hparams", None) or {}
        many = int(hparams.get("many_threshold", DEFAULT_MANY_THRESHOLD))
        few = int(hparams.get("few_threshold", DEFAULT_FEW_THRESHOLD))
        class_counts = getattr(pl_module, "class_counts", None)
        if class_counts is None:
            self._warn_once(f"TestReport: {type(pl_module).__name__} has no `class_counts`; shot groups are omitted.")
        class_names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        num_classes = int(results["per_class"].numel())
        if class_names is not None and len(class_names) != num_classes:
            class_names = None
        report = build_report(results, class_counts, many, few, class_names)
        report["ckpt_path"] = None if trainer.ckpt_path is None else str(trainer.ckpt_path)

        get_console().print(report_table(report))
        self.last_paths = self._write(report, str(log_dir or trainer.default_root_dir))
        rank_zero_info("TestReport: wrote " + ", ".join(self.last_paths.values()))

    def _write(self, report: dict[str, Any], directory: str) -> dict[str, str]:
        """Write the JSON (and the PNG) into ``directory`` (local or any fsspec URL, e.g. ``s3://``)."""
        fs = get_filesystem(directory)
        fs.makedirs(directory, exist_ok=True)

        def join(name: str) -> str:
            return f"{directory.rstrip('/')}/{name}" if "://" in directory else os.path.join(directory, name)

        paths = {"json": join(f"{self.filename}.json")}
        pngs: dict[str, Any] = {}
        if self.plot:
            pngs["png"] = (f"{self.filename}.png", plot_per_class_accuracy)
            if "calibration" in report:
                pngs["reliability_png"] = (RELIABILITY_FILE, plot_reliability)
                pngs["confusion_png"] = (CONFUSION_FILE, plot_confusion_matrix)
        paths.update({key: join(name) for key, (name, _) in pngs.items()})
        report["files"] = {
            "json": paths["json"],
            "png": paths.get("png"),
            "reliability_png": paths.get("reliability_png"),
            "confusion_png": paths.get("confusion_png"),
        }
        for key, (_, plot) in pngs.items():
            png = plot(report)
            with fs.open(paths[key], "wb") as f:
                f.write(png)
        with fs.open(paths["json"], "w") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        return paths

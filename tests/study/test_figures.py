"""Fig. 4 (one marker per method, shaped by family) and the per-class plot are written as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection

from lt_lightning.study.figures import FAMILY_STYLE, plot_per_class, plot_relative_accuracy

POINTS = [
    {"name": "ce", "family": "baseline", "acc": 0.45, "ra": 0.79},
    {"name": "focal", "family": "re-balancing", "acc": 0.46, "ra": 0.80},
    {"name": "mixup", "family": "augmentation", "acc": 0.47, "ra": 0.81},
    {"name": "ride", "family": "module", "acc": 0.55, "ra": 0.92},
    {"name": "bs", "family": "re-balancing", "acc": 0.51, "ra": 0.89},
]


def test_fig4_has_one_marker_per_method(tmp_path: Path) -> None:
    path = tmp_path / "fig4.png"
    fig = plot_relative_accuracy(POINTS, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    markers = {c.get_gid(): c for c in fig.axes[0].collections if isinstance(c, PathCollection)}
    assert sorted(markers) == sorted(p["name"] for p in POINTS)
    for point in POINTS:
        collection = markers[point["name"]]
        assert len(collection.get_offsets()) == 1
        assert tuple(collection.get_offsets()[0]) == pytest.approx((100 * point["acc"], 100 * point["ra"]))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [s[2] for s in FAMILY_STYLE.values()]


def test_fig4_marker_shapes_follow_the_family() -> None:
    fig = plot_relative_accuracy(POINTS)
    paths = {c.get_gid(): c.get_paths()[0].vertices.round(3).tobytes() for c in fig.axes[0].collections}
    assert paths["focal"] == paths["bs"]  # same family, same marker
    assert len({paths["ce"], paths["focal"], paths["mixup"], paths["ride"]}) == 4


def test_per_class_plot(tmp_path: Path) -> None:
    path = tmp_path / "per_class.png"
    fig = plot_per_class(
        {"ce": ("baseline", [1.0, 0.5, None]), "bs": ("re-balancing", [0.9, 0.7, 0.6])},
        train_counts=[5, 50, 20],
        class_names=["a", "b", "c"],
        path=path,
    )
    assert path.stat().st_size > 5000
    ce = fig.axes[0].get_lines()[0]
    y = ce.get_ydata()  # classes sorted by training count: b (50), c (20, no test image), a (5)
    assert y[0] == 50.0 and math.isnan(y[1]) and y[2] == 100.0
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["b", "c", "a"]
    with pytest.raises(ValueError, match="2 per-class accuracies for 3 classes"):
        plot_per_class({"x": ("module", [0.1, 0.2])}, [1, 2, 3])
